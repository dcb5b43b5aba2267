"""One edit of a label image: the pixels it changes with their values before and
after (so that it can be applied, checked and undone bit for bit), and the example
it teaches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..concepts.features import ObjectFeatures


@dataclass(frozen=True, eq=False)
class Edit:
    """One edit: the pixels it changes (indices into the edited array) with their
    values before and after, and the example it teaches.

    ``label`` is the object added, removed, refined or kept by a merge.
    """

    kind: str
    label: int
    index: tuple[np.ndarray, ...]
    before: np.ndarray
    after: np.ndarray
    message: str
    mask: np.ndarray | None = field(default=None, repr=False)
    #: Table rows (score, similarity, prompt, source_id) of objects it adds or redraws.
    rows: dict[int, dict] = field(default_factory=dict)
    #: The example it teaches (the object's features), or None.
    example: ObjectFeatures | None = field(default=None, repr=False)
    #: The plane it was made on (``()``: a 2D label image).
    plane: tuple[int, ...] = ()
    #: Whether its model work is done (its example and similarity; see
    #: :meth:`LabelEditor.describe`): applying it then costs none.
    described: bool = False

    @property
    def size(self) -> int:
        return int(self.index[0].size) if self.index else 0

    def apply(self, labels: np.ndarray) -> None:
        labels[self.index] = self.after

    def revert(self, labels: np.ndarray) -> None:
        labels[self.index] = self.before

    def applies_to(self, labels: np.ndarray) -> bool:
        """Whether ``labels`` still hold the values this edit was computed on."""
        return bool(np.array_equal(labels[self.index], self.before))

    @classmethod
    def setting(cls, labels, masks: dict, value, plane, kind, label, message, rows=None):
        """The edit setting ``value`` on each plane's mask (plane -> (H, W) bool) of
        ``labels``; made on ``plane`` (its ``mask`` is that plane's)."""
        parts, before = [], []
        for where_plane, mask in masks.items():
            parts.append(_index(where_plane, mask))
            before.append(labels[where_plane][mask])
        index = tuple(np.concatenate(axis) for axis in zip(*parts, strict=True))
        before = np.concatenate(before)
        after = np.full(before.shape, value, dtype=before.dtype)
        mask = masks[plane]
        return cls(kind, label, index, before, after, message, mask, rows or {}, plane=plane)

    @classmethod
    def turning(cls, labels, plane, new: np.ndarray, kind, label, message, rows=None, mask=None):
        """The edit turning plane ``plane`` of ``labels`` into ``new`` (labels of its
        shape): every changed pixel in one step."""
        old = labels[plane]
        changed = new != old
        before, after = old[changed], new[changed].astype(old.dtype)
        index = _index(plane, changed)
        return cls(kind, label, index, before, after, message, mask, rows or {}, plane=plane)


def _index(plane: tuple[int, ...], mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """Indices into a stack of the pixels of ``mask`` on ``plane``."""
    where = np.nonzero(mask)
    lead = tuple(np.full(where[0].shape, p, dtype=np.intp) for p in plane)
    return (*lead, *where)


__all__ = ["Edit"]
