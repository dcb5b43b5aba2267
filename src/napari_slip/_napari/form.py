"""The segmentation dock's fields and choices, made from the parameter dataclasses.

The SAM, tile and crop fields are generated from :mod:`..core.params` (their defaults,
ranges, choices and help texts live there once, as the command line's flags do); the
layer pickers list the viewer's layers of a kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSlider,
    LineEdit,
    PushButton,
    SpinBox,
)

from ..core.errors import InputError
from ..core.models.registry import SAM_MODELS
from ..core.params import (
    DEFAULT_THRESHOLD,
    CropParams,
    SamProposalParams,
    SelectionParams,
    TileParams,
)
from ..core.pipeline.selection import SCORE_UNITS
from ..core.proposal_kinds import PROPOSAL_KINDS
from .choices import CHOOSE_FILE
from .fields import param_widgets
from .job import image_data

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

#: The dataclasses whose labelled fields the advanced settings show: a field with a
#: ``label`` in :mod:`..core.params` appears there, as the widget attribute of its name.
SHOWN = (SamProposalParams, TileParams, CropParams)


#: The widest a threshold may be typed: cosines and probabilities lie in [-1, 1]; a
#: relevance weight (at most 1) lifts scores to 2 at most.
THRESHOLD_LIMITS = (-1.0, 2.0)


class ThresholdSlider(FloatSlider):
    """A slider whose travel follows the scores shown (:func:`fit_threshold`), and
    which takes any value typed into its box or set from a script, widening itself."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        from qtpy.QtWidgets import QDoubleSpinBox

        self._box = self.native.findChild(QDoubleSpinBox)
        #: What the threshold is in (see :data:`~napari_slip.core.pipeline.selection.SCORE_UNITS`).
        self.unit = "cosine similarity"
        if self._box is not None:
            self._box.setKeyboardTracking(False)
            self._box.editingFinished.connect(lambda: setattr(self, "value", self._box.value()))
            self._open_box()

    def _open_box(self) -> None:
        if getattr(self, "_box", None) is not None:
            self._box.setRange(*THRESHOLD_LIMITS)
        from qtpy.QtWidgets import QSlider

        slider = self.native.findChild(QSlider)
        if slider is not None:  # PageUp/PageDown: ten steps (Qt's default is 10 units)
            slider.setPageStep(10 * slider.singleStep())

    def set_unit(self, unit: str) -> bool:
        """The scores are now in ``unit``: the slider spans that unit's range from its
        starting value (a cosine threshold means nothing as a probability). Returns
        whether the unit changed."""
        if unit == self.unit or unit not in SCORE_UNITS:
            return False
        self.unit = unit
        lo, hi, start = SCORE_UNITS[unit]
        self.min, self.max = min(lo, self.min), max(hi, self.max)
        self.value = start
        self.min, self.max = lo, hi
        self.tooltip = f"{SelectionParams.help('threshold')} Now in: {unit}."
        return True

    @property
    def value(self) -> float:
        return FloatSlider.value.fget(self)

    @value.setter
    def value(self, value: float) -> None:
        value = float(value)
        if value < self.min:
            self.min = max(value, THRESHOLD_LIMITS[0])
        if value > self.max:
            self.max = min(value, THRESHOLD_LIMITS[1])
        FloatSlider.value.fset(self, value)
        self._open_box()


def prompt_field() -> LineEdit:
    """What to segment (Enter runs)."""
    prompt = LineEdit(label="Prompt", value="")
    prompt.native.setPlaceholderText("e.g. nucleus (Enter runs)")
    prompt.tooltip = "What to segment, e.g. nucleus or mitotic nucleus; Enter runs."
    return prompt


def selection_fields() -> dict:
    """The selection settings (see :class:`~.selection_controls.SelectionControls`)."""
    threshold = ThresholdSlider(
        label="Threshold", min=-1.0, max=1.0, step=0.005, value=DEFAULT_THRESHOLD
    )
    threshold.tooltip = SelectionParams.help("threshold")
    use_floor = CheckBox(text="Use threshold as a floor", value=False)
    use_floor.tooltip = (
        "In best, top-k and distractors modes: keep nothing that scores below the "
        "threshold (so an absent object gives 'nothing found')."
    )
    distractors = LineEdit(label="Distractors", value="")
    distractors.native.setPlaceholderText("comma-separated, e.g. debris, dust")
    distractors.tooltip = distractors.tooltip or "Phrases that compete, comma-separated."
    top_k = SpinBox(label="Top k", min=1, max=10000, value=SelectionParams.default("top_k"))
    mode = ComboBox(label="Selection", choices=MODE_CHOICES, value="best")
    mode.tooltip = "\n".join(f"{label}: {MODE_TIPS[v]}" for label, v in MODE_CHOICES)
    return {
        "mode": mode,
        "threshold": threshold,
        "use_floor": use_floor,
        "distractors": distractors,
        "top_k": top_k,
    }


