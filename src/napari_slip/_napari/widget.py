"""The dock widget: a prompt field and a Run button over the engine.

All inference runs in a napari thread worker; the GUI thread only gathers inputs,
shows progress and writes the finished labels. Changing the prompt, mode, threshold,
distractors or top-k on an image whose proposals are embedded re-selects on the spot.

The widget is a thin client of its :class:`~.session.ViewerSession` (the scripting
object ``segment_in_viewer`` uses too): each callback gathers the inputs into a
:class:`~.job.Request` and makes one call on it. Its SAM, tile and crop fields are made
from the parameter dataclasses (:mod:`.form`, :mod:`.fields`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox, ComboBox, Container

from ..core.errors import SlipError
from ..core.models.registry import SAM_MODELS
from ..core.params import (
    EXACT_SAM,
    CropParams,
    SamProposalParams,
    TileParams,
)
from ..core.pipeline.stack import leading_shape
from ..core.runtime.perf import tune_allocator
from . import form
from .axes_controls import AxesControls
from .channel_controls import ChannelControls
from .edit_controls import EditControls
from .fields import params_from
from .folder_results import FolderResults
from .job import Request, source
from .model_pickers import ModelPickers
from .panel import WorkerPanel, compact, one_line
from .results_panel import ResultsPanel
from .scripting import remember_widget
from .selection_controls import SelectionControls
from .services import DockServices
from .session import ViewerSession
from .suggest_controls import SuggestControls
from .teaching_controls import TeachingControls
from .toasts import dismiss_stale, post, sentence

if TYPE_CHECKING:
    import napari

#: Re-exported for code that imported them from here.
MODE_CHOICES, MODE_TIPS = form.MODE_CHOICES, form.MODE_TIPS


#: What the Planes choice offers: this plane, every plane linked, every plane alone.
SCOPES = ("current slice", "all slices", "all slices, per plane")


#: The form's rows, top to bottom (the axes, concept and click rows go in after the
#: image and prompt rows; Run, Cancel and the status below them).
FORM_ROWS = (
    "image",
    "prompt",
    "mode",
    "threshold",
    "use_floor",
    "distractors",
    "top_k",
    "green",
    "blue",
    "channel_axis",
    "channels",
    "proposals",
    "sam",
    "clip",
    "decoder",
    "device",
    "scope",
    "output",
    "replace_existing",
    "show_advanced",
    "show_folder",
)
#: The combo boxes that list the viewer's layers (kept current on layer events).
LAYER_COMBOS = ("image", "proposals", "output", "green", "blue", "channel_axis")
#: The combo boxes that shrink with the dock (their long choices elide).
COMBOS = (
    "image",
    "mode",
    "proposals",
    "sam",
    "clip",
    "decoder",
    "device",
    "green",
    "blue",
    "channel_axis",
    "scope",
    "output",
    "fill",
)


class SlipWidget(WorkerPanel):
    """Segment objects in an image layer from a text prompt.

    Parameters
    ----------
    napari_viewer
        The viewer whose layers are read and written.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__("Run")
        tune_allocator()  # opt-in, process-wide: napari-slip's own widget opts in
        self.viewer = viewer = napari_viewer
        #: The scripting object every callback calls (see :class:`ViewerSession`).
        self.session = ViewerSession(viewer)
        remember_widget(viewer, self)  # the console call uses this widget's models
        self._folder_running = False
        image = lambda: self.image.value if hasattr(self, "image") else None  # noqa: E731
        self.image = ComboBox(label="Image", choices=lambda _w=None: form.image_choices(viewer))
        self.prompt = form.prompt_field()
        self.proposals = ComboBox(
            label="Proposals", choices=lambda _w=None: form.proposal_choices(viewer)
        )
        #: SAM, CLIP, decoder, device: the pickers and the files offered in them.
        self.models = ModelPickers(self.native, self.say)
        self.sam, self.clip, self.decoder = self.models.sam, self.models.clip, self.models.decoder
        self.device = self.models.device
        #: Green from, Blue from, Channel axis, Channels as RGB.
        self.colour = ChannelControls(viewer, image)
        for name in ("green", "blue", "channel_axis", "channels"):
            setattr(self, name, getattr(self.colour, name))  # the dock's rows
        self.scope = ComboBox(label="Planes", choices=list(SCOPES))
        self.scope.tooltip = (
            "all slices: objects linked across Z planes into 3D objects and across T "
            "frames into tracks; per plane: each plane's objects their own"
        )
        self.output = ComboBox(label="Output", choices=lambda _w=None: form.output_choices(viewer))
        self.replace_existing = CheckBox(text="Replace overlapping labels", value=False)
        self.replace_existing.tooltip = (
            "Write new objects over existing labels where they overlap (undo with Ctrl+Z); "
            "unticked, existing labels are kept."
        )
        self.show_advanced = CheckBox(text="Advanced settings", value=False)
        advanced = form.advanced_fields()
        for name, widget in advanced.items():
            setattr(self, name, widget)
        #: Mode, threshold, distractors, top k: shown where they do something.
        self.selection = SelectionControls(self.relevance_weight)
        for name in ("mode", "threshold", "use_floor", "distractors", "top_k"):
            setattr(self, name, getattr(self.selection, name))  # the dock's rows
        self.advanced = Container(widgets=list(advanced.values()), labels=True)
        self.show_folder = CheckBox(text="Segment a folder of images", value=False)
        folder = form.folder_fields()
        for name, widget in folder.items():
            setattr(self, name, widget)
        self.folder = Container(widgets=list(folder.values()), labels=True)
        self.results = ResultsPanel()
        #: What the dock's parts share of it (never the dock itself).
        self.services = DockServices(viewer, self.session, self.native, self.say, self.show_error)
        self.teaching = TeachingControls(self.services, self.mode, self.update_visibility)
        self.work = self.work_handle(self.show_outcome)  # the worker side, for parts
        # Clicks and keys that edit, their queue; Find more, Ask me.
        self.edits = EditControls(self.services, self.work, self.results.examples)
        self.suggest = SuggestControls(self.services, self.work, self.edits)
        # The image's axes: from its file, or a switch.
        self.axes = AxesControls(
            self.services, self.image, self.channel_axis, self.reset_choices, self.work.busy
        )
        reveal = lambda: setattr(self.show_folder, "value", True)  # noqa: E731
        picker, button = self.folder_result, self.open_result
        self.folder_results = FolderResults(self.services, self.results, picker, button, reveal)
        self._lay_out()
        self._connect()
        self.image.changed.connect(self.axes.follow)  # after the status is cleared
        for field in (self.image, self.sam, self.clip):  # then the microscopy suggestion
            field.changed.connect(self.update_visibility)
        self.results.histogram.on_pick = self.selection.pick
        self.results.on_suggest = self.lower_filters
        self.results.on_said = self.say
        self.scroll_inside()
        self.pin_below_status(self.results.suggest)  # the fix beside what it fixes
        self.update_visibility()
        self.axes.follow()

    def _lay_out(self) -> None:
        rows = [getattr(self, n) for n in FORM_ROWS]
        teaching = [*self.teaching.widgets(), *self.edits.widgets(), *self.suggest.widgets()]
        rows[1:1] = self.axes.widgets()  # under the image: what its axes are
        self.extend([*rows[:2], *teaching, *rows[2:], *self.controls()])
        # Full width under the form (not in a labelled row): the table needs the room.
        self.body().addWidget(self.results.native)
        self.body().addStretch(1)  # spare height goes below, not between rows
        self.advanced_area = self.add_collapsible(self.show_advanced, self.advanced)
        self.folder_area = self.add_collapsible(self.show_folder, self.folder, max_height=180)
        compact(*(getattr(self, n) for n in COMBOS))
        self.sam.tooltip = "\n".join(
            f"{name}: {w.description}, {w.size_mb} MB" for name, w in SAM_MODELS.items()
        )

    def _connect(self) -> None:
        self.prompt.native.returnPressed.connect(self.run)
        self.show_advanced.changed.connect(lambda show: self.advanced_area.setVisible(show))
        self.show_folder.changed.connect(lambda show: self.folder_area.setVisible(show))
        self.run_folder.changed.connect(self.run_on_folder)
        self.rescan_button.changed.connect(self.rescan)
        for widget in self.colour.combos():
            self.image.changed.connect(widget.reset_choices)
        for widget in (
            self.mode,
            self.output,
            self.image,
            self.channel_axis,
            self.green,
            self.use_floor,
            self.proposals,
            self.show_relevance,
            self.relevance_weight,
        ):
            widget.changed.connect(self.update_visibility)
        for widget in self.selection.fields():
            widget.changed.connect(self._reselect)
        # The histogram's threshold line follows the slider, even before a re-run.
        histogram = self.results.histogram
        self.threshold.changed.connect(lambda v: self.selection.follow(histogram, v))
        self.image.changed.connect(self._forget_last)
        layers = self.viewer.layers.events
        layers.inserted.connect(self._on_layer_inserted)
        layers.removed.connect(self.reset_choices)
        layers.removed.connect(self._on_layer_removed)
        layers.moved.connect(self.reset_choices)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.reset_choices)

    # --- choices ---------------------------------------------------------------------

    def _on_layer_inserted(self, event) -> None:
        event.value.events.name.connect(self.reset_choices)
        self.reset_choices()

    def reset_choices(self, *_args) -> None:
        """The lists of layers follow the viewer (napari calls this on every layer
        event); model files and concepts are scanned again only when asked
        (:meth:`rescan`) or when a checkpoint is saved, never on a layer event."""
        for name in LAYER_COMBOS:
            getattr(self, name).reset_choices()
        self.update_visibility()

    def rescan(self, *_args) -> None:
        """Every list again: checkpoint folders, model files and concepts too."""
        super().reset_choices()
        self.update_visibility()

    #: The summary of the last folder run (see :func:`napari_slip.batch`), or None.
    last_batch = property(lambda self: self.folder_results.summary)
    # The pickers' own: scripts and tests offer model files through the dock.
    add_sam_file = property(lambda self: self.models.add_sam_file)
    add_clip_file = property(lambda self: self.models.add_clip_file)
    add_checkpoint_folder = property(lambda self: self.models.add_checkpoint_folder)
    add_decoder_file = property(lambda self: self.models.add_decoder_file)
    files = property(lambda self: self.models.files)

    def update_visibility(self, *_args) -> None:
        """Show each field of the dock only where it does something."""
        teaching = getattr(self, "teaching", None)  # None while the dock is being made
        self.selection.update(concept=teaching is not None and teaching.chosen_name() is not None)
        self.replace_existing.visible = self.output.value is not None
        layer = self.image.value
        self.colour.update(layer)
        # The decoder matters only where the relevance map is used.
        self.decoder.visible = (
            isinstance(self.proposals.value, str)
            or bool(self.show_relevance.value)
            or float(self.relevance_weight.value) > 0
        )
        if not self.busy:  # micro-sam's SAM and BiomedCLIP, suggested while it is free
            hint = form.suggests_microscopy_models(layer, self.sam.value, self.clip.value)
            if hint and not self.status.value:
                self.status.value = form.MICROSCOPY_HINT
            elif not hint and self.status.value == form.MICROSCOPY_HINT:
                self.status.value = ""
        if layer is None:
            self.scope.visible = False
            return
        try:
            data, colour = source(self.request())
            self.scope.visible = bool(leading_shape(data.shape, colour))
        except SlipError:  # e.g. an invalid channel choice: Run will say why
            self.scope.visible = layer.ndim > 2

    def lower_filters(self) -> None:
        """SAM's filters left no candidate: Min IoU 0.5 and Min stability 0.7 (half the
        current value where it is lower already), shown in the Advanced settings; Run."""
        for name, relaxed in (("pred_iou_thresh", 0.5), ("stability_score_thresh", 0.7)):
            field = getattr(self, name)
            field.value = relaxed if field.value > relaxed else round(field.value / 2, 3)
        self.show_advanced.value = True
        self.run()

    # --- requests ----------------------------------------------------------------------

    def request(self) -> Request:
        """The current inputs as a :class:`Request`."""
        proposals = self.proposals.value
        template = self.template.value.strip()
        exact = EXACT_SAM if self.exact.value else {}
        given = {cls: {n: getattr(self, n) for n in cls.shown()} for cls in form.SHOWN}
        options = {
            **self.selection.options(),
            "proposals": proposals if isinstance(proposals, str) else "sam",
            "decoder": self.decoder.value,
            "link": self.scope.value != SCOPES[2],
            "sam": str(self.sam.value),
            "clip": str(self.clip.value),
            "device": str(self.device.value),
            "precision": "fp32" if self.exact.value else "auto",
            # Exact: SAM's own generator (SamProposalParams.exact()), in fp32.
            "sam_params": params_from(SamProposalParams, given[SamProposalParams], **exact),
            "crop_params": params_from(CropParams, given[CropParams]),
            "tile_params": params_from(TileParams, given[TileParams]),
            "templates": (template,) if template else None,
            "relevance": bool(self.show_relevance.value),
        }
        return Request(
            image_layer=self.image.value,
            prompt=self.prompt.value.strip(),
            options=options,
            labels_layer=None if isinstance(proposals, str) else proposals,
            **self.colour.request_fields(),
            all_planes=self.scope.value != SCOPES[0],
            axis_labels=tuple(self.viewer.dims.axis_labels),
            world_point=tuple(self.viewer.dims.point),
            concept=self.teaching.chosen(),
        )

    def run_on_folder(self, *_args) -> None:
        """Segment every image of the chosen folder in a worker (progress, Cancel).

        Cancel stops between images: those written stay, and the next run resumes.
        """
        from ..core.batches import iter_batch

        if self.busy:
            return
        try:
            folders = (self.folder_in.value, self.folder_out.value)
            config, images, out = self.session.folder_run(self.request(), *folders)
        except Exception as exc:
            self.show_error(exc)
            return
        self.results.clear()  # the panel showed the last image, not this folder
        self._folder_running = True
        self.start_worker(
            iter_batch,
            [images],
            out,
            config,
            workers=int(self.folder_workers.value),
            on_result=self.folder_results.show,  # the panel's summary; images as layers
            status=f"segmenting the images of {images.name}…",
        )

    def _on_cancelled(self) -> None:
        super()._on_cancelled()
        if self._folder_running:
            self.status.value = (
                "Cancelled; the images done so far are kept, and running again resumes."
            )

    def _on_finished(self) -> None:
        super()._on_finished()
        self._folder_running = False

    def run(self, *_args) -> None:
        """Segment with the current inputs in a worker (quick when the image is cached).

        The GUI thread only gathers and checks inputs: normalising and hashing the
        image, and every model call, happen in the worker.
        """
        if self.busy:
            return
        try:
            request = self.request()
            config = self.session.prepare(request)  # the run's one configuration
        except Exception as exc:  # shown to the user as one line, never a traceback
            self.show_error(exc)
            return
        self.start_worker(
            self.session.iter_segment,
            request,
            config,
            on_result=lambda result: self._deliver(request, result),
        )

    def _deliver(self, request: Request, result) -> None:
        try:
            self.session.deliver(
                request,
                result,
                self.output.value,
                replace_labels=bool(self.replace_existing.value),
            )
        except Exception as exc:
            self.show_error(exc)
            return
        self.progress.value = self.progress.max
        self.show_outcome(result, request, notify=True)
        self.edits.update()
        self.suggest.update()

    def show_outcome(self, result, request: Request, notify: bool = False) -> None:
        """Show a result: the status line, the results panel, the threshold's range."""
        last = self.session.last
        layer = last.layer if last is not None else None
        message = result.message_for("widget")
        if not result.n_objects and last is not None and last.created and layer is None:
            message = f"{sentence(message)} No layer was added."
        self.status.value = message
        floor = (result.config or request.config()).selection.floor  # the run's own
        self.results.show_result(self.viewer, layer, result, floor)
        form.fit_threshold(self.threshold, *self.results.histogram.range())
        if notify and not result.n_objects:  # a run, not every tick of the slider
            post(message)
        elif result.n_objects:  # "nothing found" no longer describes the screen
            dismiss_stale()

    def _forget_last(self, *_args, layer=None) -> None:
        """The status and results no longer describe the screen: clear them."""
        if self.busy or not self.session.forget(layer):
            return
        self.results.clear()
        self.status.value = ""
        self.reset_progress()

    def _on_layer_removed(self, event) -> None:
        self._forget_last(layer=event.value)

    def _reselect(self, *_args) -> None:
        """Update the last created layer when selection settings change: no image or
        model work, a text encoding at most (for new distractors), so it runs here."""
        if self.busy or self.session.last is None:
            return
        try:
            outcome = self.session.reselect(self.request())
        except SlipError as exc:
            self.status.value = f"Error: {one_line(exc)}"
            return
        if isinstance(outcome, str):
            self.status.value = outcome
        elif outcome is not None:
            self.show_outcome(*outcome)
