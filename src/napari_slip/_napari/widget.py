"""The dock widget: a prompt field and a Run button over the engine.

All inference runs in a napari thread worker; the GUI thread only gathers inputs,
shows progress and writes the finished labels. Changing the prompt, mode, threshold,
distractors or top-k on an image whose proposals are embedded re-selects on the spot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
)

from ..core.errors import InputError, SlipError
from ..core.models.registry import SAM_MODELS, available_devices
from ..core.params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    DEFAULT_THRESHOLD,
    FILLS,
    TILING,
    CropParams,
    SamProposalParams,
    SelectionParams,
    TileParams,
    parse_phrases,
)
from ..core.pipeline.stack import StackResult, leading_shape, reselect_stack
from ..core.runtime.perf import tune_allocator
from .choices import (
    ADD_FOLDER,
    CHOOSE_FILE,
    ask_clip_choice,
    clip_choices,
    clip_tooltip,
    decoder_choices,
    decoder_tooltip,
    events,
    offer,
)
from .job import Request, check, configure, iter_job, source, spatial_axes
from .layers import new_labels_layer, replace_layer_data, show_relevance_layer, write_into_layer
from .panel import WorkerPanel, compact, one_line
from .results_panel import ResultsPanel

if TYPE_CHECKING:
    import napari

MODE_CHOICES = [
    ("best match", "best"),
    ("above threshold", "threshold"),
    ("beats distractors", "distractors"),
    ("top k", "topk"),
]
MODE_TIPS = {
    "best": "The single candidate most similar to the prompt (SLIP).",
    "threshold": "Every candidate whose similarity is at least the threshold.",
    "distractors": "Every candidate more like the prompt than like any distractor phrase or "
    "the background.",
    "topk": "The k candidates most similar to the prompt.",
}


@dataclass
class _Output:
    """The last run's output, so re-selection can update it.

    ``layer`` is None when nothing was found (no empty layer is added); a later
    re-selection that finds objects creates it.
    """

    request: Request
    layer: Any
    created: bool
    result: StackResult


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
        self.viewer = napari_viewer
        self._segmenter = None
        self._last: _Output | None = None
        #: The summary of the last folder run (see :func:`napari_slip.batch`).
        self.last_batch = None
        self._folder_running = False
        self._sam_files: list[str] = []
        self._clip_files: list[str] = []
        self._clip_folders: list[str] = []

        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.prompt = LineEdit(label="Prompt", value="")
        self.prompt.native.setPlaceholderText("what to segment, e.g. nucleus (Enter runs)")
        self.mode = ComboBox(label="Selection", choices=MODE_CHOICES, value="best")
        self.threshold = FloatSlider(
            label="Threshold", min=-1.0, max=1.0, step=0.005, value=DEFAULT_THRESHOLD
        )
        self.threshold.tooltip = SelectionParams.help("threshold")
        self.use_floor = CheckBox(text="Use threshold as a floor", value=False)
        self.use_floor.tooltip = (
            "In best, top-k and distractors modes: keep nothing that scores below the "
            "threshold (so an absent object gives 'nothing found')."
        )
        self.distractors = LineEdit(label="Distractors", value="")
        self.distractors.native.setPlaceholderText("comma-separated, e.g. debris, dust")
        self.top_k = SpinBox(
            label="Top k", min=1, max=10000, value=SelectionParams.default("top_k")
        )
        self.proposals = ComboBox(label="Proposals", choices=self._proposal_choices)
        self.sam = ComboBox(label="SAM", choices=self._sam_choices, value=DEFAULT_SAM)
        self.clip = ComboBox(label="CLIP", choices=self._clip_choices, value=DEFAULT_CLIP)
        self._decoder_files: list[str] = []
        self.decoder = ComboBox(label="Decoder", choices=self._decoder_choices, value=None)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.green = ComboBox(label="Green from", choices=self._colour_choices)
        self.blue = ComboBox(label="Blue from", choices=self._colour_choices)
        self.channel_axis = ComboBox(label="Channel axis", choices=self._channel_axis_choices)
        self.channels = LineEdit(label="Channels as RGB", value="")
        self.channels.native.setPlaceholderText("e.g. 0,2 (default: the first three)")
        self.scope = ComboBox(label="Planes", choices=["current slice", "all slices"])
        self.output = ComboBox(label="Output", choices=self._output_choices)
        self.replace_existing = CheckBox(text="Replace overlapping labels", value=False)
        self.show_relevance = CheckBox(text="Relevance map layer", value=False)
        self.show_relevance.tooltip = (
            "Also show where the prompt matches, pixel by pixel: the trained decoder's "
            "probability, or without one CLIP's untrained, coarse patch similarity (2D "
            "images; the next prompt on the same image is quick)."
        )
        self.relevance_weight = FloatSpinBox(
            label="Relevance weight",
            min=0,
            max=1,
            step=0.05,
            value=SelectionParams.default("relevance_weight"),
        )
        self.relevance_weight.tooltip = SelectionParams.help("relevance_weight")
        self.replace_existing.tooltip = (
            "Write new objects over existing labels where they overlap (undo with Ctrl+Z); "
            "unticked, existing labels are kept."
        )
        self.show_advanced = CheckBox(text="Advanced settings", value=False)
        sam_default = SamProposalParams()
        self.points_per_side = SpinBox(
            label="Points/side", min=1, max=128, value=sam_default.points_per_side
        )
        self.pred_iou = FloatSpinBox(
            label="Min IoU",
            min=0,
            max=1,
            step=0.01,
            value=sam_default.pred_iou_thresh,
        )
        self.stability = FloatSpinBox(
            label="Min stability",
            min=0,
            max=1,
            step=0.01,
            value=sam_default.stability_score_thresh,
        )
        self.exact = CheckBox(text="Exact SAM (fp32)", value=False)
        self.exact.tooltip = "Slower; gives SAM's own masks (default: bf16 where the CPU has it)."
        self.skip_covered = CheckBox(text="Skip covered points", value=sam_default.skip_covered)
        self.min_area = SpinBox(
            label="Min area (px)", min=0, max=10**7, value=sam_default.min_area
        )
        self.fill = ComboBox(label="Crop fill", choices=list(FILLS), value=CropParams().fill)
        self.margin = FloatSpinBox(
            label="Crop margin", min=0, max=2, step=0.05, value=CropParams().margin
        )
        for widget, cls, name in (
            (self.points_per_side, SamProposalParams, "points_per_side"),
            (self.pred_iou, SamProposalParams, "pred_iou_thresh"),
            (self.stability, SamProposalParams, "stability_score_thresh"),
            (self.min_area, SamProposalParams, "min_area"),
            (self.skip_covered, SamProposalParams, "skip_covered"),
            (self.fill, CropParams, "fill"),
            (self.margin, CropParams, "margin"),
        ):
            widget.tooltip = cls.help(name)
        self.tiles = ComboBox(label="Tiles", choices=list(TILING), value=TileParams().tiles)
        self.tiles.tooltip = (
            "SAM tile by tile at full resolution, for large images whose small objects "
            "vanish when the image is shrunk (auto: above 2,048 px)."
        )
        self.tile_overlap = SpinBox(
            label="Tile overlap (px)", min=0, max=4096, value=TileParams().overlap
        )
        self.tile_overlap.tooltip = TileParams.help("overlap")
        self.template = LineEdit(label="Template", value="")
        self.template.native.setPlaceholderText("a photo of {}.")
        self.template.tooltip = (
            "How the prompt becomes text for CLIP; empty: the checkpoint's own."
        )
        self.rescan = PushButton(text="Rescan checkpoints")
        self.advanced = Container(
            widgets=[
                self.points_per_side,
                self.pred_iou,
                self.stability,
                self.min_area,
                self.exact,
                self.skip_covered,
                self.show_relevance,
                self.relevance_weight,
                self.tiles,
                self.tile_overlap,
                self.fill,
                self.margin,
                self.template,
                self.rescan,
            ],
            labels=True,
        )
        # Folder mode: the same prompt, selection and models over a folder of images.
        self.show_folder = CheckBox(text="Segment a folder of images", value=False)
        self.folder_in = FileEdit(label="Images", mode="d")
        self.folder_in.tooltip = (
            "A folder of .tif, .png, .jpg or .zarr images (searched recursively)."
        )
        self.folder_out = FileEdit(label="Save to", mode="d")
        self.folder_out.tooltip = (
            "Label images (same relative names, .tif), objects.csv and summary.json. "
            "Running again resumes: images done with the same settings are skipped."
        )
        self.folder_workers = SpinBox(label="Workers", min=1, max=64, value=1)
        self.folder_workers.tooltip = (
            "Worker processes (a local Dask cluster); 1 runs inside napari."
        )
        self.run_folder = PushButton(text="Run on folder")
        self.folder = Container(
            widgets=[self.folder_in, self.folder_out, self.folder_workers, self.run_folder],
            labels=True,
        )
        for widget in self.advanced:
            native = widget.native
            if hasattr(native, "setMinimumWidth") and hasattr(native, "setMaximumWidth"):
                native.setMinimumWidth(60)
        self.results = ResultsPanel()
        self.extend(
            [
                self.image,
                self.prompt,
                self.mode,
                self.threshold,
                self.use_floor,
                self.distractors,
                self.top_k,
                self.green,
                self.blue,
                self.channel_axis,
                self.channels,
                self.proposals,
                self.sam,
                self.clip,
                self.decoder,
                self.device,
                self.scope,
                self.output,
                self.replace_existing,
                self.show_advanced,
                self.show_folder,
                *self.controls(),
            ]
        )
        # Full width under the form (not in a labelled row): the table needs the room.
        self.native.layout().addWidget(self.results.native)
        self.native.layout().addStretch(1)  # spare height goes below, not between rows
        self.advanced_area = self.add_collapsible(self.show_advanced, self.advanced)
        self.folder_area = self.add_collapsible(self.show_folder, self.folder, max_height=180)
        self._compact()

        self.prompt.native.returnPressed.connect(self.run)
        self.show_advanced.changed.connect(lambda show: self.advanced_area.setVisible(show))
        self.show_folder.changed.connect(lambda show: self.folder_area.setVisible(show))
        self.run_folder.changed.connect(self.run_on_folder)
        self.rescan.changed.connect(self.reset_choices)
        self.sam.changed.connect(self._on_sam_choice)
        self.clip.changed.connect(self._on_clip_choice)
        self.decoder.changed.connect(self._on_decoder_choice)
        for widget in (self.channel_axis, self.green, self.blue):
            self.image.changed.connect(widget.reset_choices)
        for widget in (self.mode, self.output, self.image, self.channel_axis, self.green):
            widget.changed.connect(self._update_visibility)
        for widget in (self.use_floor, self.proposals, self.show_relevance, self.relevance_weight):
            widget.changed.connect(self._update_visibility)
        for widget in (
            self.mode,
            self.threshold,
            self.use_floor,
            self.distractors,
            self.top_k,
            self.relevance_weight,
        ):
            widget.changed.connect(self._reselect)
        self.threshold.changed.connect(self._on_threshold)
        self.image.changed.connect(self._forget_last)
        layers = self.viewer.layers.events
        layers.inserted.connect(self._on_layer_inserted)
        layers.removed.connect(self.reset_choices)
        layers.removed.connect(self._on_layer_removed)
        layers.moved.connect(self.reset_choices)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.reset_choices)
        events.checkpoint_saved.connect(self._on_checkpoint_saved)
        self.native.destroyed.connect(
            lambda *_: events.checkpoint_saved.disconnect(self._on_checkpoint_saved)
        )
        self._update_visibility()

    # --- choices ---------------------------------------------------------------------

    def _layers(self, kind: str) -> list:
        return [layer for layer in self.viewer.layers if type(layer).__name__ == kind]

    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self._layers("Image")]

    def _proposal_choices(self, _widget=None):
        return [
            ("SAM automatic masks", None),
            ("Fast: guided by the prompt", "guided"),
            ("Relevance map regions (no SAM)", "relevance"),
        ] + [(f"labels: {layer.name}", layer) for layer in self._layers("Labels")]

    def _output_choices(self, _widget=None):
        return [("New Labels layer", None)] + [
            (f"add to: {layer.name}", layer) for layer in self._layers("Labels")
        ]

    def _colour_choices(self, _widget=None):
        """Other single-channel Image layers that can join the image as green or blue."""
        image = self.image.value if hasattr(self, "image") else None
        others = [x for x in self._layers("Image") if x is not image and not x.rgb]
        return [("none", None)] + [(x.name, x) for x in others]

    def _channel_axis_choices(self, _widget=None):
        layer = self.image.value if hasattr(self, "image") else None
        choices = [("none (grayscale or RGB)", None)]
        if layer is not None and not layer.rgb and layer.ndim >= 3:
            shape = layer.data[0].shape if layer.multiscale else layer.data.shape
            choices += [(f"axis {a} ({shape[a]} channels)", a) for a in range(layer.ndim - 2)]
        return choices

    def _channels(self) -> tuple[int, ...] | None:
        text = self.channels.value.strip()
        if not text:
            return None
        try:
            return tuple(int(c) for c in text.split(",") if c.strip())
        except ValueError:
            raise InputError(
                f"Channels must be comma-separated numbers, e.g. 0,2; got {text!r}."
            ) from None

    def _sam_choices(self, _widget=None):
        return (
            [(name, name) for name in SAM_MODELS]
            + [(Path(p).name, p) for p in self._sam_files]
            + [("Choose a file…", CHOOSE_FILE)]
        )

    def _clip_choices(self, _widget=None):
        return clip_choices(self._clip_files, self._clip_folders)

    def _decoder_choices(self, _widget=None):
        return decoder_choices(self._decoder_files, self._clip_folders)

    def _on_checkpoint_saved(self, _path: str) -> None:
        self.clip.reset_choices()
        self.decoder.reset_choices()

    def _on_layer_inserted(self, event) -> None:
        event.value.events.name.connect(self.reset_choices)
        self.reset_choices()

    def reset_choices(self, *_args) -> None:
        super().reset_choices()
        self._update_visibility()

    def add_sam_file(self, path: str | Path) -> None:
        """Offer a SAM checkpoint file in the SAM picker and select it."""
        offer(self.sam, self._sam_files, path)

    def add_clip_file(self, path: str | Path) -> None:
        """Offer a CLIP checkpoint file in the CLIP picker and select it."""
        offer(self.clip, self._clip_files, path)

    def add_checkpoint_folder(self, folder: str | Path) -> None:
        """Scan another folder for fine-tuned CLIP checkpoints and trained decoders."""
        offer(self.clip, self._clip_folders, folder, select=False)
        self.decoder.reset_choices()

    def add_decoder_file(self, path: str | Path) -> None:
        """Offer a trained decoder file in the decoder picker and select it."""
        offer(self.decoder, self._decoder_files, path)

    def _on_decoder_choice(self, value) -> None:
        self.decoder.tooltip = decoder_tooltip(value)
        if value != CHOOSE_FILE:
            return
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Trained decoder", "", "napari-slip decoder (*.safetensors)"
        )
        if path:
            self.add_decoder_file(path)
        else:
            self.decoder.value = None

    def _on_sam_choice(self, value) -> None:
        if value != CHOOSE_FILE:
            return
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "SAM checkpoint", "", "Checkpoints (*.pth *.pt *.safetensors)"
        )
        if path:
            self.add_sam_file(path)
        else:
            self.sam.value = DEFAULT_SAM

    def _on_clip_choice(self, value) -> None:
        if value not in (CHOOSE_FILE, ADD_FOLDER):
            return
        chosen = ask_clip_choice(self.native, value)
        if chosen is not None and chosen[0] == "file":
            self.add_clip_file(chosen[1])
            return
        if chosen is not None:
            self.add_checkpoint_folder(chosen[1])
        self.clip.value = DEFAULT_CLIP

    def _compact(self) -> None:
        """Keep the dock narrow: long choice texts elide, details live in tooltips."""
        compact(
            self.image,
            self.mode,
            self.proposals,
            self.sam,
            self.clip,
            self.decoder,
            self.device,
            self.green,
            self.blue,
            self.channel_axis,
            self.scope,
            self.output,
            self.fill,
        )
        self.mode.tooltip = "\n".join(f"{label}: {MODE_TIPS[v]}" for label, v in MODE_CHOICES)
        self.sam.tooltip = "\n".join(
            f"{name}: {w.description}, {w.size_mb} MB" for name, w in SAM_MODELS.items()
        )
        self.clip.tooltip = clip_tooltip(self.clip.value)
        self.decoder.tooltip = decoder_tooltip(self.decoder.value)
        self.clip.changed.connect(lambda v: setattr(self.clip, "tooltip", clip_tooltip(v)))

    def _update_visibility(self, *_args) -> None:
        mode = self.mode.value
        self.distractors.visible = mode == "distractors"
        self.top_k.visible = mode == "topk"
        self.use_floor.visible = mode != "threshold"
        # The threshold does something only in threshold mode or as a floor.
        self.threshold.enabled = mode == "threshold" or bool(self.use_floor.value)
        self.replace_existing.visible = self.output.value is not None
        layer = self.image.value
        single = layer is not None and not layer.rgb
        self.green.visible = single and len(self.green.choices) > 1
        self.blue.visible = self.green.visible and self.green.value is not None
        self.channel_axis.visible = len(self.channel_axis.choices) > 1
        self.channels.visible = self.channel_axis.value is not None
        # The decoder matters only where the relevance map is used.
        self.decoder.visible = (
            isinstance(self.proposals.value, str)
            or bool(self.show_relevance.value)
            or float(self.relevance_weight.value) > 0
        )
        if layer is None:
            self.scope.visible = False
            return
        try:
            data, colour = source(self.request())
            self.scope.visible = bool(leading_shape(data.shape, colour))
        except SlipError:  # e.g. an invalid channel choice: the Run button will say why
            self.scope.visible = layer.ndim > 2

    # --- requests ----------------------------------------------------------------------

    def request(self) -> Request:
        """The current inputs as a :class:`Request`."""
        mode = self.mode.value
        threshold = self.threshold.value if (mode == "threshold" or self.use_floor.value) else None
        template = self.template.value.strip()
        return Request(
            image_layer=self.image.value,
            prompt=self.prompt.value.strip(),
            mode=mode,
            threshold=threshold,
            top_k=int(self.top_k.value),
            distractors=parse_phrases(self.distractors.value),
            labels_layer=None if isinstance(self.proposals.value, str) else self.proposals.value,
            proposals=self.proposals.value if isinstance(self.proposals.value, str) else "sam",
            decoder=self.decoder.value,
            relevance_weight=float(self.relevance_weight.value),
            channel_axis=self.channel_axis.value,
            channels=self._channels(),
            colour_layers=tuple(x for x in (self.green.value, self.blue.value) if x is not None),
            all_planes=self.scope.value == "all slices",
            world_point=tuple(self.viewer.dims.point),
            sam=str(self.sam.value),
            clip=str(self.clip.value),
            device=str(self.device.value),
            precision="fp32" if self.exact.value else "auto",
            sam_params=replace(
                SamProposalParams(),
                points_per_side=int(self.points_per_side.value),
                pred_iou_thresh=float(self.pred_iou.value),
                stability_score_thresh=float(self.stability.value),
                min_area=int(self.min_area.value),
                skip_covered=bool(self.skip_covered.value) and not self.exact.value,
            ),
            crop_params=CropParams(fill=self.fill.value, margin=float(self.margin.value)),
            tile_params=TileParams(tiles=self.tiles.value, overlap=int(self.tile_overlap.value)),
            templates=(template,) if template else None,
            relevance=bool(self.show_relevance.value),
        )

    def folder_config(self):
        """The folder run's settings: this widget's prompt, selection and models."""
        from ..core.batches import BatchConfig

        request = self.request()
        if not request.prompt:
            raise InputError("Type a prompt first: what to segment in every image.")
        return BatchConfig(
            prompt=request.prompt,
            sam=request.sam,
            clip=request.clip,
            device=request.device,
            precision=request.precision,
            sam_params=request.sam_params,
            crop_params=request.crop_params,
            tile_params=request.tile_params,
            selection=request.selection(),
            templates=request.templates,
            proposals=request.proposals,
            decoder=request.decoder,
            guided_params=request.guided_params,
        )

    def run_on_folder(self, *_args) -> None:
        """Segment every image of the chosen folder in a worker (progress, Cancel).

        Cancel stops between images: those written stay, and the next run resumes.
        """
        from ..core.batches import iter_batch

        if self.busy:
            return
        try:
            config = self.folder_config()
            images, out = Path(self.folder_in.value), Path(self.folder_out.value)
            if str(self.folder_in.value) in ("", ".") or not images.is_dir():
                raise InputError("Choose the folder of images to segment.")
            if str(self.folder_out.value) in ("", ".") or out.resolve() == images.resolve():
                raise InputError("Choose another folder to save the labels in.")
        except Exception as exc:
            self.show_error(exc)
            return
        self._folder_running = True
        self.start_worker(
            iter_batch,
            [images],
            out,
            config,
            workers=int(self.folder_workers.value),
            on_result=self._folder_done,
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

    def _folder_done(self, summary) -> None:
        from napari.utils.notifications import show_info

        self.last_batch = summary
        self.status.value = f"{summary.sentence()} Saved in {summary.out_dir}."
        show_info(self.status.value)

    def run(self, *_args) -> None:
        """Segment with the current inputs in a worker (quick when the image is cached).

        The GUI thread only gathers and checks inputs: normalising and hashing the
        image, and every model call, happen in the worker.
        """
        if self.busy:
            return
        try:
            request = self.request()
            check(request)
            self._segmenter = configure(self._segmenter, request)
        except Exception as exc:  # shown to the user as one line, never a traceback
            self.show_error(exc)
            return
        self._start_worker(request)

    def _start_worker(self, request: Request) -> None:
        self.start_worker(
            iter_job,
            self._segmenter,
            request,
            on_result=lambda result: self._deliver(request, result),
        )

    def _deliver(self, request: Request, result) -> None:
        try:
            target = self.output.value
            if target is None:
                layer = self._new_layer(request, result) if result.n_objects else None
                self._last = _Output(request, layer, created=True, result=result)
            else:
                write_into_layer(target, result, replace=bool(self.replace_existing.value))
                self._last = _Output(request, target, created=False, result=result)
        except Exception as exc:
            self.show_error(exc)
            return
        if request.labels_layer is not None and request.labels_layer in self.viewer.layers:
            # Dropped proposals would look selected: hide the proposals layer.
            request.labels_layer.visible = False
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
        self.progress.value = self.progress.max
        self._show_outcome(result, request, notify=True)

    def _new_layer(self, request: Request, result):
        name = f"{request.prompt} ({request.image_layer.name})"
        axes = spatial_axes(request)
        return new_labels_layer(self.viewer, result, request.image_layer, name, axes)

    def _show_outcome(self, result, request: Request, notify: bool = False) -> None:
        last = self._last
        layer = last.layer if last is not None else None
        message = result.message
        if not result.n_objects and last is not None and last.created and layer is None:
            message += " No layer was added."
        self.status.value = message
        self.results.show_result(self.viewer, layer, result, request.selection().floor)
        if notify and not result.n_objects:  # a run, not every tick of the slider
            from napari.utils.notifications import show_info

            show_info(message)

    def _on_threshold(self, value: float) -> None:
        """The histogram's threshold line follows the slider, even before a re-run."""
        if self.threshold.enabled:
            self.results.histogram.set_threshold(float(value))

    def _forget_last(self, *_args) -> None:
        """The status and results no longer describe the screen: clear them."""
        if self.busy:
            return
        self._last = None
        self.results.clear()
        self.status.value = ""
        self.reset_progress()

    def _on_layer_removed(self, event) -> None:
        last = self._last
        if last is None:
            return
        removed = event.value
        if removed is last.layer or removed is last.request.image_layer:
            self._forget_last()

    # --- instant re-selection ------------------------------------------------------------

    def _reselect(self, *_args) -> None:
        """Update the last created layer when selection settings change.

        Selection works on the candidates the last run kept: no image or model work,
        a text encoding at most (for new distractors), so it runs right here.
        """
        last = self._last
        if self.busy or last is None or not last.created:
            return
        if last.layer is not None and last.layer not in self.viewer.layers:
            return
        current = self.request()
        # The layer keeps its prompt; a new prompt (Enter) makes a new layer.
        request = replace(
            last.request,
            mode=current.mode,
            threshold=current.threshold,
            top_k=current.top_k,
            distractors=current.distractors,
            relevance_weight=current.relevance_weight,
        )
        if request.selection() == last.request.selection():
            return
        if self._segmenter is None or self._segmenter.models != request.models:
            self.status.value = "Settings changed: press Run to apply."
            return
        try:
            result = reselect_stack(self._segmenter, last.result, request.selection())
        except SlipError as exc:
            self.status.value = f"Error: {one_line(exc)}"
            return
        if last.layer is not None:
            replace_layer_data(last.layer, result)
        elif result.n_objects:  # the first run found nothing; now something passes
            last.layer = self._new_layer(request, result)
        last.request, last.result = request, result
        self._show_outcome(result, request)
