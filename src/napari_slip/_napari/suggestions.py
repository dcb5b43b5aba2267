"""What the taught concept proposes, on the viewer side (no Qt widget here): **More
like these** (a suggestion shown as an outline layer until it is applied in one step
or discarded) and **Ask me** (the candidates it is least sure about, one at a time).
The work is computed in a worker (``iter_*``) and written through
:class:`~.teaching.Teaching` (its editor, its output layer, its ``apply``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.runtime.progress import Progress
from .layers import camera_of
from .teaching import ADDED, REMOVED, labels_after


class Suggestions:
    """The concept's suggestion or question shown over the last output."""

    def __init__(self, teaching) -> None:
        self.teaching = teaching
        #: The shown suggestion (and its table), and the outline layer shown.
        self.suggestion: Any = None
        self.preview: Any = None

    def iter_find_more(self):
        """Compute (in a worker) what the taught concept would add and remove on the
        edited plane; returns the suggestion and the plane's table after it."""
        from ..core.edits.more import suggest

        if self.teaching.editor is None:
            raise InputError(
                "Teach first: Shift+click objects like the ones you want (Shift+right-"
                "click ones you do not), then find more."
            )
        self.teaching.follow_undo()  # what napari's Ctrl+Z took back teaches nothing
        self.teaching.seed()
        yield Progress("finding more like these", 0, 1, "the concept scores the candidates")
        suggestion = suggest(self.teaching.editor)
        table = self.teaching.editor.table(
            labels_after(self.teaching.editor, suggestion.edit), suggestion.edit.rows
        )
        yield Progress("finding more like these", 1, 1, suggestion.message)
        return suggestion, table

    def show(self, suggestion, table) -> None:
        """The suggestion as an outline layer over the output (green: added, magenta:
        removed), until it is applied or discarded."""
        from napari.utils.colormaps import DirectLabelColormap

        self.discard()
        layer = self.teaching.output_layer()
        preview = np.zeros(layer.data.shape, np.uint8)
        preview[self.teaching.editor.plane or ...] = suggestion.preview()
        colours = DirectLabelColormap(color_dict={1: ADDED, 2: REMOVED, None: "transparent"})
        self.suggestion = (suggestion, table)
        self.preview = self.teaching.session.viewer.add_labels(
            preview,
            name=f"suggestion: {suggestion.message}",
            scale=layer.scale,
            translate=layer.translate,
            colormap=colours,
            opacity=1.0,
        )
        self.preview.contour = 2
        self.teaching.session.viewer.layers.selection.active = layer

    def apply(self):
        """Apply the shown suggestion as one edit (one undo step); the result shown."""
        if self.suggestion is None:
            return None
        suggestion, table = self.suggestion
        self.discard()
        return self.teaching.apply(suggestion.edit, table)

    def discard(self) -> None:
        if self.preview is not None and self.preview in self.teaching.session.viewer.layers:
            self.teaching.session.viewer.layers.remove(self.preview)
        self.preview = self.suggestion = None

    # -- ask me ---------------------------------------------------------------------------
    def iter_ask(self, n: int = 10):
        """(In a worker) the candidates the concept is least sure about."""
        from ..core.edits.more import ask

        if self.teaching.editor is None:
            raise InputError("Teach first: Shift+click an object like the ones you want.")
        self.teaching.follow_undo()
        self.teaching.seed()
        yield Progress("asking", 0, 1, "the concept scores the candidates")
        questions = ask(self.teaching.editor, n)
        if not questions:
            raise InputError("No candidate on the background is left to ask about.")
        yield Progress("asking", 1, 1, f"{len(questions)} questions")
        return questions

    def iter_answer(self, question, yes: bool):
        """(In a worker) the edit of an answer: yes adds the candidate, no teaches."""
        from ..core.edits.more import answer

        made = answer(self.teaching.editor, question, yes)
        yield Progress("answer", 1, 1, made.message)
        return made, self.teaching.editor.table(
            labels_after(self.teaching.editor, made), made.rows
        )

    def show_question(self, question, label: str) -> None:
        """The candidate asked about: an outline over the labels, centred in view."""
        from napari.utils.colormaps import DirectLabelColormap

        self.discard()
        layer = self.teaching.output_layer()
        preview = np.zeros(layer.data.shape, np.uint8)
        preview[self.teaching.editor.plane or ...] = question.mask
        colours = DirectLabelColormap(color_dict={1: "#ffd21f", None: "transparent"})
        viewer = self.teaching.session.viewer
        self.preview = viewer.add_labels(
            preview, name=label, scale=layer.scale, translate=layer.translate, colormap=colours
        )
        self.preview.contour = 2
        y0, x0, y1, x1 = question.box
        centre = layer.data_to_world((*self.teaching.editor.plane, (y0 + y1) / 2, (x0 + x1) / 2))
        camera_of(viewer).center = tuple(float(v) for v in centre[-2:])
        viewer.layers.selection.active = layer


__all__ = ["Suggestions"]