def generated(cls) -> dict:
    """Field name -> widget, for the labelled fields of ``cls``."""
    return param_widgets(cls, cls.shown())


def advanced_fields() -> dict:
    """SAM's grid and filters, precision, the relevance map, tiles, crops, template."""
    fields = generated(SamProposalParams)
    fields["exact"] = CheckBox(text="Exact SAM (fp32)", value=False)
    fields["exact"].tooltip = "Slower; gives SAM's own masks (default: bf16 where the CPU has it)."
    fields["show_relevance"] = CheckBox(text="Relevance map layer", value=False)
    fields["show_relevance"].tooltip = (
        "Also show where the prompt matches, pixel by pixel: the trained decoder's "
        "probability, or without one CLIP's untrained, coarse patch similarity (2D "
        "images; the next prompt on the same image is quick)."
    )
    fields.update(param_widgets(SelectionParams, {"relevance_weight": "Relevance weight"}))
    fields.update(generated(TileParams))
    fields.update(generated(CropParams))
    fields["template"] = LineEdit(label="Template", value="")
    fields["template"].native.setPlaceholderText("a photo of {}.")
    fields[
        "template"
    ].tooltip = "How the prompt becomes text for CLIP; empty: the checkpoint's own."
    fields["rescan_button"] = PushButton(text="Rescan checkpoints")
    for widget in fields.values():
        native = widget.native
        if hasattr(native, "setMinimumWidth") and hasattr(native, "setMaximumWidth"):
            native.setMinimumWidth(60)
    return fields


def folder_fields() -> dict:
    """Folder mode: the same prompt, selection and models over a folder of images."""
    folder_in = FileEdit(label="Images", mode="d")
    folder_in.tooltip = "A folder of .tif, .png, .jpg or .zarr images (searched recursively)."
    folder_out = FileEdit(label="Save to", mode="d")
    folder_out.tooltip = (
        "Label images (same relative names, .tif), objects.csv and summary.json. "
        "Running again resumes: images done with the same settings are skipped."
    )
    workers = SpinBox(label="Workers", min=1, max=64, value=1)
    workers.tooltip = "Worker processes (a local Dask cluster); 1 runs inside napari."
    result = ComboBox(label="Result", choices=[("(run on a folder first)", None)])
    result.tooltip = "An image of the last folder run, with its number of objects."
    opened = PushButton(text="Open as layers")
    opened.tooltip = "Open the chosen image and its labels in the viewer."
    for field in (folder_in, folder_out):  # a long path shows whole in the tooltip
        field.changed.connect(
            lambda value, f=field, tip=field.tooltip: setattr(f, "tooltip", f"{value}\n{tip}")
        )
    return {
        "folder_in": folder_in,
        "folder_out": folder_out,
        "folder_workers": workers,
        "run_folder": PushButton(text="Run on folder"),
        "folder_result": result,
        "open_result": opened,
    }


def layers_of(viewer, kind: str) -> list:
    return [layer for layer in viewer.layers if type(layer).__name__ == kind]


def image_choices(viewer) -> list:
    return [(layer.name, layer) for layer in layers_of(viewer, "Image")]


def proposal_choices(viewer) -> list:
    named = [
        (kind.label, None if name == "sam" else name)
        for name, kind in PROPOSAL_KINDS.items()
        if kind.label is not None
    ]
    return named + [(f"labels: {layer.name}", layer) for layer in layers_of(viewer, "Labels")]


def output_choices(viewer) -> list:
    return [("New Labels layer", None)] + [
        (f"add to: {layer.name}", layer) for layer in layers_of(viewer, "Labels")
    ]


def colour_choices(viewer, image) -> list:
    """Other single-channel Image layers that can join the image as green or blue: of
    the image's shape, and never a relevance map this plugin made."""
    if image is None or image.rgb:
        return [("none", None)]
    shape = tuple(image_data(image).shape)
    others = [
        x
        for x in layers_of(viewer, "Image")
        if x is not image
        and not x.rgb
        and tuple(image_data(x).shape) == shape
        and not _is_relevance_map(x)
    ]
    return [("none", None)] + [(x.name, x) for x in others]


def _is_relevance_map(layer) -> bool:
    meta = layer.metadata.get("napari_slip") if isinstance(layer.metadata, dict) else None
    return isinstance(meta, dict) and "relevance_of" in meta


