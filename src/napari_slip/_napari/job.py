"""What one press of "Run" means, in terms of the engine. No Qt here.

The widget's inputs are gathered into a :class:`Request`; :func:`iter_job` turns it into
engine calls (one per plane) and is wrapped in a thread worker by the widget, or
drained directly by :func:`~napari_slip._napari.scripting.segment_in_viewer`.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..core.axes import normalise_unit
from ..core.config import OPTIONS, RunConfig
from ..core.errors import InputError
from ..core.params import (
    NormalisationParams,
    SelectionParams,
    check_options,
)
from ..core.pipeline.segmenter import Segmenter
from ..core.pipeline.stack import StackResult, iter_stack, leading_shape
from ..core.pipeline.stack import lead_letters as default_letters
from ..core.proposal_kinds import kinds_where
from ..core.runtime.progress import Progress

#: A run's options (:data:`~..core.config.OPTIONS`) a request may carry: all but the
#: image's intensities and channels, which its layer decides (:func:`normalisation`).
REQUEST_OPTIONS = tuple(o for o in OPTIONS if o not in NormalisationParams.names())
#: The options that say which models a run uses (:class:`~..core.config.Models`).
MODEL_OPTIONS = ("sam", "clip", "device", "precision", "decoder")


@dataclass
class Request:
    """What one press of Run (or the console call) asks for: the run's options by name
    (:data:`REQUEST_OPTIONS`, from which :meth:`config` builds the run's one
    configuration) and the viewer's side of it: which layers, planes and channels.

    Parameters
    ----------
    image_layer
        The Image layer to segment.
    prompt
        What to find (a concept's name when ``concept`` is given).
    options
        The run's options, as :meth:`RunConfig.build <napari_slip.core.config.RunConfig.build>`
        takes them (an unknown one is refused here, naming it).
    labels_layer
        A Labels layer whose labels are the proposals.
    channel_axis, channels
        The image layer's channel axis, for multichannel data shown as one layer, and
        up to three of its channels to show the models as R, G, B.
    colour_layers
        Other Image layers shown as green (and blue), the image layer being red: for
        multichannel data that napari shows as one layer per channel.
    all_planes
        Segment every plane (default: the one at ``world_point``).
    world_point
        The viewer's position (world coordinates), for the current plane.
    axis_labels
        The viewer's axis labels: which leading axis is T and which Z where they say so.
    concept
        A :class:`~napari_slip.core.concepts.Concept` to find instead of the prompt's
        text (``options["concept_class"]``: the one class of it to keep).
    """

    image_layer: Any
    prompt: str
    options: dict = field(default_factory=dict)
    labels_layer: Any = None
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    colour_layers: tuple[Any, ...] = ()
    all_planes: bool = False
    world_point: tuple[float, ...] = ()
    axis_labels: tuple[str, ...] = ()
    concept: Any = None

    def __post_init__(self) -> None:
        check_options(self.options, REQUEST_OPTIONS, "segment_in_viewer()")
        if self.concept is not None:  # what the layer and messages are called: the
            # concept (and its class), never text left in the prompt field before it
            chosen = self.options.get("concept_class")
            self.prompt = f"{self.concept.name}: {chosen}" if chosen else self.concept.name

    @property
    def target(self) -> Any:
        """What the engine looks for: the concept, else the prompt."""
        return self.concept if self.concept is not None else self.prompt

    @property
    def proposals(self) -> str:
        """Where candidates come from: the labels layer's objects, else as asked."""
        if self.labels_layer is not None:
            return "labels"
        return self.options.get("proposals") or "sam"

    @property
    def decoder(self) -> str | None:
        return self.options.get("decoder")

    @property
    def models(self) -> tuple:
        """The model options as given (to compare two requests' models)."""
        return tuple(self.options.get(k) for k in MODEL_OPTIONS)

    def config(self) -> RunConfig:
        """The run this request asks for, validated as a whole (loads nothing): the
        one configuration a press of Run (or the console call) hands to the engine."""
        options = {**self.options, **normalisation(self), "proposals": self.proposals}
        return RunConfig.build(self.target, "segment_in_viewer()", **options)

    def selection(self) -> SelectionParams:
        """The selection settings (validated with the whole run)."""
        return self.config().selection

    def with_selection_of(self, other: Request) -> Request:
        """This request with ``other``'s selection options (a re-selection)."""
        chosen = {k: v for k, v in other.options.items() if k in SELECTION_OPTIONS}
        return replace(self, options={**self.options, **chosen})


#: The options a re-selection takes from the current inputs.
SELECTION_OPTIONS = ("mode", "threshold", "top_k", "distractors", "relevance_weight")


def image_data(layer) -> np.ndarray:
    """A layer's full-resolution data (the first level of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class ChannelStack:
    """Same-shape arrays as one array with a trailing channel axis, stacked per plane.

    Only the planes asked for are read and stacked, so a z-stack is never copied whole.
    """

    def __init__(self, arrays: list) -> None:
        self.arrays = arrays
        self.shape = (*arrays[0].shape, len(arrays))
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        return np.stack([np.asarray(a[index]) for a in self.arrays], axis=-1)


def source(request: Request) -> tuple[Any, bool]:
    """The array to segment plane by plane, and whether its last axis is colour.

    A channel axis is moved last (a view, no copy), and colour layers are stacked plane
    by plane, so the engine sees channels as colour.
    """
    layer = request.image_layer
    data = image_data(layer)
    if request.colour_layers:
        if request.channel_axis is not None or layer.rgb:
            raise InputError(
                "Colour layers combine single-channel layers: unset the channel "
                "axis and choose non-RGB layers."
            )
        layers = [layer, *request.colour_layers]
        if len(layers) > 3:
            raise InputError("At most two colour layers (green and blue) can join the image.")
        for other in request.colour_layers:
            if other.rgb or tuple(image_data(other).shape) != tuple(data.shape):
                raise InputError(
                    f"The colour layer {other.name!r} must be a single-channel layer of the "
                    f"image's shape {tuple(data.shape)}; it is {tuple(image_data(other).shape)}."
                )
        return ChannelStack([image_data(x) for x in layers]), True
    if request.channel_axis is None:
        return data, bool(layer.rgb)
    if layer.rgb:
        raise InputError("This layer is RGB already; leave the channel axis unset.")
    axis = request.channel_axis
    if data.ndim < 3 or not -data.ndim <= axis < data.ndim:
        raise InputError(f"Channel axis {axis} does not exist in the layer's shape {data.shape}.")
    axis %= data.ndim
    if axis >= data.ndim - 2:
        raise InputError(
            f"Channel axis {axis} is one of the image's last two (spatial) axes; "
            "choose a leading axis."
        )
    return np.moveaxis(data, axis, -1), True


def output_shape(request: Request) -> tuple[int, ...]:
    """The shape of the labels a request produces."""
    data, colour = source(request)
    return tuple(data.shape[:-1] if colour else data.shape)


def spatial_axes(request: Request) -> list[int]:
    """The image layer's axes that the labels keep (all but a channel axis)."""
    ndim = request.image_layer.ndim
    if request.channel_axis is None:
        return list(range(ndim))
    return [a for a in range(ndim) if a != request.channel_axis % ndim]


def planes_of(request: Request) -> list[tuple[int, ...]] | None:
    """The leading indices to segment: the current plane, or None for all."""
    data, colour = source(request)
    lead = leading_shape(data.shape, colour)
    if not lead:
        return [()]
    if request.all_planes:
        return None
    layer = request.image_layer
    if len(request.world_point):
        point = np.asarray(layer.world_to_data(request.world_point))[spatial_axes(request)]
        step = np.round(point[: len(lead)]).astype(int)
    else:
        step = [0] * len(lead)
    return [tuple(min(max(int(i), 0), n - 1) for i, n in zip(step, lead, strict=True))]


def normalisation(request: Request) -> dict:
    """How intensities map to the models' 8-bit RGB: the layer's contrast limits (none
    without a layer), and where colour is."""
    if request.image_layer is None:
        return {}
    limits = tuple(float(v) for v in request.image_layer.contrast_limits)
    options: dict = {"contrast_limits": limits}
    if source(request)[1]:
        options["rgb"] = True
    if request.colour_layers:
        layers = [request.image_layer, *request.colour_layers]
        options["contrast_limits"] = [tuple(float(v) for v in x.contrast_limits) for x in layers]
        options["channel_axis"] = -1
    if request.channel_axis is not None:
        options["channel_axis"] = -1
        if request.channels:
            options["channels"] = list(request.channels)
    return options


def engine(segmenter: Segmenter | None, request: Request, cache_size: int = 64) -> Segmenter:
    """The engine of a session: ``segmenter``, or one made for the first request (its
    models its defaults). A run's settings are its config's, never set on it."""
    if segmenter is not None:
        return segmenter
    models = request.config().models
    return Segmenter(
        models.sam, models.clip, models.device, cache_size=cache_size, precision=models.precision
    )


def check(request: Request) -> RunConfig:
    """Refuse a request early, with the reason, before any work starts; return its
    configuration, built once."""
    if request.image_layer is None:
        raise InputError("Choose an image layer to segment.")
    if not request.prompt.strip() and request.concept is None:
        raise InputError("Type what to segment in the prompt field, e.g. 'nucleus'.")
    asked = request.options.get("proposals") or "sam"
    if asked not in kinds_where(per_image=False):
        raise InputError(f"Unknown proposals {asked!r}.")
    if asked != "sam" and request.labels_layer is not None:
        raise InputError("Proposals come from a labels layer or the prompt, not both.")
    config = request.config()  # the combinations, the model files: before any model loads
    expected = output_shape(request)
    if request.labels_layer is not None and tuple(request.labels_layer.data.shape) != expected:
        raise InputError(
            f"The proposals layer {request.labels_layer.name!r} has shape "
            f"{tuple(request.labels_layer.data.shape)}, the image needs {expected}."
        )
    return config


#: Axis labels that name time and depth (napari's defaults are "0", "1", ...).
_TIME, _DEPTH = {"t", "time", "frame", "frames"}, {"z", "depth", "plane", "planes", "slice"}


def lead_letters(request: Request) -> str | None:
    """The leading axes' letters (T, Z) from the viewer's axis labels where they name
    them; None (napari's order: ..., T, Z) where they do not."""
    data, colour = source(request)
    n_lead = len(leading_shape(data.shape, colour))
    layer_axes = spatial_axes(request)[:n_lead]
    labels = list(request.axis_labels)[-request.image_layer.ndim :]
    if not n_lead or len(labels) != request.image_layer.ndim:
        return None
    named = []
    for axis in layer_axes:
        label = str(labels[axis]).strip().lower()
        named.append("T" if label in _TIME else "Z" if label in _DEPTH else None)
    given = [n for n in named if n is not None]
    if not given or len(set(given)) < len(given):
        return None
    free = iter(str(i) for i in range(n_lead))
    return "".join(n if n is not None else next(free) for n in named)


def pixel_sizes(request: Request) -> tuple[dict, str | None]:
    """The layer's scale per axis letter of the labels (where not 1), and its unit."""
    layer = request.image_layer
    axes = spatial_axes(request)
    data, colour = source(request)
    n_lead = len(leading_shape(data.shape, colour))
    letters = (lead_letters(request) or default_letters(None, n_lead)) + "YX"
    scale = [float(v) for v in np.asarray(layer.scale)[axes]]
    sizes = {a: v for a, v in zip(letters, scale, strict=True) if a in "TZYX" and v != 1.0}
    units = getattr(layer, "units", None)
    unit = None
    if sizes and units is not None and len(units):
        unit = str(units[axes[-1]])
        unit = None if unit in ("pixel", "dimensionless", "") else unit
    # napari's scale carries no unit unless a reader set one: micrometres, as a
    # microscope's pixel sizes are given.
    return sizes, (unit or "um") if sizes else None


def _planes(request: Request) -> list[tuple[int, ...]]:
    planes = planes_of(request)
    if planes is None:
        data, colour = source(request)
        planes = list(itertools.product(*(range(n) for n in leading_shape(data.shape, colour))))
    return planes


def iter_job(
    segmenter: Segmenter, request: Request, config: RunConfig
) -> Generator[Progress, None, StackResult]:
    """Segment the request's planes with its ``config`` (:func:`check`'s); yields
    progress, returns labels for the whole layer."""
    data, colour = source(request)
    scale, unit = pixel_sizes(request)
    return (
        yield from iter_stack(
            segmenter,
            data,
            config,
            rgb=colour,
            planes=_planes(request),
            labels=None if request.labels_layer is None else request.labels_layer.data,
            lead=lead_letters(request),
            scale=scale,
            unit=normalise_unit(unit),
        )
    )
