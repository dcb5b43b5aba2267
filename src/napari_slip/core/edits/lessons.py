"""What edits teach: each applied edit's example goes to the concept (added and refined
objects as examples of a class, removed ones as "not these"), and leaves it when the
edit is undone, by the editor or by anyone else who restores the pixels (napari's
Ctrl+Z on the Labels layer): :meth:`Lessons.follow` compares the labels with the
edits, newest first, as an undo history does.

An edit's example needs models (CLIP's crop embedding): :meth:`Lessons.describe`
computes it, so that a GUI can write an edit's pixels first and describe it after.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..concepts.features import ObjectFeatures, measure_objects
from ..pipeline.plane import PlaneHandle, proposals_of_masks
from .edit import Edit

#: The edits whose example is one of the class, and those whose example is "not these".
POSITIVE, NEGATIVE = ("add", "refine"), ("remove", "not")


@dataclass(eq=False)
class _Taught:
    """An applied edit and its concept step (None: withdrawn, waiting for a redo)."""

    edit: Edit
    step: int | None


class Lessons:
    """The concept edits teach, the class they teach, and which edit taught what.

    Parameters
    ----------
    concept
        The concept (None: edits teach nothing).
    class_name
        The class added objects are examples of (None: the concept's first).
    prompt
        What an object's similarity is measured against (its row's ``similarity``).
    """

    def __init__(self, concept, class_name: str | None, prompt: str) -> None:
        self.concept, self.class_name, self.prompt = concept, class_name, prompt
        self._taught: list[_Taught] = []

    # -- what an object is ------------------------------------------------------------
    def features(self, handle: PlaneHandle, mask: np.ndarray) -> ObjectFeatures:
        """The object's features on ``handle``'s plane: measurements and its CLIP crop
        embedding."""
        proposals = proposals_of_masks(handle.shape, [mask])
        clip = handle.embed_masks([mask])
        return ObjectFeatures(measure_objects(handle.image, proposals), clip)

    def row_of(self, handle: PlaneHandle, example: ObjectFeatures, keep_score=False) -> dict:
        """An object's similarity to the prompt (its CLIP crop), as a run computes it;
        ``keep_score``: the row's score stays the run's (a refined object)."""
        row: dict = {"prompt": self.prompt, "source_id": 0}
        if self.prompt:
            similarity = float(example.clip[0] @ handle.text_embedding(self.prompt))
            row["similarity"] = similarity
            if not keep_score:
                row["score"] = similarity
        return row

    def describe(self, handle: PlaneHandle, edit: Edit) -> Edit:
        """``edit`` with its example and its object's similarity (the model work of an
        add, a refine or, when there is a concept, a remove); others as they are."""
        if edit.described or edit.mask is None or edit.kind not in (*POSITIVE, *NEGATIVE):
            return replace(edit, described=True)  # a merge or a split teaches nothing
        if edit.kind in NEGATIVE:
            example = self.features(handle, edit.mask) if self.concept is not None else None
            return replace(edit, example=example, described=True)
        example = self.features(handle, edit.mask)
        row = {**edit.rows.get(edit.label, {})}
        row.update(self.row_of(handle, example, keep_score=edit.kind == "refine"))
        return replace(edit, example=example, rows={**edit.rows, edit.label: row}, described=True)

    # -- teaching, and following undo -----------------------------------------------------
    def teach(self, edit: Edit) -> None:
        """The edit's example joins the concept (no model work: described already); a
        new edit ends what could be redone."""
        if self.concept is None or edit.example is None:
            return
        self._taught = [t for t in self._taught if t.step is not None]
        self._taught.append(_Taught(edit, self._add(edit)))

    def withdraw(self, edit: Edit) -> None:
        """The edit was undone: its example leaves the concept (a redo brings it back)."""
        for taught in self._taught:
            if taught.edit is edit and taught.step is not None:
                self.concept.withdraw(taught.step)
                taught.step = None

    def retake(self, edit: Edit) -> None:
        """The edit was redone: its example joins the concept again."""
        for taught in self._taught:
            if taught.edit is edit and taught.step is None:
                taught.step = self._add(edit)

    def follow(self, labels: np.ndarray) -> bool:
        """Withdraw the examples of edits whose pixels were restored (undone by someone
        else, newest first) and retake those written again (redone, oldest undone
        first). Edits of no pixel (an answer "no") never block the walk. Returns
        whether the concept changed."""
        changed = False
        for taught in reversed(self._taught):  # undo: the newest applied first
            if taught.step is None or not taught.edit.size:
                continue
            if not _holds(labels, taught.edit, taught.edit.before):
                break
            self.concept.withdraw(taught.step)
            taught.step, changed = None, True
        for taught in self._taught:  # redo: the oldest withdrawn first
            if taught.step is not None:
                continue
            if not _holds(labels, taught.edit, taught.edit.after):
                break
            taught.step, changed = self._add(taught.edit), True
        return changed

    def _add(self, edit: Edit) -> int:
        negative = edit.kind in NEGATIVE
        return self.concept.add(edit.example, None if negative else self.class_name)


def _holds(labels: np.ndarray, edit: Edit, values: np.ndarray) -> bool:
    """Whether ``labels`` hold ``values`` at the edit's pixels (and it has pixels)."""
    return bool(edit.size) and bool(np.array_equal(labels[edit.index], values))


__all__ = ["Lessons"]
