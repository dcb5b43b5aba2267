"""A small decoder trained on the synthetic domain, for tests, docs and benchmarks.

A tiny random CLIP (its image tower sees 64 px views as an 8 x 8 patch grid) is frozen
and a decoder learns to read it on the synthetic dataset (coloured, textured shapes of
six classes, :mod:`napari_slip.core.training.synthetic`). Random CLIP activations still
carry colour and texture, so the decoder can learn the classes; the untrained relevance
map of the same CLIP cannot know them. Everything is built in seconds on a CPU.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from .tiny import TINY_CLIP, write_tiny_clip

#: The tiny CLIP the fixture decoder reads: 64 px input, 8 px patches, two blocks.
DECODER_CLIP: dict = copy.deepcopy(TINY_CLIP)
DECODER_CLIP["vision_cfg"].update(image_size=64, patch_size=8, layers=2)


@dataclass
class DecoderFixture:
    """Files of a trained fixture decoder."""

    clip: Path
    decoder: Path
    data: Path


def write_decoder_fixture(
    folder: str | os.PathLike, n_images: int = 16, epochs: int = 12, seed: int = 0
) -> DecoderFixture:
    """Write a tiny CLIP, a synthetic dataset and a decoder trained on them."""
    from ..core.params import DecoderParams
    from ..core.training.decoder import train_decoder
    from ..core.training.synthetic import make_synthetic_dataset

    folder = Path(folder)
    clip = write_tiny_clip(folder / "decoder_clip.safetensors", seed=seed, config=DECODER_CLIP)
    data = make_synthetic_dataset(folder / "data", n_images=n_images, size=128, seed=seed + 1)
    params = DecoderParams(epochs=epochs, dim=32, seed=seed)
    decoder = train_decoder(data, str(clip), folder / "decoder.safetensors", params)
    return DecoderFixture(clip, decoder, data)


__all__ = ["DECODER_CLIP", "DecoderFixture", "write_decoder_fixture"]
