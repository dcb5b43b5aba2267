"""An object clicked on one plane of a linked stack, carried to the planes it
continues into (SAM on each plane's own embedding)."""

from __future__ import annotations

import numpy as np

from ..pipeline.plane import PlaneHandle
from .masks import MAX_FRACTION, component_at, innermost

#: A plane's mask continues the object when it overlaps the previous plane's this much
#: (IoU) and its area is within this factor of it.
CONTINUES_IOU, CONTINUES_AREA = 0.3, 3.0


def carry(
    labels: np.ndarray,
    handles: dict[tuple[int, ...], PlaneHandle],
    plane: tuple[int, ...],
    mask: np.ndarray,
) -> dict[tuple[int, ...], np.ndarray]:
    """The object of ``mask`` (on ``plane`` of a linked stack's ``labels``) on
    the planes it continues into, up and down the first axis: on each next plane SAM
    decodes the innermost pixel of the previous plane's mask, on that plane's own
    embedding; the object ends where the answer is empty, on another object, or no
    longer like the previous section (:data:`CONTINUES_IOU`, :data:`CONTINUES_AREA`).
    Only background pixels are taken."""
    (z0, *rest), out = plane, {}
    for step in (-1, 1):
        previous, z = mask, z0 + step
        while (z, *rest) in handles:
            here = (z, *rest)
            py, px, _ = innermost(previous)
            y, x = int(py), int(px)
            view = labels[here]
            if view[y, x]:
                break  # another object continues here
            found = handles[here].decode([(y + 0.5, x + 0.5)], [True]).mask
            found &= view == 0
            if not found[y, x] or found.mean() > MAX_FRACTION:
                break
            found = component_at(found, y, x)
            inter = np.logical_and(found, previous).sum()
            iou = inter / max(1, np.logical_or(found, previous).sum())
            ratio = found.sum() / max(1, previous.sum())
            if iou < CONTINUES_IOU or not 1 / CONTINUES_AREA <= ratio <= CONTINUES_AREA:
                break
            out[here] = found
            previous, z = found, z + step
    return out


__all__ = ["CONTINUES_AREA", "CONTINUES_IOU", "carry"]
