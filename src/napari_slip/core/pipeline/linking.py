"""Which objects of neighbouring planes (or frames) are the same object.

Linking by overlap: two objects in consecutive planes are candidates for being one
object when their overlap covers at least ``min_overlap`` of the smaller of the two
(so the small cap of a nucleus links to the larger section below it); among the
candidates, a one-to-one assignment maximising the intersection over union decides
(Hungarian algorithm), so where one object splits in two or two merge into one, the
better-overlapping one continues the object and the other is its own object. An object
missed in up to ``max_gap`` planes is linked across the gap to the next plane where it
is found again.

Pure functions over label arrays: tested on controlled label stacks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The share of the smaller object that must overlap for two objects to be linked.
MIN_OVERLAP = 0.5
#: Planes an object may be missing from and still be linked across.
MAX_GAP = 1


def overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of ids of ``a`` and ``b`` (same shape) that share pixels, with the
    count of shared pixels: ``(ids_a, ids_b, counts)``."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    both = (a > 0) & (b > 0)
    if not both.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    pa, pb = a[both].astype(np.int64), b[both].astype(np.int64)
    code = pa * (int(pb.max()) + 1) + pb
    unique, counts = np.unique(code, return_counts=True)
    return unique // (int(pb.max()) + 1), unique % (int(pb.max()) + 1), counts


def match(
    a: np.ndarray,
    b: np.ndarray,
    allowed_a: set[int] | None = None,
    allowed_b: set[int] | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> list[tuple[int, int]]:
    """One-to-one pairs ``(id in a, id in b)`` of the same object (see the module)."""
    from scipy.optimize import linear_sum_assignment

    ia, ib, inter = overlaps(a, b)
    if not len(ia):
        return []
    area_a = np.bincount(np.asarray(a).ravel().astype(np.int64))
    area_b = np.bincount(np.asarray(b).ravel().astype(np.int64))
    sa, sb = area_a[ia], area_b[ib]
    ok = inter >= min_overlap * np.minimum(sa, sb)
    if allowed_a is not None:
        ok &= np.isin(ia, list(allowed_a))
    if allowed_b is not None:
        ok &= np.isin(ib, list(allowed_b))
    if not ok.any():
        return []
    ia, ib, inter, sa, sb = ia[ok], ib[ok], inter[ok], sa[ok], sb[ok]
    iou = inter / (sa + sb - inter)
    rows, row_of = np.unique(ia, return_inverse=True)
    cols, col_of = np.unique(ib, return_inverse=True)
    cost = np.ones((len(rows), len(cols)))  # 1 - IoU; pairs that may not link cost 1
    cost[row_of, col_of] = 1.0 - iou
    chosen_r, chosen_c = linear_sum_assignment(cost)
    return [
        (int(rows[r]), int(cols[c]))
        for r, c in zip(chosen_r, chosen_c, strict=True)
        if cost[r, c] < 1.0
    ]


def link_sequence(
    frames: Sequence[np.ndarray | None],
    min_overlap: float = MIN_OVERLAP,
    max_gap: int = MAX_GAP,
    divisions: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Pairs ``(earlier id, later id)`` that are one object, along a sequence of label
    arrays (consecutive planes or frames; None where a plane was not segmented).

    Ids must be unique across the whole sequence (each plane's own). An object not
    continued in the next frame may continue up to ``max_gap`` frames later. With a
    ``divisions`` list, an object that divides (:func:`divided`) continues in neither
    daughter: ``(mother, daughter)`` pairs are added to the list instead.
    """
    pairs: list[tuple[int, int]] = []
    open_ids: dict[int, set[int]] = {}  # frame -> its ids not yet continued
    for k, frame in enumerate(frames):
        if frame is None:
            continue
        present = set(int(i) for i in np.unique(frame) if i)
        free = set(present)
        for d in range(1, max_gap + 2):
            j = k - d
            if j < 0 or frames[j] is None or not open_ids.get(j) or not free:
                continue
            found = match(frames[j], frame, open_ids[j], free, min_overlap)
            split = {}
            if divisions is not None and d == 1:
                unmatched = free - {later for _, later in found}
                split = divided(frames[j], frame, found, unmatched, min_overlap)
            for earlier, later in found:
                open_ids[j].discard(earlier)
                free.discard(later)
                if earlier in split:
                    divisions.extend((earlier, child) for child in split[earlier])
                    free.difference_update(split[earlier])
                else:
                    pairs.append((earlier, later))
        open_ids[k] = present
        for j in [j for j in open_ids if j < k - max_gap]:
            del open_ids[j]
    return pairs


def divided(
    before: np.ndarray,
    after: np.ndarray,
    found: list[tuple[int, int]],
    free: set[int],
    min_overlap: float = MIN_OVERLAP,
) -> dict[int, tuple[int, int]]:
    """Objects of ``before`` that divided: mother -> her two daughters in ``after``.
    A mother continued by one object (``found``) divided when another object of
    ``after`` that continues none (``free``) also lies within her by at least
    ``min_overlap`` of its area, and the two daughters together are 0.5-1.6 times
    her size (a cell's two halves, not a neighbour passing by)."""
    ia, ib, inter = overlaps(before, after)
    area_a = np.bincount(np.asarray(before).ravel().astype(np.int64))
    area_b = np.bincount(np.asarray(after).ravel().astype(np.int64))
    inside = inter >= min_overlap * area_b[ib]
    within = set(zip(ia[inside].tolist(), ib[inside].tolist(), strict=True))
    out: dict[int, tuple[int, int]] = {}
    taken: set[int] = set()
    for mother, kept in found:
        if (mother, kept) not in within:
            continue
        others = [b for b in free if b != kept and b not in taken and (mother, b) in within]
        if not others:
            continue
        other = max(others, key=lambda b: area_b[b])
        if 0.5 <= (area_b[kept] + area_b[other]) / area_a[mother] <= 1.6:
            out[mother] = (kept, other)
            taken.add(other)
    return out


class Union:
    """Union-find over ids 0..n-1 (the objects made of linked parts)."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    @classmethod
    def of(cls, groups: np.ndarray) -> Union:
        """The union whose sets are ``groups`` (each id's group number; id 0 alone)."""
        groups = np.asarray(groups, dtype=np.int64)
        union = cls(len(groups))
        if len(groups) > 1:
            first = np.full(int(groups[1:].max()) + 1, len(groups), dtype=np.int64)
            np.minimum.at(first, groups[1:], np.arange(1, len(groups)))
            union.parent[1:] = first[groups[1:]]
        return union

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        """Each id's object, as the smallest id in it."""
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


__all__ = ["MAX_GAP", "MIN_OVERLAP", "Union", "divided", "link_sequence", "match", "overlaps"]