#: Axis labels (napari's ``layer.axis_labels``, set by readers) that name channels, and
#: those that name planes (depth, time): napari's own channel information.
CHANNEL_LABELS = {"c", "ch", "channel", "channels"}
#: An unnamed leading axis of at most this many planes is offered as channels.
MAX_OFFERED_CHANNELS = 8
PLANE_LABELS = {"z", "t", "time", "depth", "plane", "slice", "frame"}


def channel_axis_choices(layer) -> list:
    """The Channel axis row's choices: a leading axis labelled as channels is the only
    choice (chosen); leading axes all labelled as planes offer none (the row hides);
    unlabelled axes (napari's "-3", ...) of up to 8 planes are each offered, "none"
    first (a plain z-stack offers none: the row hides)."""
    choices = [("none (grayscale or RGB)", None)]
    if layer is None or layer.rgb or layer.ndim < 3:
        return choices
    shape = layer.data[0].shape if layer.multiscale else layer.data.shape
    lead = range(layer.ndim - 2)
    labels = [str(a).strip().lower() for a in getattr(layer, "axis_labels", ())][: len(lead)]
    named = [a for a in lead if len(labels) == len(lead) and labels[a] in CHANNEL_LABELS]
    if named:
        return [(f"axis {a} '{labels[a]}' ({shape[a]} channels)", a) for a in named]
    if len(labels) == len(lead) and all(x in PLANE_LABELS for x in labels):
        return choices  # z / t axes: planes, never channels
    # An unnamed axis of many planes is a z-stack or a movie: not offered as channels.
    few = [a for a in lead if shape[a] <= MAX_OFFERED_CHANNELS]
    return choices + [(f"axis {a} ({shape[a]} channels)", a) for a in few]


def sam_choices(files: list[str]) -> list:
    return (
        [(name, name) for name in SAM_MODELS]
        + [(Path(p).name, p) for p in files]
        + [("Choose a file…", CHOOSE_FILE)]
    )


def parse_channels(text: str) -> tuple[int, ...] | None:
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise InputError(
            f"Channels must be comma-separated numbers, e.g. 0,2; got {text!r}."
        ) from None


#: The SAM and CLIP the hint offers for microscopy (see :func:`add_microscopy_hint`).
MICROSCOPY_PAIR = ("vit_b_lm", "biomedclip")


#: The status line's suggestion on an image that looks like microscopy.
MICROSCOPY_HINT = (
    "Microscopy? SAM vit_b_lm (light; vit_b_em_organelles for EM) and CLIP biomedclip "
    "often fit it better: choose them in the SAM and CLIP lists."
)


def suggests_microscopy_models(layer, sam: str, clip: str) -> bool:
    """Whether to suggest micro-sam's SAM and BiomedCLIP for ``layer``: it looks like
    microscopy (one channel, or 16-bit) and they are not chosen already."""
    chosen = SAM_MODELS.get(str(sam))
    has_them = chosen is not None and chosen.microscopy and clip == MICROSCOPY_PAIR[1]
    return looks_like_microscopy(layer) and not has_them


def looks_like_microscopy(layer) -> bool:
    """One channel, or more than 8 bits per value: what microscopes write."""
    if layer is None:
        return False
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return not layer.rgb or np.dtype(data.dtype).itemsize > 1


def fit_threshold(slider, lo: float, hi: float) -> None:
    """The threshold slider spans the scores shown (the histogram's range, in the
    mode's own unit: cosines, or probabilities in distractors mode) and its value, so
    its travel is spent where the candidates are, with one page (ten steps) to spare on
    each side for PageUp and PageDown; its value stays."""
    step = slider.step or 0.005
    page = 10 * step
    lo = float(np.floor(min(lo, slider.value) / step) * step) - page
    hi = float(np.ceil(max(hi, slider.value) / step) * step) + page
    unit_lo, unit_hi, _ = SCORE_UNITS.get(getattr(slider, "unit", ""), (*THRESHOLD_LIMITS, 0))
    lo, hi = max(lo, unit_lo, THRESHOLD_LIMITS[0]), min(hi, unit_hi, THRESHOLD_LIMITS[1])
    if lo >= slider.max:
        slider.max, slider.min = hi, lo
    else:
        slider.min, slider.max = lo, hi
    if hasattr(slider, "_open_box"):
        slider._open_box()


__all__ = [
    "MODE_CHOICES",
    "MODE_TIPS",
    "advanced_fields",
    "folder_fields",
    "prompt_field",
    "selection_fields",
]
