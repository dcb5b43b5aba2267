"""Proposal -> the image CLIP sees.

The crop is the proposal's bounding box (optionally grown by a context margin), with
every pixel outside the mask replaced by a fill colour, padded to a square. A plain
box crop lets neighbouring objects leak into what CLIP scores; that is the failure
this module exists to avoid (``fill="none"`` keeps it available on purpose).
"""

from __future__ import annotations

import numpy as np

from ..params import CropParams
from .proposals import Proposals

_NAMED_FILLS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}


#: Windows of a lazy image longer than this are read every n-th pixel (CLIP sees 224 px anyway), so
#: a huge merged object of a tiled image never pulls the whole image into memory.
MAX_WINDOW = 1024


def _mean_rgb(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image.reshape(-1, 3).mean(0).round().astype(np.uint8)
    return np.asarray(image.mean_rgb, dtype=np.uint8)


def fill_colour(image, fill) -> np.ndarray | None:
    """The RGB fill for ``fill`` on this image (None for ``"none"``).

    ``image`` is an (H, W, 3) array or an image with ``read`` and ``mean_rgb`` (see
    :class:`~.images.LazyImage`).
    """
    if fill == "none":
        return None
    if fill == "mean":
        return _mean_rgb(image)
    if isinstance(fill, str):
        return np.array(_NAMED_FILLS[fill], dtype=np.uint8)
    return np.array(fill, dtype=np.uint8)


def make_crop(
    image, box, mask: np.ndarray, params: CropParams, colour: np.ndarray | None, mean=None
) -> np.ndarray:
    """One square uint8 crop: box plus margin, outside-mask pixels filled, padded.

    ``image`` is an (H, W, 3) array or anything with ``shape`` (H, W) and
    ``read(y0, x0, y1, x1, step)``; only the crop's window is read.
    """
    h, w = image.shape[:2]
    y0, x0, y1, x1 = (int(v) for v in box)
    pad = round(params.margin * max(y1 - y0, x1 - x0))
    wy0, wx0, wy1, wx1 = max(0, y0 - pad), max(0, x0 - pad), min(h, y1 + pad), min(w, x1 + pad)
    if isinstance(image, np.ndarray):
        step = 1
        window = image[wy0:wy1, wx0:wx1].copy()
    else:
        step = max(1, -(-max(wy1 - wy0, wx1 - wx0) // MAX_WINDOW))
        window = np.array(image.read(wy0, wx0, wy1, wx1, step))
    if colour is not None:
        inside = np.zeros((wy1 - wy0, wx1 - wx0), dtype=bool)
        inside[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = mask
        window[~inside[::step, ::step]] = colour
    # Pad to a square centred on the window, so CLIP's resize does not distort shape.
    side = max(window.shape[:2])
    background = colour if colour is not None else mean
    if background is None:
        background = _mean_rgb(image)
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = background
    oy, ox = (side - window.shape[0]) // 2, (side - window.shape[1]) // 2
    square[oy : oy + window.shape[0], ox : ox + window.shape[1]] = window
    return square


def make_crops(
    image, proposals: Proposals, params: CropParams | None = None, indices=None
) -> list[np.ndarray]:
    """Crops for all proposals (or those at ``indices``) of an array or a lazy image."""
    params = params or CropParams()
    colour = fill_colour(image, params.fill)
    mean = _mean_rgb(image) if colour is None else None
    idx = range(len(proposals)) if indices is None else indices
    return [
        make_crop(image, proposals.boxes[i], proposals.masks[i], params, colour, mean) for i in idx
    ]
