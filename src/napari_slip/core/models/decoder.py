"""A text-conditioned mask decoder on a frozen CLIP (seed 003; CLIPSeg's design).

CLIP's image tower is frozen; its token activations are tapped after a few of its
transformer blocks. The decoder, small and trained by the user on their own labels,
turns them into a mask of what a text describes:

1. each tapped activation is reduced to ``dim`` channels (a linear layer per tap);
2. starting from the deepest tap, the text embedding modulates the tokens by FiLM
   (a per-channel scale and shift computed from the text), then one transformer block
   per tap runs, adding the next shallower tap's reduced activation before each;
3. the patch tokens, laid out as their grid, are upsampled by a convolution and a
   transposed convolution into mask logits at ``upsample`` times the patch grid.

A checkpoint is a safetensors file whose metadata holds the config and the sha256 of
the CLIP it was trained on; loading it beside another CLIP is refused, because the
decoder only understands the activations of that one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError

#: The metadata key holding a decoder checkpoint's config (JSON).
DECODER_KEY = "napari_slip_decoder"


@dataclass(frozen=True)
class DecoderConfig:
    """The shape of a decoder and of the CLIP it reads.

    Attributes
    ----------
    taps
        CLIP image blocks after which activations are read (0: the patch embeddings).
    width
        Width of CLIP's image transformer.
    embed_dim
        Dimension of CLIP's joint (text) embedding.
    grid
        Patch grid side of CLIP's input.
    clip_size
        CLIP's input side in pixels.
    window
        Side, in image pixels, of the square views the decoder was trained on; images
        are read at this scale when segmenting, so objects keep the size it learnt.
    dim
        Width of the decoder.
    heads
        Attention heads of its transformer blocks.
    upsample
        Output resolution, in cells per patch along each side.
    """

    taps: tuple[int, ...]
    width: int
    embed_dim: int
    grid: int
    clip_size: int
    window: int
    dim: int = 64
    heads: int = 4
    upsample: int = 4

    def __post_init__(self) -> None:
        taps = self.taps
        if isinstance(taps, (str, bytes)) or not isinstance(taps, (list, tuple)):
            raise InputError(f"taps must be a list of block indices; got {taps!r}.")
        if not taps or len(taps) > 16 or not all(_whole(t, 0, 256) for t in taps):
            raise InputError(f"taps must be 1 to 16 block indices from 0 to 256; got {taps!r}.")
        object.__setattr__(self, "taps", tuple(int(t) for t in taps))
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if not _whole(value, low, high):
                raise InputError(
                    f"{name} must be a whole number from {low} to {high}; got {value!r}."
                )
        if self.dim % self.heads:
            raise InputError(f"dim ({self.dim}) must be a multiple of heads ({self.heads}).")
        if self.window < 8:
            raise InputError(f"The decoder's window must be at least 8 pixels; got {self.window}.")

    @property
    def out_size(self) -> int:
        """Side of the decoder's output grid for one view."""
        return self.grid * self.upsample


#: What a decoder config may say, field by field (checked before anything is built: a
#: width of 10**9 would ask for a 32 GB layer).
_RANGES = {
    "width": (8, 8192),
    "embed_dim": (8, 8192),
    "grid": (1, 256),
    "clip_size": (8, 4096),
    "window": (8, 4096),
    "dim": (8, 1024),
    "heads": (1, 64),
    "upsample": (1, 16),
}


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def default_taps(depth: int) -> tuple[int, ...]:
    """Up to three evenly spaced taps of a ``depth``-block tower (3, 6, 9 of 12, as
    CLIPSeg; for a 1-block tower, its embeddings and its block)."""
    return tuple(sorted({round(depth * k / 4 + 0.01) for k in (1, 2, 3)}))


class TextDecoder(nn.Module):
    """The decoder (see the module docstring)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.reduces = nn.ModuleList(nn.Linear(config.width, d) for _ in config.taps)
        self.film_mul = nn.Linear(config.embed_dim, d)
        self.film_add = nn.Linear(config.embed_dim, d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, config.heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True
            )
            for _ in config.taps
        )
        self.head = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(d, d // 2, config.upsample, stride=config.upsample),
            nn.ReLU(),
            nn.Conv2d(d // 2, 1, 1),
        )

    def reduce(self, taps: torch.Tensor) -> torch.Tensor:
        """(n, T, tokens, width) tapped activations -> (n, T, tokens, dim).

        Does not depend on the text: done once per image, cached for every prompt.
        """
        return torch.stack([r(taps[:, i]) for i, r in enumerate(self.reduces)], dim=1)

    def forward(self, reduced: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(n, out, out)`` from reduced taps and ``(n or 1, embed_dim)``
        text embeddings."""
        n = reduced.shape[0]
        text = text.to(reduced.dtype).expand(n, -1)
        a = None
        for i in reversed(range(len(self.blocks))):
            a = reduced[:, i] if a is None else a + reduced[:, i]
            if i == len(self.blocks) - 1:
                a = self.film_mul(text)[:, None] * a + self.film_add(text)[:, None]
            a = self.blocks[i](a)
        g = self.config.grid
        patches = a[:, 1:].transpose(1, 2).reshape(n, -1, g, g)  # class token dropped
        return self.head(patches)[:, 0]


