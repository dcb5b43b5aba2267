"""Per-object rows kept by what they depend on: an object's box, its pixels and the
image under it. A re-selection or an edit changes few objects; the others' rows come
back from here instead of being measured again.

:func:`objects_of` lists a label image's objects (huge ids included) with their boxes
and masks; :func:`digest` hashes an array's bytes; :class:`RowCache` keeps rows by
key, the least recently used dropped first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import numpy as np


def digest(array) -> bytes:
    """A 16-byte hash of an array's values (a mask packed to bits first)."""
    array = np.ascontiguousarray(array)
    data = np.packbits(array) if array.dtype == bool else array
    return hashlib.blake2b(data.tobytes(), digest_size=16).digest()


def objects_of(
    labels: np.ndarray,
) -> Iterator[tuple[int, tuple[slice, ...], np.ndarray, bytes]]:
    """Each object of ``labels``: (its id, its box, its mask within the box, the mask's
    :func:`digest`), in id order; ids far above the pixel count are numbered densely
    first (no list of one entry per possible id)."""
    from scipy import ndimage

    labels = np.asarray(labels)
    own = None
    if labels.size and int(labels.max()) > 2 * labels.size:
        own, dense = np.unique(labels, return_inverse=True)
        labels = dense.reshape(labels.shape) + (0 if own[0] == 0 else 1)
        own = own if own[0] == 0 else np.concatenate([[0], own])
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            mask = labels[box] == index
            yield (index if own is None else int(own[index])), box, mask, digest(mask)


class RowCache:
    """Rows by key, at most ``size`` kept."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._rows: OrderedDict = OrderedDict()

    def get(self, key: Hashable):
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: Hashable, row) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def rows(self, keys: list, make: Callable[[list[int]], dict]) -> list:
        """The rows of ``keys``; ``make(missing positions)`` gives {position: row}
        for those not kept (and they are kept from then on)."""
        rows = [self.get(k) for k in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            for i, row in make(missing).items():
                self.put(keys[i], row)
                rows[i] = row
        return rows


__all__ = ["RowCache", "digest", "objects_of"]
