"""An object drawn as a box: SAM decodes the box alone on the plane's embedding, and
the largest free piece of its mask becomes a new object (an edit of
:class:`~.editor.LabelEditor`, through its public interface)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError, NothingToDo
from .edit import Edit
from .editor import LabelEditor
from .masks import checked

#: A box narrower than this (pixels) is a click, not a box.
MIN_SIDE = 3


def propose_box(
    editor: LabelEditor,
    box: tuple[float, float, float, float],
    plane: tuple[int, ...] | None = None,
    describe: bool = True,
) -> Edit:
    """The object in ``box`` (``(y0, x0, y1, x1)``, any two corners) as a new label on
    background pixels only; nothing else changes (``describe``: as
    :meth:`~.editor.LabelEditor.propose_add`)."""
    editor.at(plane)
    h, w = editor.handle.shape
    y0, y1 = sorted((float(box[0]), float(box[2])))
    x0, x1 = sorted((float(box[1]), float(box[3])))
    y0, x0, y1, x1 = max(y0, 0.0), max(x0, 0.0), min(y1, float(h)), min(x1, float(w))
    if y1 - y0 < MIN_SIDE or x1 - x0 < MIN_SIDE:
        raise InputError(f"Draw a box of at least {MIN_SIDE} x {MIN_SIDE} pixels on the image.")
    mask = checked(editor.handle.decode(box=(y0, x0, y1, x1)).mask, "in this box")
    free = mask & (editor.plane_labels == 0)
    parts, n = ndimage.label(free)
    if not n:
        raise NothingToDo("SAM's object in the box is labelled already: nothing was added.")
    sizes = np.bincount(parts.ravel())[1:]
    free = parts == 1 + int(np.argmax(sizes))
    label = editor.next_id()
    editor.prompts[label] = {"points": [], "box": (y0, x0, y1, x1)}
    rows = {label: {"prompt": editor.prompt, "source_id": 0}}
    made = editor.edit_of("add", label, free, label, f"Added object {label}.", rows)
    return editor.describe(made) if describe else made


__all__ = ["MIN_SIDE", "propose_box"]