@dataclass
class LoadedDecoder:
    """A decoder read from its file, with what it was trained on."""

    model: TextDecoder
    path: Path
    sha256: str
    metadata: dict

    @property
    def config(self) -> DecoderConfig:
        return self.model.config

    @property
    def clip_sha256(self) -> str:
        return str(self.metadata.get("clip_sha256", ""))

    @property
    def class_names(self) -> list[str]:
        return _names(self.metadata)

    def check_clip(self, clip_sha256: str, clip_spec: str = "") -> None:
        """Refuse a CLIP other than the one this decoder was trained on."""
        if self.clip_sha256 and clip_sha256 != self.clip_sha256:
            trained = self.metadata.get("clip_spec") or "another CLIP"
            raise InputError(
                f"The decoder {self.path.name} was trained on {trained} (sha256 "
                f"{self.clip_sha256[:12]}...), but the CLIP in use is "
                f"{clip_spec or 'a different one'} (sha256 {clip_sha256[:12]}...). Choose "
                "the CLIP it was trained on, or train a decoder for this CLIP."
            )

    def check_fits(self, clip) -> None:
        """Refuse a CLIP whose shapes this decoder cannot read (its width, depth or
        joint embedding), also when the file records no CLIP hash to compare."""
        config = self.config
        visual = clip.model.visual.transformer
        depth, width = len(visual.resblocks), int(visual.width)
        problems = []
        if config.width != width:
            problems.append(f"reads a CLIP of width {config.width}, this one has {width}")
        if max(config.taps) > depth:
            problems.append(f"taps block {max(config.taps)}, this CLIP has {depth}")
        if config.embed_dim != clip.embed_dim:
            problems.append(
                f"embeds text in {config.embed_dim} dimensions, this CLIP in {clip.embed_dim}"
            )
        if problems:
            raise InputError(
                f"The decoder {self.path.name} does not fit this CLIP: {'; '.join(problems)}. "
                "Choose the CLIP it was trained on."
            )

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "clip_spec": self.metadata.get("clip_spec"),
            "clip_sha256": self.clip_sha256,
            "class_names": self.class_names,
            "loss": (self.metadata.get("training") or {}).get("loss"),
        }


def save_decoder(model: TextDecoder, path: str | os.PathLike, metadata: dict) -> Path:
    """Write a decoder as safetensors with its config and ``metadata`` (values stored as
    JSON); atomically."""
    from safetensors.torch import save_file

    from ..io import Outputs

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"The decoder file must end in .safetensors; got {path.name!r}.")
    meta = {DECODER_KEY: json.dumps(asdict(model.config))}
    for key, value in metadata.items():
        meta[key] = json.dumps(value)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    Outputs({"decoder": path}, overwrite=True).write(
        {"decoder": lambda tmp: save_file(state, str(tmp), metadata=meta)}
    )
    return path


def is_decoder_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file holding a decoder (not a CLIP)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        read_decoder_metadata(path)
    except CheckpointError:
        return False
    return True


def read_decoder_metadata(path: str | os.PathLike) -> dict:
    """A decoder file's metadata (JSON values decoded), without loading its weights.

    Raises
    ------
    CheckpointError
        If the file is not a readable decoder.
    """
    from .clip import read_safetensors_metadata

    meta = read_safetensors_metadata(path)
    if DECODER_KEY not in meta:
        raise CheckpointError(
            f"{path} is not a napari-slip decoder (no '{DECODER_KEY}' metadata); train one "
            "with `napari-slip train-decoder`."
        )
    return meta


def _names(meta: dict) -> list[str]:
    names = meta.get("class_names")
    return [str(n) for n in names] if isinstance(names, list) else []


def _val_iou(meta: dict) -> float | None:
    metrics = meta.get("metrics")
    val = metrics.get("val") if isinstance(metrics, dict) else None
    iou = val.get("mean_iou") if isinstance(val, dict) else None
    return float(iou) if isinstance(iou, (int, float)) and not isinstance(iou, bool) else None


def describe_decoder(meta: dict) -> str:
    """One line about what a decoder learnt (metadata of the wrong types is left out)."""
    parts = []
    if isinstance(meta.get("clip_spec"), str) and meta["clip_spec"]:
        parts.append(f"reads CLIP {Path(meta['clip_spec']).name}")
    names = _names(meta)
    if names:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        parts.append(f"classes: {shown}")
    iou = _val_iou(meta)
    if iou is not None:
        parts.append(f"validation IoU {iou:.2f}")
    return "; ".join(parts) or "a trained decoder"


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedDecoder:
    """Read a decoder file (see :func:`save_decoder`).

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, not a decoder, or its weights do not fit
        its config.
    """
    from safetensors.torch import load_file

    from .clip import _load_state
    from .download import file_sha256

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"No decoder file at {path}.")
    meta = read_decoder_metadata(path)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({type(exc).__name__})."
        ) from None
    fields = meta.pop(DECODER_KEY)
    try:
        if not isinstance(fields, dict):
            raise InputError(f"it is {type(fields).__name__}, not a mapping")
        config = DecoderConfig(**fields)
    except (TypeError, ValueError, InputError) as exc:
        raise CheckpointError(f"{path}: its decoder config is not valid ({exc}).") from None
    model = TextDecoder(config)
    _load_state(model, state, path, "decoder config")
    model.requires_grad_(False)
    return LoadedDecoder(model.to(device).eval(), path, file_sha256(path), meta)


__all__ = [
    "DECODER_KEY",
    "DecoderConfig",
    "LoadedDecoder",
    "TextDecoder",
    "default_taps",
    "describe_decoder",
    "is_decoder_file",
    "load_decoder",
    "read_decoder_metadata",
    "save_decoder",
]
