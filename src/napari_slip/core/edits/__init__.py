"""Edits of a label image that change only what they touch.

A :class:`LabelEditor` edits one plane of a result: *add* the object under a click
(SAM decodes the point on that image's cached embedding; the new object gets the next
free id and only background pixels), *remove* the object under a click (its pixels
become background, nothing takes its place), *refine* one object with further
positive and negative points and a box (decoded together as SAM's prompt; the object
keeps its id and takes no pixel of another), *merge* two objects. Every other
object's pixels and id stay exactly as they were.

Each edit is computed first (:meth:`LabelEditor.propose_add` ...: an :class:`Edit`,
the changed pixels with their values before and after, nothing written) and applied
second, so a GUI can compute it in a worker and apply it on its own thread (napari's
``data_setitem``, which its Ctrl+Z undoes); scripts call :meth:`LabelEditor.add_at`
and friends, which do both and keep an undo/redo history.

Edits teach on purpose: each one records an example (added and refined objects of
the editor's class, removed ones as "not these") in :attr:`LabelEditor.concept`; the
concept changes other objects only when it is run (``segment(image, concept)``).
"""

from __future__ import annotations

from .editor import Edit, LabelEditor, NothingToDo
from .factory import edit
from .masks import MAX_FRACTION
from .table import ROW_COLUMNS

__all__ = ["MAX_FRACTION", "ROW_COLUMNS", "Edit", "LabelEditor", "NothingToDo", "edit"]
