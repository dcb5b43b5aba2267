"""Where in the image the prompt matches: a per-pixel relevance map from CLIP, untrained.

CLIP's pooled embedding says *whether* a crop matches the text, not *where*. Its patch
tokens can, with a training-free change to the last transformer block
(:func:`last_block`): its residual and feed-forward are dropped and its attention is
replaced, then each patch token goes through CLIP's final norm and projection into the
joint space, where its cosine to the prompt's text embedding is that patch's relevance.
Four such changes are offered (:data:`MAPS`): MaskCLIP's value path (each token on its
own), ClearCLIP's query-query attention, SCLIP's correlative attention and NACLIP's
key-key attention with a Gaussian neighbourhood prior, the default (the best published
results of the four; see docs/decoder.md). Works with any open_clip ViT, pretrained or
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
#: Windows of a trained decoder overlap by this share of their side (its maps agree
#: across windows; half as many windows as with half overlap on a big image).
DECODER_OVERLAP = 0.25


def decoder_windows(shape: tuple[int, int], window: int) -> list[tuple[int, int, int, int]]:
    """The windows a decoder reads an image of ``shape`` in (training, validation and
    segmenting alike)."""
    return tile_grid(shape, window, int(window * DECODER_OVERLAP))


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
    """(kind, tower, blocks): an open_clip ViT (``"open_clip"``) or a timm ViT inside
    open_clip (``"timm"``, BiomedCLIP's); anything else is refused."""
    visual = getattr(clip.model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "patch_embed") and hasattr(trunk, "blocks"):
        blocks = trunk.blocks
        if len(blocks) and hasattr(getattr(blocks[-1], "attn", None), "qkv"):
            return "timm", visual, blocks
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
            "ViT-B/16, ViT-L/14, BiomedCLIP and their fine-tuned checkpoints); this CLIP "
            "has none."
        )
    return "open_clip", visual, blocks


def open_clip_vision(clip: ClipModel):
    """(tower, blocks) of an open_clip ViT, the only tower trained decoders read."""
    kind, visual, blocks = _vision(clip)
    if kind != "open_clip":
        raise InputError(
            "Trained decoders read an open_clip ViT image tower (ViT-B/32, ViT-B/16, "
            "ViT-L/14); this CLIP's timm tower (BiomedCLIP's) is not supported for them: "
            "use its training-free map, or an open_clip CLIP."
        )
    return visual, blocks


def _block_parts(last):
    """(norm, qkv weight, qkv bias, heads, output projection) of a ViT block."""
    attn = last.attn
    if hasattr(attn, "in_proj_weight"):  # open_clip's nn.MultiheadAttention
        return last.ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.num_heads, attn.out_proj
    return last.norm1, attn.qkv.weight, attn.qkv.bias, attn.num_heads, attn.proj  # timm


#: The training-free maps: how CLIP's last block is changed so that patch tokens say
#: where the text matches (see :func:`last_block`).
MAPS = ("naclip", "clearclip", "sclip", "maskclip")
#: NACLIP's neighbourhood: the Gaussian prior's standard deviation, in patches.
NACLIP_SIGMA = 5.0


def gaussian_prior(g: int, sigma: float = NACLIP_SIGMA) -> torch.Tensor:
    """(g*g, g*g) NACLIP's log-prior on attention between patches of a g x g grid:
    ``-|p_i - p_j|^2 / (2 sigma^2)``, so a patch attends mostly to its neighbours."""
    yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    pos = torch.stack([yy.ravel(), xx.ravel()], dim=1).float()
    return -torch.cdist(pos, pos).pow(2) / (2 * sigma**2)


