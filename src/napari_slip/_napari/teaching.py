"""Clicks that teach, on the viewer side (no Qt widget here): the last output's
:class:`~napari_slip.core.concepts.corrections.Corrections`, the prompts Points layer
that shows every click (green: added, magenta: removed), and the mapping from a click
in the viewer to a pixel of the plane that was segmented.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InputError
from .layers import new_labels_layer, replace_layer_data

#: Colours of the prompts layer's points: an object added, a label removed.
ADDED, REMOVED = "#2ee62e", "#ff33cc"


class Teaching:
    """Corrections of a :class:`~.session.ViewerSession`'s last output."""

    def __init__(self, session) -> None:
        self.session = session
        self.corrections: Any = None
        self.points: Any = None
        self._colours: list[str] = []
        #: A concept the next corrections start from (e.g. the one the run used).
        self.concept: Any = None

    def reset(self) -> None:
        """A new output: the next click starts new corrections (the prompts stay shown)."""
        self.corrections = None

    @property
    def summary(self) -> str:
        return "" if self.corrections is None else self.corrections.summary()

    def _corrections(self):
        from ..core.concepts.corrections import Corrections

        last = self.session.last
        if last is None:
            raise InputError("Segment first: clicks correct the last result.")
        if not last.created:  # a layer of the user's own is never rewritten by a click
            raise InputError(
                "Clicks correct a layer this plugin made: set Output to 'New Labels layer' "
                "and run again."
            )
        if self.corrections is None:
            request = last.request
            # A copy: the picker's concept changes only when the taught one is saved.
            concept = None if request.concept is None else request.concept.copy()
            self.corrections = Corrections(self.session.segmenter, last.result, concept,
                                           request.concept_class)  # fmt: skip
        return self.corrections

    def pixel(self, world_point) -> tuple[float, float]:
        """The plane pixel (y, x) under ``world_point``; refused off the segmented plane."""
        from .job import spatial_axes

        last = self.session.last
        layer = last.request.image_layer
        data = np.asarray(layer.world_to_data(tuple(world_point)), dtype=float)
        axes = spatial_axes(last.request)
        point = data[list(axes)]
        plane = self._corrections().plane or ()
        lead = tuple(round(float(v)) for v in point[:-2])
        if plane and lead != tuple(plane):
            raise InputError(
                f"Click on the plane that was segmented ({', '.join(map(str, plane))}); "
                "this is another."
            )
        return float(point[-2]), float(point[-1])

    def correct(self, kind: str, world_point):
        if kind not in ("add", "remove"):
            raise InputError(f"A correction adds or removes; got {kind!r}.")
        corrections = self._corrections()
        y, x = self.pixel(world_point)
        result = corrections.add_at(y, x) if kind == "add" else corrections.remove_at(y, x)
        self._show(result)
        self._mark(world_point, kind)
        return result

    def undo(self):
        if self.corrections is None:
            return None
        result = self.corrections.undo()
        if result is None:
            return None
        self._show(result)
        if self.points is not None and len(self.points.data):
            self._colours = self._colours[: len(self.points.data) - 1]
            self.points.data = self.points.data[:-1]
            if self._colours:
                self.points.face_color = self._colours
        return result

    def save(self, path):
        """Save what was taught (or the run's concept) as a ``.concept`` file."""
        concept = self.corrections.concept if self.corrections is not None else self.concept
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
    def _show(self, result) -> None:
        last = self.session.last
        if last.layer is not None and last.layer in self.session.viewer.layers:
            replace_layer_data(last.layer, result)
        elif result.n_objects:
            from .job import spatial_axes

            request = last.request
            name = f"{request.prompt} ({request.image_layer.name})"
            last.layer = new_labels_layer(self.session.viewer, result, request.image_layer,
                                          name, spatial_axes(request))  # fmt: skip
            last.created = True
        last.result = result

    def _mark(self, world_point, kind: str) -> None:
        """The click in the prompts layer (made on the first click, the active layer kept)."""
        viewer = self.session.viewer
        last = self.session.last
        colour = ADDED if kind == "add" else REMOVED
        image = last.request.image_layer
        point = np.asarray(image.world_to_data(tuple(world_point)), dtype=float)
        if self.points is None or self.points not in viewer.layers:
            active = viewer.layers.selection.active
            self.points = viewer.add_points(
                np.zeros((0, image.ndim)),
                name=f"prompts: {last.request.prompt}",
                scale=image.scale,
                translate=image.translate,
                size=max(4.0, 0.02 * max(image.data.shape[-2:])),
                border_color="white",
            )
            if active is not None and active in viewer.layers:
                viewer.layers.selection.active = active
            self._colours = []
        if self.points.ndim != len(point):
            return
        self._colours = [*self._colours[: len(self.points.data)], colour]
        self.points.data = np.concatenate([self.points.data, point[None]])
        self.points.face_color = self._colours


__all__ = ["ADDED", "REMOVED", "Teaching"]
