"""Masks as edits take them: one connected piece, SAM's "everything" refused."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: A mask covering more than this share of the image is SAM answering "everything"
#: (a click on background): it adds nothing.
MAX_FRACTION = 0.5


def component_at(mask: np.ndarray, y: int, x: int) -> np.ndarray:
    """The connected part of ``mask`` that holds (``y``, ``x``): an added object is one
    piece (SAM's stray islands elsewhere are not part of what was clicked)."""
    parts, _ = ndimage.label(mask)
    return parts == parts[y, x]


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


__all__ = ["MAX_FRACTION", "box_of", "component_at"]
