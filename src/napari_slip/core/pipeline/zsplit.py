"""Objects stacked along Z kept apart: a chain of parts linked plane to plane is cut
where one object ends and the next begins.

Overlap linking joins the bottom cap of one nucleus to the top cap of the nucleus
below it whenever they overlap enough (in dense tissue, often). Along a chain, one
object's sections give a profile that rises and falls once; two stacked objects give
two humps. The profile used is each section's *signal*: its area times its mean
intensity above the plane's background level (its integrated brightness), so that both a
neck (the sections shrink to caps and grow again) and a dim gap (the contact between
two nuclei, dimmer once blurred) make a valley; without an image, the area alone. A
chain is cut at its deepest valley when the valley is below ``ratio`` of the lower of
the two humps, between the valley's section and its weaker neighbour (the two caps
that meet), and each piece is examined again. An elongated object (one hump) stays
whole, however long.

Pure functions over part ids and their per-part values; see docs/stacks.md for the
measurements that chose the rule and its ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..params import SPLIT_VALLEY


def part_signal(
    parts: np.ndarray,
    planes: Sequence[tuple[int, ...]],
    n_parts: int,
    intensity: Callable[[tuple[int, ...]], np.ndarray | None] | None = None,
) -> np.ndarray:
    """Each part's signal (index 0 unused): its area times its mean intensity above its
    plane's background (the median where no part lies; 0 where parts fill the
    plane), from ``intensity(plane)`` (a 2D array, or None); the area where there is
    no intensity."""
    signal = np.zeros(n_parts, dtype=np.float64)
    for plane in planes:
        ids = np.asarray(parts[plane])
        present = ids > 0
        if not present.any():
            continue
        values = None if intensity is None else intensity(plane)
        if values is None:
            signal += np.bincount(ids[present], minlength=n_parts)[:n_parts]
            continue
        values = np.asarray(values, dtype=np.float64)
        outside = ~present  # the plane's background level: where no part lies
        level = float(np.median(values[outside])) if outside.mean() >= 0.01 else 0.0
        above = np.maximum(values - level, 0.0)
        signal += np.bincount(ids[present], weights=above[present], minlength=n_parts)[:n_parts]
    return signal


def split_stacked(
    object_of_part: np.ndarray,
    depth_of_part: np.ndarray,
    signal: np.ndarray,
    ratio: float = SPLIT_VALLEY,
) -> np.ndarray:
    """Objects (per part; index 0 unused) with every chain cut at its valleys (see
    the module). ``depth_of_part``: each part's position along Z; parts of one object
    at one depth (not produced by one-to-one linking) are summed."""
    out = np.array(object_of_part, dtype=np.int64, copy=True)
    if len(out) <= 1:
        return out
    next_object = int(out[1:].max(initial=-1)) + 1
    order = np.argsort(out[1:], kind="stable") + 1
    bounds = np.flatnonzero(np.diff(out[order])) + 1
    for members in np.split(order, bounds):
        depths = np.unique(depth_of_part[members])
        if len(depths) < 3:
            continue
        where = np.searchsorted(depths, depth_of_part[members])
        profile = np.bincount(where, weights=signal[members], minlength=len(depths))
        for piece in _cuts(profile, ratio)[1:]:  # the first piece keeps the id
            out[members[(where >= piece[0]) & (where < piece[1])]] = next_object
            next_object += 1
    return out


def _cuts(profile: np.ndarray, ratio: float) -> list[tuple[int, int]]:
    """The pieces ``[start, end)`` of a profile cut at its valleys, in order."""
    pieces, todo = [], [(0, len(profile))]
    while todo:
        start, end = todo.pop()
        cut = _valley_cut(profile[start:end], ratio)
        if cut is None:
            pieces.append((start, end))
        else:
            todo += [(start, start + cut), (start + cut, end)]
    return sorted(pieces)


def _valley_cut(profile: np.ndarray, ratio: float) -> int | None:
    """Where to cut ``profile`` (the first index of the second piece), or None: the
    deepest valley with a hump on each side, if below ``ratio`` of the lower hump."""
    n = len(profile)
    if n < 3:
        return None
    left = np.maximum.accumulate(profile)
    right = np.maximum.accumulate(profile[::-1])[::-1]
    k = np.arange(1, n - 1)
    humps = np.minimum(left[k - 1], right[k + 1])
    depth = np.where(humps > 0, profile[k] / np.maximum(humps, 1e-12), 1.0)
    best = int(np.argmin(depth))
    if depth[best] >= ratio:
        return None
    valley = int(k[best])
    # The two caps that meet: the valley's section and its weaker neighbour.
    return valley if profile[valley - 1] < profile[valley + 1] else valley + 1


__all__ = ["part_signal", "split_stacked"]
