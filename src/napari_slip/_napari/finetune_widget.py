"""Dock widget: fine-tune CLIP, or train a decoder, on the current Image + Labels layers.

Each label (or group of labels) gets a class name. Fine-tuning CLIP: every labelled
object becomes the same masked crop the segmenter scores. Training a decoder (seed
003): each plane and its class masks teach a small decoder on the frozen CLIP to draw
the mask of a class name. Training runs in a thread worker with progress and Cancel;
the file lands in the checkpoint folder, where the CLIP and Decoder pickers find it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    SpinBox,
    TextEdit,
)

from ..core.errors import InputError
from ..core.models.download import checkpoint_dir
from ..core.models.registry import available_devices
from ..core.params import DEFAULT_CLIP, CropParams, DecoderParams
from ..core.pipeline.stack import leading_shape
from ..core.runtime.progress import Progress
from ..core.training.datasets import DatasetImage, Pairs, pairs_from_arrays
from ..core.training.decoder import iter_train_decoder_to_file
from ..core.training.finetune import FinetuneParams, iter_finetune_to_file
from .choices import ADD_FOLDER, CHOOSE_FILE, ask_clip_choice, clip_choices, events, offer
from .class_names import ClassClicks, classes_from_features, parse_classes
from .fields import param_widget, params_from
from .job import image_data
from .panel import WorkerPanel, compact, wrap

if TYPE_CHECKING:
    import napari


#: The Labels choice meaning "every Labels layer is one class, named like the layer".
PER_LAYER = "__per_layer__"


def class_counts(pairs_plan: list[tuple[np.ndarray, dict[int, str]]]) -> dict[str, int]:
    """Objects per class in ``[(labels, {label: class}), ...]``."""
    counts: dict[str, int] = {}
    for labels, mapping in pairs_plan:
        present = np.unique(np.asarray(labels))
        for value in present[present > 0]:
            cls = mapping.get(int(value))
            if cls is not None:
                counts[cls] = counts.get(cls, 0) + 1
    return dict(sorted(counts.items()))


def make_pairs(image_layer, plan, crops: CropParams) -> Pairs:
    """Crops of every classified object in every plane of ``image_layer``, with their
    classes (``plan``: the labels layers and their classes)."""
    data = image_data(image_layer)
    limits = tuple(float(v) for v in image_layer.contrast_limits)
    lead = leading_shape(data.shape, bool(image_layer.rgb))
    pairs = Pairs()
    for layer, mapping in plan:
        for plane in np.ndindex(*lead) if lead else [()]:
            labels = np.asarray(layer.data[plane])
            if not labels.any():
                continue
            pairs.extend(
                pairs_from_arrays(
                    np.asarray(data[plane]),
                    labels,
                    mapping,
                    crops,
                    group=f"{image_layer.name}{plane}",
                    contrast_limits=limits,
                    rgb=bool(image_layer.rgb) or None,
                )
            )
    if len(set(pairs.classes)) < 2:
        raise InputError(
            f"Found {len(pairs)} classified object(s) of {len(set(pairs.classes))} class(es); "
            "fine-tuning needs objects of at least two classes."
        )
    return pairs


def make_dataset_images(image_layer, plan) -> list[DatasetImage]:
    """Every plane with classified objects, as the decoder trains on it: the image
    through the layer's contrast limits (as segmenting sees it), its labels and their
    classes."""
    from ..core.pipeline.images import prepare_image

    data = image_data(image_layer)
    limits = tuple(float(v) for v in image_layer.contrast_limits)
    lead = leading_shape(data.shape, bool(image_layer.rgb))
    items = []
    for plane in np.ndindex(*lead) if lead else [()]:
        planes = [(np.asarray(layer.data[plane]), mapping) for layer, mapping in plan]
        planes = [(labels, mapping) for labels, mapping in planes if labels.any()]
        if not planes:
            continue
        rgb = prepare_image(
            np.asarray(data[plane]),
            contrast_limits=limits,
            rgb=bool(image_layer.rgb) or None,
        ).rgb
        for n, (labels, mapping) in enumerate(planes):
            present = {int(v) for v in np.unique(labels) if v}
            classes = {k: v for k, v in mapping.items() if k in present}
            if classes:
                name = f"{image_layer.name}{plane}" + (f"-{n}" if len(planes) > 1 else "")
                items.append(DatasetImage(name, rgb, labels, classes))
    if not items:
        raise InputError("No classified objects yet: label some and name their classes.")
    return items


def _iter_built(build, train, *args, **kwargs):
    """In the worker: make the training data (crops or planes), then train on it."""
    yield Progress("preparing", 0, 1, "making the crops of every object", heavy=True)
    data = build()
    yield Progress("preparing", 1, 1, f"{len(data)} examples")
    return (yield from train(data, *args, **kwargs))


class FinetuneWidget(WorkerPanel):
    """Fine-tune CLIP from the objects of a Labels layer and their class names."""

    cancelled_message = "Cancelled; no checkpoint was written."

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__("Fine-tune")
        self.viewer = napari_viewer
        self._clip_files: list[str] = []
        self._clip_folders: list[str] = []
        self.last_checkpoint = None

        self.image = ComboBox(label="Image", choices=self._layer_choices("Image"))
        self.labels = ComboBox(label="Labels", choices=self._labels_choices)
        self.labels.tooltip = (
            "One Labels layer with classes (typed below, or a 'class' column in its "
            "features), or 'one layer per class': each Labels layer of the image's shape "
            "is a class named like the layer."
        )
        self.classes = TextEdit(label="Classes", value="")
        self.classes.native.setPlaceholderText("nucleus: 1-5, 9\nmitotic: 6, 7")
        self.classes.native.setFixedHeight(4 * self.classes.native.fontMetrics().lineSpacing())
        self.classes.tooltip = (
            "Which labels are which class, one class per line (or click objects, below). "
            "Empty: the layer's 'class' feature (editable in napari's features table)."
        )
        self.clicks = ClassClicks(self)
        self.preview = Label(value="")
        wrap(self.preview)
        self.base = ComboBox(label="Start from", choices=self._base_choices, value=DEFAULT_CLIP)
        self.target = ComboBox(
            label="Make",
            value="clip",
            choices=[("fine-tuned CLIP", "clip"), ("decoder (text → mask)", "decoder")],
        )
        self.target.tooltip = (
            "fine-tuned CLIP: CLIP learns your classes (better scores for SAM's masks). "
            "decoder: a small network on the frozen CLIP learns to draw your classes' "
            "masks; use it in the segment widget's Decoder picker (relevance map, guided "
            "and relevance proposals)."
        )
        self.name = LineEdit(label="Save as", value="")
        self.name.native.setPlaceholderText("checkpoint name (default: from the image name)")
        self.template = LineEdit(label="Template", value="a photo of {}.")
        self.train = ComboBox(
            label="Train",
            value="last",
            choices=[("last blocks", "last"), ("projections", "proj"), ("everything", "all")],
        )
        self.train.tooltip = (
            "last blocks: the last transformer blocks and projections (default); "
            "projections: fastest, least forgetting; everything: most capacity."
        )
        self.paraphrases = LineEdit(label="Paraphrases", value="")
        self.paraphrases.native.setPlaceholderText("circle: round blob, disc; ring: annulus")
        self.paraphrases.tooltip = (
            "Decoder only: other phrases for a class, drawn as its text while training "
            "(class: phrase, phrase; next class: ...)."
        )
        self.epochs = SpinBox(label="Epochs", min=1, max=1000, value=20)
        self.lr = FloatSpinBox(label="Learning rate", min=1e-7, max=1.0, step=1e-6, value=1e-5)
        self.lr.native.setDecimals(7)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        # The crops CLIP learns from are made as segmentation makes them (same fields).
        self.fill = param_widget(CropParams, "fill", "Crop fill")
        self.margin = param_widget(CropParams, "margin", "Crop margin")
        self.show_advanced = CheckBox(text="Training settings", value=False)
        self.extend(
            [
                self.image,
                self.labels,
                self.classes,
                *self.clicks.widgets(),
                self.preview,
                self.target,
                self.base,
                self.name,
                self.show_advanced,
                *self.controls(),
            ]
        )
        self.advanced = Container(
            widgets=[
                self.train,
                self.template,
                self.paraphrases,
                self.epochs,
                self.lr,
                self.device,
                self.fill,
                self.margin,
            ],
            labels=True,
        )
        self.advanced_area = self.add_collapsible(self.show_advanced, self.advanced)
        self.body().addStretch(1)  # spare height goes below, not between rows
        self.show_advanced.changed.connect(lambda show: self.advanced_area.setVisible(show))
        self.base.changed.connect(self._on_base_choice)
        self.target.changed.connect(self._on_target)
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.moved):
            event.connect(self.reset_choices)
            event.connect(self.update_preview)
        for widget in (self.image, self.labels):
            widget.changed.connect(self.update_preview)
        # Qt's own signal: magicgui's TextEdit says nothing when its text is set.
        self.classes.native.textChanged.connect(self.update_preview)
        compact(self.image, self.labels, self.target, self.base, self.train, self.device)
        self._on_target(self.target.value)
        self.update_preview()
        self.scroll_inside()

    def _on_target(self, target) -> None:
        """A decoder learns from scratch: its own epochs and learning rate."""
        decoder = target == "decoder"
        self.train.visible = not decoder
        self.paraphrases.visible = decoder
        self.base.label = "CLIP it reads" if decoder else "Start from"
        defaults = DecoderParams() if decoder else FinetuneParams()
        self.epochs.value = defaults.epochs
        self.lr.value = defaults.lr

    def _layer_choices(self, kind: str):
        def choices(_widget=None):
            return [(x.name, x) for x in self.viewer.layers if type(x).__name__ == kind]

        return choices

    def _labels_choices(self, _widget=None):
        layers = [(x.name, x) for x in self.viewer.layers if type(x).__name__ == "Labels"]
        return layers + ([("one layer per class", PER_LAYER)] if len(layers) >= 2 else [])

    def _base_choices(self, _widget=None):
        return clip_choices(self._clip_files, self._clip_folders)

    def _on_base_choice(self, value) -> None:
        if value not in (CHOOSE_FILE, ADD_FOLDER):
            return
        chosen = ask_clip_choice(self.native, value)
        if chosen is not None and chosen[0] == "file":
            offer(self.base, self._clip_files, chosen[1])
            return
        if chosen is not None:
            offer(self.base, self._clip_folders, chosen[1], select=False)
        self.base.value = DEFAULT_CLIP

    # --- gathering the data ----------------------------------------------------------

    def class_map(self) -> dict[int, str]:
        """Label -> class, from the Classes field or the layer's ``class`` feature."""
        text = self.classes.value.strip()
        if text:
            return parse_classes(text)
        layer = self.labels.value
        mapping = classes_from_features(layer) if layer is not None else {}
        if not mapping:
            raise InputError(
                "Name the class of each label, e.g. 'nucleus: 1-5; mitotic nucleus: 6, 7', "
                "or give the Labels layer a 'class' feature."
            )
        return mapping

    def plan(self) -> list[tuple[object, dict[int, str]]]:
        """``[(labels layer, {label: class}), ...]``: what becomes training data."""
        image_layer, choice = self.image.value, self.labels.value
        if image_layer is None or choice is None:
            raise InputError("Choose an Image layer and the Labels layer of its objects.")
        data = image_data(image_layer)
        expected = tuple(data.shape[:-1] if image_layer.rgb else data.shape)
        if choice == PER_LAYER:
            layers = [
                x
                for x in self.viewer.layers
                if type(x).__name__ == "Labels" and tuple(x.data.shape) == expected
            ]
            plan = []
            for layer in layers:
                values = np.unique(np.asarray(layer.data))
                plan.append((layer, {int(v): layer.name for v in values[values > 0]}))
            return plan
        if tuple(choice.data.shape) != expected:
            raise InputError(
                f"The labels {choice.name!r} have shape {tuple(choice.data.shape)}, "
                f"the image needs {expected}."
            )
        return [(choice, self.class_map())]

    def update_preview(self, *_args) -> None:
        """Show how many objects each class has (or why there is no training data)."""
        try:
            counts = class_counts([(layer.data, mapping) for layer, mapping in self.plan()])
        except InputError as exc:
            self.preview.value = str(exc).splitlines()[0]
            return
        if not counts:
            self.preview.value = "No classified objects yet."
            return
        self.preview.value = "; ".join(f"{cls}: {n}" for cls, n in counts.items())

    def crop_params(self) -> CropParams:
        """The crop settings (the segmentation widget's fields, the same defaults)."""
        return params_from(CropParams, {"fill": self.fill, "margin": self.margin})

    def check_classes(self) -> dict[str, int]:
        """Objects per class, refused when fewer than two classes have any (quick: label
        values only, so the GUI thread can say it at once)."""
        counts = class_counts([(layer.data, mapping) for layer, mapping in self.plan()])
        if len(counts) < 2:
            raise InputError(
                f"Found {sum(counts.values())} classified object(s) of {len(counts)} "
                "class(es); fine-tuning needs objects of at least two classes."
            )
        return counts

    def pairs(self, crops: CropParams | None = None) -> Pairs:
        """Crops of every classified object in every plane, with their classes."""
        return make_pairs(self.image.value, self.plan(), crops or self.crop_params())

    def dataset_images(self) -> list[DatasetImage]:
        """Every plane with classified objects, as the decoder trains on it."""
        return make_dataset_images(self.image.value, self.plan())

    def paraphrase_map(self) -> dict[str, list[str]]:
        """``"circle: round blob, disc; ring: annulus"`` -> ``{"circle": [...], ...}``."""
        out: dict[str, list[str]] = {}
        for part in filter(None, (p.strip() for p in self.paraphrases.value.split(";"))):
            if ":" not in part:
                raise InputError(
                    f"Write paraphrases as 'class: phrase, phrase', e.g. 'circle: round "
                    f"blob'; got {part!r}."
                )
            name, phrases = (x.strip() for x in part.split(":", 1))
            out.setdefault(name, []).extend(p.strip() for p in phrases.split(",") if p.strip())
        return out

    def decoder_params(self) -> DecoderParams:
        return DecoderParams(
            epochs=int(self.epochs.value),
            lr=float(self.lr.value),
            template=self.template.value.strip(),
        )

    def params(self) -> FinetuneParams:
        return FinetuneParams(
            epochs=int(self.epochs.value),
            lr=float(self.lr.value),
            train=self.train.value,
            template=self.template.value.strip(),
        )

    def output_path(self):
        prefix = "decoder" if self.target.value == "decoder" else "finetuned"
        name = self.name.value.strip() or f"{prefix}-{self.image.value.name}"
        name = re.sub(r"[^\w.-]+", "_", name).strip("._") or "finetuned"
        return checkpoint_dir() / f"{name.removesuffix('.safetensors')}.safetensors"

    # --- running ---------------------------------------------------------------------

    def run(self, *_args) -> None:
        """Fine-tune CLIP, or train a decoder, in a worker (progress and Cancel): the
        inputs are checked here, the crops (or planes) are made in the worker."""
        if self.busy:
            return
        try:
            output = self.output_path()
            counts = self.check_classes()
            extra = {}
            image_layer, plan = self.image.value, self.plan()  # read here, used there
            if self.target.value == "decoder":
                build, params, train = (
                    (lambda: make_dataset_images(image_layer, plan)),
                    (self.decoder_params()),
                    iter_train_decoder_to_file,
                )
                extra["paraphrases"] = self.paraphrase_map()
                status = f"decoder: {len(counts)} class(es)…"
            else:
                crops = self.crop_params()
                build, params, train = (
                    (lambda: make_pairs(image_layer, plan, crops)),
                    (self.params()),
                    iter_finetune_to_file,
                )
                status = f"{sum(counts.values())} objects of {len(counts)} classes…"
        except Exception as exc:  # shown to the user as one line, never a traceback
            self.show_error(exc)
            return
        if output.exists() and not self.confirm_replace(output):
            self.status.value = f"{output.name} exists; choose another name in 'Save as'."
            return
        self.start_worker(
            _iter_built,
            build,
            train,
            str(self.base.value),
            output,
            params,
            device=str(self.device.value),
            on_result=self._on_saved,
            status=status,
            **extra,
        )

    def confirm_replace(self, path) -> bool:
        """Ask before a new checkpoint replaces an existing one of the same name."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self.native,
            "Replace checkpoint?",
            f"A checkpoint named {path.name} exists in {path.parent}. Replace it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _on_saved(self, path) -> None:
        from ..core.models.clip import read_clip_metadata
        from ..core.models.decoder import is_decoder_file, read_decoder_metadata

        self.last_checkpoint = path
        if is_decoder_file(path):
            val = (read_decoder_metadata(path).get("metrics") or {}).get("val") or {}
            iou = val.get("mean_iou")
            score = f"; validation IoU {iou:.2f}" if iou is not None else ""
            self.status.value = f"Saved {path.name}{score}. It is now in the Decoder list."
            events.checkpoint_saved.emit(str(path))
            return
        metrics = read_clip_metadata(path).get("metrics", {})
        before, after = metrics.get("baseline_val_accuracy"), metrics.get("val_accuracy")
        score = (
            f"; validation accuracy {before:.2f} -> {after:.2f}"
            if before is not None and after is not None
            else ""
        )
        self.status.value = f"Saved {path.name}{score}. It is now in the CLIP list."
        events.checkpoint_saved.emit(str(path))
