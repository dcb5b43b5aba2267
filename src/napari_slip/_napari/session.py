"""The scripting object of the napari side: one viewer, one engine, the last output.

:class:`ViewerSession` is what the dock widget drives (as napari-animation's widget
drives its ``Animation``): each widget callback is one call on it (check and prepare
a run, the run itself in a worker, deliver the result into layers, re-select, forget,
a folder's settings), and :func:`~.scripting.segment_in_viewer` is one call on one too.
It holds no Qt widget; every layer it touches is a napari layer of its viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.config import RunConfig
from ..core.params import NormalisationParams
from ..core.pipeline.segmenter import Segmenter
from ..core.pipeline.stack import StackResult, reselect_stack
from ..core.runtime.generators import drain
from ..core.runtime.progress import Progress
from .job import Request, check, engine, iter_job, spatial_axes
from .layers import new_labels_layer, replace_layer_data, show_relevance_layer, write_into_layer
from .suggestions import Suggestions
from .teaching import Teaching


@dataclass
class Output:
    """The last run's output, so re-selection can update it.

    ``layer`` is None when nothing was found (no empty layer is added); a later
    re-selection that finds objects creates it.
    """

    request: Request
    layer: Any
    created: bool
    result: StackResult
    #: The image layer's data when it was segmented (an edit decodes on that image).
    image_data: Any = None
    #: Whether its labels were edited by hand (a click, napari's brush): re-selection
    #: would replace the edits, so it is refused.
    edited: bool = False


class ViewerSession:
    """Segment in a napari viewer: what the widget's buttons and the console call do.

    Parameters
    ----------
    viewer
        The viewer whose layers are read and written.
    segmenter
        The engine (default: one made for the first request, caches for 64 images).
    """

    def __init__(self, viewer, segmenter: Segmenter | None = None) -> None:
        self.viewer = viewer
        self.segmenter = segmenter
        self.last: Output | None = None
        #: Clicks that teach (see :meth:`correct`), on the last output.
        self.teaching = Teaching(self)
        #: What the taught concept proposes (More like these, Ask me), shown first.
        self.suggestions = Suggestions(self.teaching)
        #: The models whose prompt decoder was warmed for the first click.
        self._warmed: set = set()

    def prepare(self, request: Request) -> RunConfig:
        """Check a request whole (before any model loads) and return the run's one
        configuration; the GUI thread may call it (no image or model work)."""
        config = check(request)
        self.segmenter = engine(self.segmenter, request)
        return config

    def iter_segment(
        self, request: Request, config: RunConfig
    ) -> Generator[Progress, None, StackResult]:
        """The run of a prepared request (``config``: :meth:`prepare`'s): what the
        widget's worker drains. The first result SAM makes with these models ends
        with SAM's prompt decoder warmed for the first click (:meth:`PlaneHandle.warm`)."""
        result = yield from iter_job(self.segmenter, request, config)
        models = config.models  # once per models: later runs stay cached
        made_by_sam = result.provenance.get("sam") is not None and bool(result.candidates)
        if made_by_sam and models not in self._warmed:
            from ..core.pipeline.plane import plane_of

            plane = next(iter(result.candidates))  # ~0.1 s: the run's stage stays shown
            if plane_of(self.segmenter, result, plane).warm():
                self._warmed.add(models)
        return result

    def segment(self, request: Request, progress: Callable | None = None) -> StackResult:
        """Prepare and run a request here (blocking), as the console call does."""
        config = self.prepare(request)
        return drain(self.iter_segment(request, config), progress)

    def deliver(
        self,
        request: Request,
        result: StackResult,
        output=None,
        replace_labels: bool = False,
        hide_proposals: bool = True,
    ):
        """Put a result into the viewer: a new Labels layer (none when nothing was
        found), or its objects into ``output``; the relevance map layer if asked for.
        Returns the Labels layer written, or None."""
        self.teaching.reset(request.image_layer)
        self.suggestions.discard()
        if output is None:
            layer = self.new_layer(request, result) if result.n_objects else None
            self.last = Output(request, layer, True, result, request.image_layer.data)
        else:
            write_into_layer(output, result, replace=replace_labels)
            layer = output
            self.last = Output(request, output, False, result, request.image_layer.data)
        labels = request.labels_layer
        if hide_proposals and labels is not None and labels in self.viewer.layers:
            labels.visible = False  # dropped proposals would look selected
        if getattr(result, "relevance", None) is not None:
            show_relevance_layer(
                self.viewer,
                request.image_layer,
                request.prompt,
                result.relevance,
                probability=request.decoder is not None,
                axes=spatial_axes(request),
                planes=list(result.plane_relevance),
            )
        return layer

    def new_layer(self, request: Request, result: StackResult):
        """A new Labels layer of ``result`` above the image, named after the prompt."""
        name = f"{request.prompt} ({request.image_layer.name})"
        return new_labels_layer(
            self.viewer, result, request.image_layer, name, spatial_axes(request)
        )

    def reselect(self, current: Request) -> tuple[StackResult, Request] | str | None:
        """The last created layer with ``current``'s selection settings: no image or
        model work, a text encoding at most. Returns (result, request), None when
        nothing changes, or a line saying why it cannot be done here."""
        last = self.last
        if last is None or not last.created:
            return None
        if last.layer is not None and last.layer not in self.viewer.layers:
            return None
        # The layer keeps its prompt; a new prompt (Enter) makes a new layer.
        request = last.request.with_selection_of(current)
        if request.selection() == last.request.selection():
            return None
        if last.edited:
            return (
                "The labels were edited by hand: re-selecting would replace your edits. "
                "Press Run for a new layer."
            )
        if self.segmenter is None or current.models != last.request.models:
            return "Settings changed: press Run to apply."
        result = reselect_stack(self.segmenter, last.result, request.selection())
        if last.layer is not None:
            replace_layer_data(last.layer, result)
        elif result.n_objects:  # the first run found nothing; now something passes
            last.layer = self.new_layer(request, result)
        last.request, last.result = request, result
        return result, request

    def forget(self, layer=None) -> bool:
        """Forget the last output (always, or with ``layer`` only if that is its layer or
        its image); returns whether it was forgotten."""
        last = self.last
        if layer is not None and (
            last is None or layer not in (last.layer, last.request.image_layer)
        ):
            return False
        self.last = None
        self.teaching.reset()
        self.suggestions.discard()
        return True

    def correct(self, kind: str, world_point) -> StackResult:
        """Edit with a click at ``world_point`` (viewer coordinates), blocking: ``add``
        the object there or ``remove`` the one there (see :mod:`~..core.edits`); only
        that object's pixels change, as one napari undo step. The widget runs the
        same steps with the decode in a worker."""
        plane, y, x = self.teaching.prepare(world_point)
        layer = self.last.layer
        label = int(layer.selected_label) if layer is not None else 0
        made = drain(self.teaching.iter_edit(kind, plane, y, x, label))
        self.teaching.apply(made, None, world_point)
        return self.teaching.show_described(*drain(self.teaching.iter_describe(made)))

    def undo_correction(self) -> StackResult | None:
        """Take back the last edit of the output layer (None: there is none)."""
        return self.teaching.undo()

    def folder_run(self, request: Request, images, out) -> tuple[Any, Path, Path]:
        """A folder run's settings and its two folders, checked: (config, images, out)."""
        from ..core.errors import InputError

        config = self.folder_config(request)
        if str(images) in ("", ".") or not Path(images).is_dir():
            raise InputError("Choose the folder of images to segment.")
        if str(out) in ("", ".") or Path(out).resolve() == Path(images).resolve():
            raise InputError("Choose another folder to save the labels in.")
        return config, Path(images), Path(out)

    @staticmethod
    def folder_config(request: Request):
        """The settings of a folder run with this request's prompt, selection, models."""
        from ..core.batches import BatchConfig
        from ..core.errors import InputError

        if not request.prompt:
            raise InputError("Type a prompt first: what to segment in every image.")
        run = request.config()  # validated as a whole, as a run is
        if run.proposals == "labels":  # a labels layer belongs to one image, not a folder
            run = replace(run, proposals="sam")
        # The layer's contrast limits are its own; each image of a folder gets its own.
        run = replace(run, normalisation=NormalisationParams())
        return BatchConfig.from_run(run)


__all__ = ["Output", "ViewerSession"]
