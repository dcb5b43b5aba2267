"""Edits on the viewer side (no Qt widget here): the last output's
:class:`~napari_slip.core.edits.LabelEditor`, the prompts Points layer that shows every
click (green: added, magenta: removed), and the mapping from a click in the viewer to
a pixel of the plane that was segmented.

A click's edit is made in two steps, so that its pixels show as soon as SAM has
decoded it: the worker decodes (:meth:`Teaching.iter_edit`), the GUI thread writes
the pixels (:meth:`Teaching.apply`) with napari's ``data_setitem``; then the worker
describes it (:meth:`Teaching.iter_describe`: CLIP's crop embedding, the table's
measurements) and the GUI thread shows the table and teaches its example
(:meth:`Teaching.show_described`). It changes only the pixels of its object;
napari's Ctrl+Z / Ctrl+Shift+Z on the Labels layer undo and redo it, and its example
leaves the concept with it (:meth:`Teaching.follow_undo`). No other object changes.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..core.edits.box import propose_box
from ..core.errors import InputError
from ..core.runtime.progress import Progress
from .layers import features_for, new_labels_layer

#: Colours of the prompts layer's points: an object added, a label removed.
ADDED, REMOVED = "#2ee62e", "#ff33cc"
#: What the status says while an edit is computed; the edits SAM decodes.
_DOING = {"add": "adding the object", "remove": "removing the object", "split": "splitting"}
_DOING["box"] = _DOING["add"]
_DECODES = ("add", "box", "inside", "outside")


class Teaching:
    """Edits of a :class:`~.session.ViewerSession`'s last output."""

    def __init__(self, session) -> None:
        self.session = session
        self.editor: Any = None
        self.points: Any = None
        self._points_image: Any = None  # the image layer the prompts were clicked on
        #: True while an edit is written (napari's paint event is then ours).
        self.writing = False
        #: The class clicks teach (the dock's field; None: the run's own class).
        self.class_name: str | None = None
        self.default_class: str | None = None
        #: The plane whose kept objects are still to become the concept's examples.
        self._seed_due: tuple[int, ...] | None = None

    def reset(self, image=None) -> None:
        """A new output (of ``image``; None: none): the next click starts a new editor.
        The prompts stay shown over the same image; over another image they described
        a result that is no longer there, and are hidden (the layer is kept)."""
        self.editor, self._seed_due = None, None
        if self.points is not None and (image is None or image is not self._points_image):
            with contextlib.suppress(RuntimeError, ValueError):
                self.points.visible = False
            self.points = None

    @property
    def summary(self) -> str:
        concept = None if self.editor is None else self.editor.concept
        if concept is None:
            return ""
        counts = concept.counts()
        shown = ", ".join(f"{c} {counts[c]}" for c in concept.classes)
        return f"Examples: {shown}; not these: {counts[None]}."

    def _editor(self, plane: tuple[int, ...]):
        """The editor of ``plane`` of the output layer (made in the worker: the first
        one embeds the run's kept objects as the concept's examples)."""
        from ..core.concepts import Concept
        from ..core.edits import edit

        last = self.session.last
        editor = self.editor
        if editor is not None and editor.labels is last.layer.data and editor.linked:
            return editor.at(plane)  # one editor for a linked stack's every plane
        if editor is None or editor.labels is not last.layer.data or editor.plane != plane:
            request = last.request
            # A copy: the picker's concept changes only when the taught one is saved.
            concept = None if request.concept is None else request.concept.copy()
            prompt = request.prompt or "object"
            seed = concept is None
            concept = concept if concept is not None else Concept([prompt], texts=[prompt])
            if editor is not None and editor.plane != plane:
                concept, seed = editor.concept, False  # one concept taught across planes
            teach = {"concept": concept, "class_name": request.options.get("concept_class")}
            where = {"plane": plane or None, "labels": last.layer.data}
            self.editor = edit(last.result, self.session.segmenter, **where, **teach)
            self.default_class = self.editor.class_name
            self._seed_due = plane if seed else None  # examples after the pixels show
        return self.editor

    def output_layer(self):
        """The output layer (made empty when the run found nothing)."""
        from .job import spatial_axes

        last = self.session.last
        if last.layer is None or last.layer not in self.session.viewer.layers:
            request = last.request
            name = f"{request.prompt} ({request.image_layer.name})"
            axes = spatial_axes(request)
            viewer, image = self.session.viewer, request.image_layer
            last.layer = new_labels_layer(viewer, last.result, image, name, axes)
        return last.layer

    def prepare(self, world_point) -> tuple[tuple[int, ...], float, float]:
        """On the GUI thread, before a click's worker: the checks, the output layer
        (made if the run found nothing), and the click as (plane, y, x) of the image."""
        from .job import spatial_axes

        last = self.session.last
        if last is None:
            raise InputError("Segment first: clicks edit the last result.")
        if not last.created:  # a layer of the user's own is never rewritten by a click
            raise InputError(
                "Clicks edit a layer this plugin made: set Output to 'New Labels layer' "
                "and run again."
            )
        layer = last.request.image_layer
        if layer not in self.session.viewer.layers:
            raise InputError(f"The image {layer.name!r} was removed: run again to edit.")
        if last.image_data is not None and layer.data is not last.image_data:
            raise InputError(
                f"The image {layer.name!r} changed since it was segmented: press Run "
                "again before editing (edits decode on the image that was segmented)."
            )
        data = np.asarray(layer.world_to_data(tuple(world_point)), dtype=float)
        point = data[list(spatial_axes(last.request))]
        lead = tuple(round(float(v)) for v in point[:-2])
        candidates = last.result.candidates
        if isinstance(candidates, dict) and lead not in candidates:
            segmented = ", ".join(str(p) for p in candidates) or "none"
            raise InputError(
                f"Plane {lead} was not segmented (segmented: {segmented}): click on one that was."
            )
        self.output_layer()
        plane = lead if isinstance(candidates, dict) else ()
        # napari's pixel i spans [i - 0.5, i + 0.5); the engine's [i, i + 1).
        return plane, float(point[-2]) + 0.5, float(point[-1]) + 0.5

    def iter_edit(
        self,
        kind: str,
        plane: tuple[int, ...],
        y: float,
        x: float,
        label: int = 0,
        first: tuple[float, float] | None = None,
    ):
        """Compute (in a worker) the edit of a click at pixel (``y``, ``x``) of
        ``plane`` (from :meth:`prepare`): ``add`` the object there, ``remove`` it,
        refine object ``label`` with a point ``inside`` or ``outside`` it, ``merge`` the
        object there into object ``label``, ``split`` the object holding ``first``
        and (y, x), add the object in the ``box`` from ``first`` to (y, x), or
        refine object ``label`` with that box (``refine_box``).
        Returns the edit, not described yet (:meth:`iter_describe`); nothing is
        written."""
        editor = self._editor(plane)
        self._teach_class(editor)
        what = _DOING.get(kind, f"{kind} object {label}")
        yield Progress(what, 0, 1, "SAM decodes the click" if kind in _DECODES else "")
        if kind in ("inside", "outside", "merge", "refine_box") and not label:
            raise InputError("Pick the object first (napari's label picker, or add one).")
        if kind == "add":
            made = editor.propose_add(y, x, describe=False)
        elif kind == "remove":
            made = editor.propose_remove(y, x, describe=False)
        elif kind in ("inside", "outside"):
            made = editor.propose_refine(label, [(y, x, kind == "inside")], describe=False)
        elif kind == "merge":
            other = int(editor.plane_labels[editor.pixel(y, x)])
            if not other:
                raise InputError("Ctrl+Shift+click on the object to merge into the picked one.")
            made = editor.propose_merge(label, other)
        elif kind == "split" and first is not None:
            made = editor.propose_split(first, (y, x))
        elif kind == "box" and first is not None:
            made = propose_box(editor, (*first, y, x), describe=False)
        elif kind == "refine_box" and first is not None:
            (y0, y1), (x0, x1) = sorted((first[0], y)), sorted((first[1], x))
            made = editor.propose_refine(label, box=(y0, x0, y1, x1), describe=False)
        else:
            raise InputError(f"An edit adds, removes, refines, merges or splits; got {kind!r}.")
        yield Progress(what, 1, 1, made.message)
        return made

    def iter_describe(self, made):
        """(In a worker, after :meth:`apply` wrote ``made``) its model work: the
        example it teaches, its object's similarity, and the table of the labels as
        they are now. Returns the described edit and the table."""
        editor = self.editor
        yield Progress("measuring", 0, 1, "the edited object")
        self.seed()
        described = editor.describe(made)
        labels = editor.labels if editor.finish is not None else editor.labels[made.plane]
        return described, editor.table(np.array(labels, copy=True), described.rows)

    def show_described(self, described, table):
        """(On the GUI thread) a written edit's example joins the concept (unless the
        edit was undone meanwhile) and its table is shown; the result shown."""
        last = self.session.last
        if last is None or self.editor is None or last.layer is None:
            return None
        if self.editor.labels is not last.layer.data:
            return None  # the output was replaced meanwhile: nothing to describe
        self.editor.record(described)
        self.follow_undo()
        return self.show_table(self._whole_table(table, described.plane))

    def seed(self) -> None:
        """(In a worker) the run's kept objects of the plane first edited become the
        concept's first examples, once (measuring the plane's candidates: done after
        a click's pixels show, not before)."""
        if self._seed_due is None or self.editor is None:
            return
        from ..core.edits.factory import seed_examples

        plane, self._seed_due = self._seed_due, None
        editor, result = self.editor, self.session.last.result
        handle = editor.handles[plane]
        kept_class = self.default_class or editor.class_name  # the run's, not the field's
        seed_examples(editor.concept, kept_class, result, plane, handle)

    def follow_undo(self) -> bool:
        """The concept follows napari's Ctrl+Z / Ctrl+Shift+Z of the output layer: an
        edit's example leaves with its pixels and comes back with them. Returns
        whether it changed."""
        if self.editor is None:
            return False
        return self.editor.lessons.follow(self.editor.labels)

    def _teach_class(self, editor) -> None:
        """Examples go to the class the dock names (default: the run's own)."""
        wanted = self.class_name or self.default_class
        if editor.concept is not None and wanted and wanted != editor.class_name:
            editor.concept.add_class(wanted)
            editor.class_name = wanted

    # -- napari's own brush ---------------------------------------------------------------
    def iter_measure(self):
        """(In a worker) the table of the labels as they are now (after napari's brush,
        eraser or fill): the measurements follow; None when there is no editor to
        measure with yet and the result has several planes."""
        last = self.session.last
        candidates = last.result.candidates
        if self.editor is None:
            linked = getattr(last.result, "linked", None) is not None
            if isinstance(candidates, dict) and len(candidates) > 1 and not linked:
                return None
            self._editor(next(iter(candidates)) if isinstance(candidates, dict) else ())
        editor = self.editor
        yield Progress("measuring", 0, 1, "the objects after the brush")
        whole = editor.finish is not None
        labels = np.array(editor.labels if whole else editor.plane_labels, copy=True)
        return editor.table(labels)

    def show_table(self, table):
        """The measured table in the layer's features and the last result."""
        last = self.session.last
        if table is None or last is None or last.layer is None:
            return None
        last.result = replace(last.result, table=table)
        last.layer.features = features_for(last.result)
        return last.result

    def apply(self, made, table=None, world_point=None):
        """Write a computed edit into the output layer as one napari undo step (on the
        GUI thread: only the edit's pixels are written); returns the result shown.
        ``table``: the table after it (None: the edit is described after, its table
        shown by :meth:`show_described`)."""
        last = self.session.last
        layer = self.output_layer()
        if self.editor is None or self.editor.labels is not layer.data:
            raise InputError("The output layer was replaced: click again.")
        if not made.applies_to(layer.data):
            raise InputError("The labels changed while SAM decoded this click: click again.")
        self.writing = True  # our own write: not a brush stroke to measure again
        try:
            layer.data_setitem(made.index, made.after)
        finally:
            self.writing = False
        self.editor.record(made)
        last.edited = True
        if made.kind == "add":
            layer.selected_label = made.label  # Alt+clicks refine it next
        last.result = replace(last.result, labels=layer.data, message=made.message)
        if table is not None:
            self.show_table(self._whole_table(table, made.plane))
        if world_point is not None:
            self.mark(world_point, made.kind)
        return last.result

    def _whole_table(self, table, plane: tuple[int, ...]):
        """The result's table with the edited plane's rows replaced by ``table``'s
        (a stack edited plane by plane; a linked result's table is whole already)."""
        if not plane or self.editor.linked:
            return table
        old = self.session.last.result.table
        here = np.ones(len(old), dtype=bool)
        for axis, index in enumerate(plane):
            here &= old[f"axis{axis}"].to_numpy() == index
            table[f"axis{axis}"] = index
        return pd.concat([old[~here], table], ignore_index=True)

    def undo(self):
        """Shift+U: napari's undo of the output layer (as Ctrl+Z on it)."""
        last = self.session.last
        if last is None or last.layer is None or last.layer not in self.session.viewer.layers:
            return None
        last.layer.undo()
        self.follow_undo()
        if self.points is not None and len(self.points.data):
            self.points.selected_data = {len(self.points.data) - 1}
            self.points.remove_selected()  # the click's point goes with its edit
        return last.result

    def save(self, path):
        """Save what was taught (or the run's concept) as a ``.concept`` file."""
        self.follow_undo()
        self.seed()
        concept = self.editor.concept if self.editor is not None else None
        last = self.session.last
        if concept is None and last is not None and last.request.concept is not None:
            concept = last.request.concept
        if concept is None:
            raise InputError(
                "Nothing to save yet: correct the result with a click (Shift+click adds, "
                "Shift+right-click removes), or run with a concept."
            )
        return concept.save(path)

    # -- the viewer ---------------------------------------------------------------------
    def mark(self, world_point, kind: str) -> None:
        """A click in the prompts layer (one point added: a single layer update):
        green where an object was added or refined, magenta where one was removed."""
        image = self.session.last.request.image_layer
        point = np.asarray(image.world_to_data(tuple(world_point)), dtype=float)
        points = self.prompts_layer()
        if points.ndim != len(point):
            return
        points.current_face_color = REMOVED if kind == "remove" else ADDED
        points.add(point[None])

    def prompts_layer(self):
        """The prompts Points layer of the last output (made on the first click), the
        active layer kept."""
        viewer, last = self.session.viewer, self.session.last
        if self.points is None or self.points not in viewer.layers:
            image = last.request.image_layer
            active = viewer.layers.selection.active
            self.points = viewer.add_points(
                np.zeros((0, image.ndim)),
                name=f"prompts: {last.request.prompt}",
                scale=image.scale,
                translate=image.translate,
                size=max(4.0, 0.02 * max(image.data.shape[-2:])),
                border_color="white",
            )
            self._points_image = image
            if active is not None and active in viewer.layers:
                viewer.layers.selection.active = active
        return self.points


def labels_after(editor, made) -> np.ndarray:
    """The labels ``made`` would leave (a copy): the whole result's where its table is
    the whole result's, else the edited plane's."""
    if editor.finish is not None:
        after = np.array(editor.labels, copy=True)
        after[made.index] = made.after
    else:
        after = np.array(editor.plane_labels, copy=True)
        after[made.index[len(editor.plane) :]] = made.after
    return after


__all__ = ["ADDED", "REMOVED", "Teaching"]
