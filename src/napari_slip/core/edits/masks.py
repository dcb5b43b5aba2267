"""Masks as edits take them: one connected piece, SAM's "everything" refused."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import NothingToDo

#: A mask covering more than this share of the image is SAM answering "everything"
#: (a click on background): it adds nothing.
MAX_FRACTION = 0.5


def checked(mask: np.ndarray, where: str = "here") -> np.ndarray:
    """SAM's mask as an edit takes it (a copy): refused when empty or most of the image
    (:class:`~..errors.NothingToDo`, one line why; ``where`` names the prompt)."""
    share = float(mask.mean())
    if not mask.any():
        raise NothingToDo(f"SAM found no object {where}: nothing was added.")
    if share > MAX_FRACTION:
        raise NothingToDo(
            f"SAM's mask {where} covers {share:.0%} of the image (background?): nothing "
            "was added. Click (or draw a box) inside an object."
        )
    return mask.copy()


def component_at(mask: np.ndarray, y: int, x: int) -> np.ndarray:
    """The connected part of ``mask`` that holds (``y``, ``x``): an added object is one
    piece (SAM's stray islands elsewhere are not part of what was clicked)."""
    parts, _ = ndimage.label(mask)
    return parts == parts[y, x]


def innermost(mask: np.ndarray) -> tuple[float, float, bool]:
    """The mask's pixel farthest from its edge, as a positive point (pixel centre)."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(y) + 0.5, float(x) + 0.5, True


def split_between(mask: np.ndarray, first: tuple[int, int], second: tuple[int, int]):
    """The part of ``mask`` on ``second``'s side of its narrowest part between the two
    pixels: the mask is eroded until the two fall apart (the neck breaks first), and
    every pixel goes to the nearer of the two pieces (without a neck: the nearer
    point)."""
    ys, xs = np.nonzero(mask)
    y0, x0 = max(ys.min() - 1, 0), max(xs.min() - 1, 0)
    crop = mask[y0 : ys.max() + 2, x0 : xs.max() + 2]
    a, b = (first[0] - y0, first[1] - x0), (second[0] - y0, second[1] - x0)
    piece_a = np.zeros_like(crop)
    piece_a[a] = True
    piece_b = np.zeros_like(crop)
    piece_b[b] = True
    eroded = crop
    while True:
        eroded = ndimage.binary_erosion(eroded)
        if not (eroded[a] and eroded[b]):
            break  # no neck between them: split by distance to the points
        parts, _ = ndimage.label(eroded)
        if parts[a] != parts[b]:
            piece_a, piece_b = parts == parts[a], parts == parts[b]
            break
    nearer_b = ndimage.distance_transform_edt(~piece_b) < ndimage.distance_transform_edt(~piece_a)
    out = np.zeros_like(mask)
    out[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop & nearer_b
    return out


__all__ = ["MAX_FRACTION", "checked", "component_at", "innermost", "split_between"]
