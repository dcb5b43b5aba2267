"""CLIP embeddings of crops and prompts, and their similarities."""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from ..errors import InputError
from ..models.clip import ClipModel
from ..params import CropParams
from ..params_base import check_templates
from ..runtime.progress import Progress
from .crops import make_crops
from .proposals import Proposals

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of {}.",)


def embed_proposals(
    clip: ClipModel,
    image,
    proposals: Proposals,
    crop_params: CropParams | None = None,
    batch_size: int = 32,
) -> Generator[Progress, None, np.ndarray]:
    """L2-normalised CLIP embeddings (N, D) of every proposal's crop, in batches.

    ``image`` is the (H, W, 3) uint8 image or a lazy one (only crop windows are read).
    """
    n = len(proposals)
    out = np.zeros((n, clip.embed_dim), dtype=np.float32)
    n_batches = -(-n // batch_size)
    yield Progress("scoring", 0, n_batches, f"CLIP on {n} crops", heavy=True)
    for b in range(n_batches):
        idx = range(b * batch_size, min(n, (b + 1) * batch_size))
        crops = make_crops(image, proposals, crop_params or CropParams(), idx)
        out[idx.start : idx.stop] = clip.encode_images(crops)
        yield Progress("scoring", b + 1, n_batches, f"CLIP on {n} crops")
    return out


def embed_phrase(clip: ClipModel, phrase: str, templates: Sequence[str]) -> np.ndarray:
    """One phrase's embedding: the renormalised mean over templates (prompt ensembling)."""
    phrase = phrase.strip()
    if not phrase:
        raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
    feats = clip.encode_texts([t.format(phrase) for t in check_templates(templates)])
    mean = feats.mean(0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


def cosine(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """(N, T) cosine similarities of normalised embeddings."""
    return image_embeddings @ np.asarray(text_embeddings).T
