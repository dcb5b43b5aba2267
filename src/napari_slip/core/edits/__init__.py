"""Edits beside the engine that change only what they touch: :mod:`.editor` (the
editor), :mod:`.edit` (one edit, applied and undone bit for bit), :mod:`.lessons`
(what edits teach, following undo), :mod:`.carry` (an object carried through a linked stack),
:mod:`.box` (an object drawn as a box), :mod:`.masks`, :mod:`.table` (the table that
follows), :mod:`.more` (the taught concept's suggestions and questions) and
:mod:`.factory` (``napari_slip.edit(result, segmenter)``)."""

from __future__ import annotations

from .edit import Edit
from .editor import LabelEditor, NothingToDo
from .factory import edit
from .masks import MAX_FRACTION
from .table import ROW_COLUMNS

__all__ = ["MAX_FRACTION", "ROW_COLUMNS", "Edit", "LabelEditor", "NothingToDo", "edit"]