def last_block(last, x: torch.Tensor, method: str = "naclip", prefix: int = 1) -> torch.Tensor:
    """The last block's output for the patch tokens of ``x`` ((n, prefix + g*g, W),
    batch first; ``prefix`` class or register tokens first), changed as ``method``
    says; no residual and no feed-forward in any of them.

    - ``maskclip`` (Zhou et al. 2022): the value path only, each token on its own.
    - ``clearclip`` (Lan et al. 2024): attention from query-query similarity.
    - ``sclip`` (Wang et al. 2024): correlative self-attention, softmax(q q^T) +
      softmax(k k^T).
    - ``naclip`` (Hajimiri et al. 2025): attention from key-key similarity plus a
      Gaussian prior on the patch grid (:func:`gaussian_prior`): neighbours count most.

    The attention of the last three runs among the patch tokens (the class token is
    left out, as it carries no place).
    """
    if method not in MAPS:
        raise InputError(f"Unknown relevance map {method!r}; use one of {', '.join(MAPS)}.")
    norm, weight, bias, heads, out_proj = _block_parts(last)
    width = weight.shape[1]
    q, k, v = F.linear(norm(x), weight, bias).split(width, -1)
    q, k, v = q[:, prefix:], k[:, prefix:], v[:, prefix:]
    if method == "maskclip":
        return out_proj(v)
    n, t, _ = v.shape
    d = width // heads

    def split(a):
        return a.reshape(n, t, heads, d).transpose(1, 2)  # (n, heads, t, d)

    q, k, v = split(q), split(k), split(v)
    scale = d**-0.5
    if method == "clearclip":
        weights = torch.softmax(q @ q.transpose(-1, -2) * scale, dim=-1)
    elif method == "sclip":
        weights = torch.softmax(q @ q.transpose(-1, -2) * scale, dim=-1) + torch.softmax(
            k @ k.transpose(-1, -2) * scale, dim=-1
        )
    else:
        prior = gaussian_prior(math.isqrt(t)).to(k.dtype)
        weights = torch.softmax(k @ k.transpose(-1, -2) * scale + prior, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(n, t, width)
    return out_proj(out)


@torch.no_grad()
def patch_features(
    clip: ClipModel, squares: list[np.ndarray], method: str = "naclip"
) -> torch.Tensor:
    """(n, g, g, D) L2-normalised patch embeddings of square uint8 RGB images: the last
    block changed as ``method`` says (:func:`last_block`), then CLIP's final norm and
    projection."""
    kind, visual, blocks = _vision(clip)
    x = clip.preprocess(squares).to(clip.dtype)
    if kind == "timm":  # BiomedCLIP's tower: timm's embedding, final norm and head
        trunk = visual.trunk
        x = trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(x)))
        for block in blocks[:-1]:
            x = block(x)
        out = last_block(blocks[-1], x, method, prefix=int(trunk.num_prefix_tokens))
        feats = visual.head(trunk.norm(out))
        g = math.isqrt(feats.shape[1])
        return F.normalize(feats.float(), dim=-1).reshape(len(squares), g, g, -1)
    x = visual._embeds(x)  # class token + patches, positions, ln_pre: (n, 1 + g*g, W)
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in blocks[:-1]:
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)
    out = last_block(blocks[-1], x, method)
    feats = visual.ln_post(out) @ visual.proj
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


def _iter_windows(
    image, window: int, encode, batch_size: int, what: str, overlap: float = 0.5
) -> Generator[Progress, None, DenseFeatures]:
    """``encode(squares)`` of every window of ``image`` (see :func:`iter_dense_features`),
    in batches; windows overlap by ``overlap`` of their side."""
    shape = tuple(int(v) for v in image.shape[:2])
    if window < 8:
        raise InputError(f"The relevance window must be at least 8 pixels; got {window}.")
    windows = tile_grid(shape, window, int(window * overlap))
    if isinstance(image, np.ndarray):
        fill = image.reshape(-1, 3).mean(0).round().astype(np.uint8)
    else:
        fill = np.asarray(image.mean_rgb, dtype=np.uint8)
    feats = []
    n = len(windows)
    yield Progress("relevance", 0, n, f"{what} on {n} windows", heavy=True)
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
        feats.append(encode(squares))
        yield Progress("relevance", start + len(batch), n, f"{what} on {n} windows")
    return DenseFeatures(windows, torch.cat(feats), window, shape)


def iter_dense_features(
    clip: ClipModel,
    image,
    window: int | None = None,
    batch_size: int = 16,
    method: str = "naclip",
) -> Generator[Progress, None, DenseFeatures]:
    """Patch features of every window of ``image`` (an (H, W, 3) uint8 array, or an
    image with ``shape``, ``read(y0, x0, y1, x1)`` and ``mean_rgb``), in batches, with
    the training-free map ``method`` (:data:`MAPS`)."""
    window = int(window or default_window(tuple(image.shape[:2]), clip.image_size))
    return (
        yield from _iter_windows(
            image, window, lambda sq: patch_features(clip, sq, method), batch_size, "CLIP"
        )
    )


@torch.no_grad()
def tapped_features(clip: ClipModel, squares: list[np.ndarray], taps) -> torch.Tensor:
    """(n, len(taps), 1 + g*g, width) float32 token activations of CLIP's image tower
    after the blocks ``taps`` (0: the embeddings), for square uint8 RGB images."""
    visual, blocks = open_clip_vision(clip)
    x = visual._embeds(clip.preprocess(squares).to(clip.dtype))
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    out = [x] if 0 in taps else []
    for i, block in enumerate(blocks[: max(taps)], start=1):
        x = block(x)
        if i in taps:
            out.append(x)
    out = [o if batch_first else o.transpose(0, 1) for o in out]
    return torch.stack(out, dim=1).float()


