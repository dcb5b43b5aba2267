"""Where in the image the prompt matches: a per-pixel relevance map from CLIP, untrained.

CLIP's pooled embedding says *whether* a crop matches the text, not *where*. Its patch
tokens can, with the training-free trick of MaskCLIP (Zhou et al. 2022): in the last
transformer block, each patch token goes through the value path of attention only (no
query-key mixing with the other tokens, no residual, no MLP), then through CLIP's final
norm and projection into the joint space, where its cosine to the prompt's text
embedding is that patch's relevance. Works with any open_clip ViT, pretrained or
fine-tuned (our checkpoints), because nothing is learnt.

CLIP sees a fixed input size (224 px for ViT-B/32: a 7 x 7 patch grid), so the image
is read in overlapping square windows, each seen at CLIP's input size; every window's
patch scores are upsampled to the window and averaged where windows overlap. The patch
features of an image are computed once and cached: a new prompt costs one text
encoding and a matrix product.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models.clip import ClipModel
from ..runtime.progress import Progress
from .tiles import tile_grid

#: At most about this many windows along the long side by default (bounded cost).
WINDOWS_PER_SIDE = 4


@dataclass
class DenseFeatures:
    """CLIP patch features of one image, window by window.

    Attributes
    ----------
    windows
        ``(y0, x0, y1, x1)`` of each window in the image (exclusive ends).
    features
        (n_windows, g, g, D) L2-normalised patch embeddings in CLIP's joint space.
    window
        The windows' side in image pixels (edge windows may be cut by the image).
    shape
        (H, W) of the image.
    """

    windows: list[tuple[int, int, int, int]]
    features: torch.Tensor
    window: int
    shape: tuple[int, int]


def _vision(clip: ClipModel):
    visual = getattr(clip.model, "visual", None)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if (
        visual is None
        or blocks is None
        or getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "proj", None) is None
        or not hasattr(blocks[-1], "attn")
        or not hasattr(blocks[-1].attn, "in_proj_weight")
    ):
        raise InputError(
            "Relevance maps need a CLIP with a ViT image tower (open_clip ViT-B/32, "
            "ViT-B/16, ViT-L/14 and their fine-tuned checkpoints); this CLIP has none."
        )
    return visual, blocks


@torch.no_grad()
def patch_features(clip: ClipModel, squares: list[np.ndarray]) -> torch.Tensor:
    """(n, g, g, D) L2-normalised patch embeddings of square uint8 RGB images (MaskCLIP:
    the last block's value path, then CLIP's final norm and projection)."""
    visual, blocks = _vision(clip)
    x = clip.preprocess(squares).to(clip.dtype)
    x = visual._embeds(x)  # class token + patches, positions, ln_pre: (n, 1 + g*g, W)
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in blocks[:-1]:
        x = block(x)
    last = blocks[-1]
    width = last.attn.in_proj_weight.shape[1]
    bias = last.attn.in_proj_bias
    value = F.linear(
        last.ln_1(x),
        last.attn.in_proj_weight[2 * width :],
        None if bias is None else bias[2 * width :],
    )
    out = last.attn.out_proj(value)
    if not batch_first:
        out = out.transpose(0, 1)
    feats = visual.ln_post(out[:, 1:]) @ visual.proj
    g = math.isqrt(feats.shape[1])
    return F.normalize(feats.float(), dim=-1).reshape(len(squares), g, g, -1)


def default_window(shape: tuple[int, int], clip_size: int) -> int:
    """Windows of CLIP's input size, larger for big images (at most about
    :data:`WINDOWS_PER_SIDE` along the long side, so the cost stays bounded)."""
    return max(clip_size, math.ceil(max(shape) / WINDOWS_PER_SIDE))


def _square(region: np.ndarray, side: int, fill: np.ndarray) -> np.ndarray:
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = fill
    out[: region.shape[0], : region.shape[1]] = region
    return out


def iter_dense_features(
    clip: ClipModel,
    image,
    window: int | None = None,
    batch_size: int = 16,
) -> Generator[Progress, None, DenseFeatures]:
    """Patch features of every window of ``image`` (an (H, W, 3) uint8 array, or an
    image with ``shape``, ``read(y0, x0, y1, x1)`` and ``mean_rgb``), in batches."""
    shape = tuple(int(v) for v in image.shape[:2])
    window = int(window or default_window(shape, clip.image_size))
    if window < 8:
        raise InputError(f"The relevance window must be at least 8 pixels; got {window}.")
    windows = tile_grid(shape, window, window // 2)
    if isinstance(image, np.ndarray):
        fill = image.reshape(-1, 3).mean(0).round().astype(np.uint8)
    else:
        fill = np.asarray(image.mean_rgb, dtype=np.uint8)
    feats = []
    n = len(windows)
    yield Progress("relevance", 0, n, f"CLIP on {n} windows", heavy=True)
    for start in range(0, n, batch_size):
        batch = windows[start : start + batch_size]
        squares = []
        for y0, x0, y1, x1 in batch:
            region = (
                image[y0:y1, x0:x1]
                if isinstance(image, np.ndarray)
                else image.read(y0, x0, y1, x1)
            )
            squares.append(_square(np.asarray(region), window, fill))
        feats.append(patch_features(clip, squares))
        yield Progress("relevance", start + len(batch), n, f"CLIP on {n} windows")
    return DenseFeatures(windows, torch.cat(feats), window, shape)


def relevance_map(dense: DenseFeatures, text_embedding: np.ndarray) -> np.ndarray:
    """(H, W) float32 cosine similarity of each pixel's patch to the text embedding,
    averaged over the windows that cover it."""
    text = torch.as_tensor(np.asarray(text_embedding, dtype=np.float32))
    scores = dense.features @ text  # (n, g, g)
    h, w = dense.shape
    total = np.zeros((h, w), dtype=np.float32)
    count = np.zeros((h, w), dtype=np.float32)
    up = F.interpolate(
        scores[:, None], size=(dense.window, dense.window), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    for (y0, x0, y1, x1), score in zip(dense.windows, up, strict=True):
        total[y0:y1, x0:x1] += score[: y1 - y0, : x1 - x0]
        count[y0:y1, x0:x1] += 1
    return total / np.maximum(count, 1)


__all__ = [
    "DenseFeatures",
    "default_window",
    "iter_dense_features",
    "patch_features",
    "relevance_map",
]