def iter_decoder_features(
    clip: ClipModel, decoder, image, batch_size: int = 16
) -> Generator[Progress, None, DenseFeatures]:
    """The decoder's reduced taps (see :meth:`.TextDecoder.reduce`) of every window of
    ``image``, at the decoder's own window size. Independent of the prompt."""
    config = decoder.config

    @torch.no_grad()
    def encode(squares):
        taps = tapped_features(clip, squares, config.taps).to(_param(decoder).dtype)
        return decoder.reduce(taps.to(_param(decoder).device)).cpu()

    return (
        yield from _iter_windows(
            image, config.window, encode, batch_size, "CLIP + decoder", DECODER_OVERLAP
        )
    )


def _param(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters())


def windows_in(dense: DenseFeatures, region: tuple[int, int, int, int] | None) -> list[int]:
    """Indices of the windows that overlap ``region`` ``(y0, x0, y1, x1)`` (None: all)."""
    if region is None:
        return list(range(len(dense.windows)))
    y0, x0, y1, x1 = region
    return [
        i
        for i, (a, b, c, d) in enumerate(dense.windows)
        if max(a, y0) < min(c, y1) and max(b, x0) < min(d, x1)
    ]


def _stitch(
    dense: DenseFeatures, values: torch.Tensor, index: list[int], region=None
) -> np.ndarray:
    """(len(index), s, s) values of the windows ``index`` -> the (H, W) map, or that of
    ``region`` alone: each window's values resized to the window and averaged where
    windows overlap. A region's map equals the same part of the whole image's map."""
    h, w = dense.shape
    ry0, rx0, ry1, rx1 = region or (0, 0, h, w)
    total = np.zeros((ry1 - ry0, rx1 - rx0), dtype=np.float32)
    count = np.zeros_like(total)
    up = F.interpolate(
        values[:, None].float(),
        size=(dense.window, dense.window),
        mode="bilinear",
        align_corners=False,
    )[:, 0].numpy()
    for i, score in zip(index, up, strict=True):
        wy0, wx0, wy1, wx1 = dense.windows[i]
        y0, x0, y1, x1 = max(wy0, ry0), max(wx0, rx0), min(wy1, ry1), min(wx1, rx1)
        if y0 < y1 and x0 < x1:
            total[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] += score[
                y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0
            ]
            count[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] += 1
    return total / np.maximum(count, 1)


def relevance_map(dense: DenseFeatures, text_embedding: np.ndarray, region=None) -> np.ndarray:
    """(H, W) float32 cosine similarity of each pixel's patch to the text embedding,
    averaged over the windows that cover it; with ``region`` ``(y0, x0, y1, x1)``,
    that part only (read from the windows that overlap it)."""
    text = torch.as_tensor(np.asarray(text_embedding, dtype=np.float32))
    index = windows_in(dense, region)
    return _stitch(dense, dense.features[index] @ text, index, region)  # (n, g, g)


def relevance_range(dense: DenseFeatures, text_embedding: np.ndarray) -> tuple[float, float]:
    """The lowest and highest cosine of any patch to the text: bounds of the whole
    map (its pixels are averages of interpolated patch values), without making it."""
    text = torch.as_tensor(np.asarray(text_embedding, dtype=np.float32))
    values = dense.features @ text
    return float(values.min()), float(values.max())


@torch.no_grad()
def decoder_map(
    decoder, dense: DenseFeatures, text_embedding: np.ndarray, batch_size: int = 64, region=None
) -> np.ndarray:
    """(H, W) float32 probability that each pixel shows what the text describes: the
    decoder's logits per window, averaged where windows overlap, through a sigmoid;
    with ``region`` ``(y0, x0, y1, x1)``, that part only (the decoder runs on the
    windows that overlap it)."""
    param = _param(decoder)
    text = torch.as_tensor(np.asarray(text_embedding, dtype=np.float32))[None]
    index = windows_in(dense, region)
    feats = dense.features[index]
    logits = [
        decoder(feats[s : s + batch_size].to(param), text.to(param)).cpu()
        for s in range(0, len(index), batch_size)
    ]
    values = torch.cat(logits) if logits else feats.new_zeros((0, 1, 1))
    return torch.sigmoid(torch.from_numpy(_stitch(dense, values, index, region))).numpy()


__all__ = [
    "MAPS",
    "DenseFeatures",
    "decoder_map",
    "decoder_windows",
    "default_window",
    "gaussian_prior",
    "iter_decoder_features",
    "iter_dense_features",
    "last_block",
    "patch_features",
    "relevance_map",
    "relevance_range",
    "tapped_features",
    "windows_in",
]
