"""What one press of "Run" means, in terms of the engine. No Qt here.

The widget's inputs are gathered into a :class:`Request`; :func:`iter_job` turns it into
engine calls (one per plane) and is wrapped in a thread worker by the widget, or
drained directly by :func:`~napari_slip._napari.scripting.segment_in_viewer`.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.axes import normalise_unit
from ..core.config import Models, RunConfig, Target
from ..core.errors import InputError
from ..core.params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    CropParams,
    GuidedParams,
    NormalisationParams,
    SamProposalParams,
    SelectionParams,
    StackParams,
    TileParams,
)
from ..core.pipeline.segmenter import Segmenter
from ..core.pipeline.stack import StackResult, iter_stack, leading_shape
from ..core.pipeline.stack import lead_letters as default_letters
from ..core.proposal_kinds import kinds_where
from ..core.runtime.progress import Progress


@dataclass
class Request:
    """Everything a run needs, mapped from the widget (or the console call)."""

    image_layer: Any
    prompt: str
    mode: str = SelectionParams.default("mode")
    threshold: float | None = SelectionParams.default("threshold")
    top_k: int = SelectionParams.default("top_k")
    distractors: tuple[str, ...] = ()
    labels_layer: Any = None
    #: The image layer's channel axis, for multichannel data shown as one layer, and up
    #: to three of its channels to show the models as R, G, B.
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    #: Other Image layers shown as green (and blue), the image layer being red: for
    #: multichannel data that napari shows as one layer per channel.
    colour_layers: tuple[Any, ...] = ()
    all_planes: bool = False
    #: The viewer's position (world coordinates), for the current plane.
    world_point: tuple[float, ...] = ()
    sam: str = DEFAULT_SAM
    clip: str = DEFAULT_CLIP
    device: str = "auto"
    precision: str = "auto"
    background: str = SelectionParams.default("background")
    sam_params: SamProposalParams = field(default_factory=SamProposalParams)
    crop_params: CropParams = field(default_factory=CropParams)
    tile_params: TileParams = field(default_factory=TileParams)
    templates: tuple[str, ...] | None = None
    #: Also make the prompt's relevance map of each plane segmented.
    relevance: bool = False
    #: Where candidates come from besides SAM's grid and a labels layer: ``relevance``
    #: (the map's regions, no SAM) or ``guided`` (SAM at points the map places).
    proposals: str = "sam"
    #: A trained decoder file whose map is the relevance map (None: CLIP's own).
    decoder: str | None = None
    relevance_weight: float = SelectionParams.default("relevance_weight")
    guided_params: GuidedParams = field(default_factory=GuidedParams)
    #: Link objects across Z planes and T frames (all slices): 3D objects and tracks.
    link: bool = True
    #: The viewer's axis labels (``viewer.dims.axis_labels``): which leading axis is T
    #: and which Z where they say so.
    axis_labels: tuple[str, ...] = ()
    #: A :class:`~napari_slip.core.concepts.Concept` to find instead of the prompt's
    #: text, and the one class of it to keep (None: any).
    concept: Any = None
    concept_class: str | None = None

    def __post_init__(self) -> None:
        if self.concept is not None:  # what the layer and messages are called: the
            # concept (and its class), never text left in the prompt field before it
            named = f"{self.concept.name}: {self.concept_class}" if self.concept_class else None
            self.prompt = named or self.concept.name

    @property
    def target(self) -> Any:
        """What the engine looks for: the concept, else the prompt."""
        return self.concept if self.concept is not None else self.prompt

    @property
    def models(self) -> tuple[str, str, str, str]:
        return (self.sam, self.clip, self.device, self.precision)

    def config(self) -> RunConfig:
        """The run this request asks for, validated as a whole (loads nothing): the
        one configuration a press of Run (or the console call) hands to the engine."""
        selection = self.selection()
        return RunConfig(
            target=Target(
                self.target,
                selection.distractors,
                selection.background,
                self.templates,
                concept_class=self.concept_class,
            ),
            models=Models(self.sam, self.clip, self.device, self.precision, self.decoder),
            proposals="labels" if self.labels_layer is not None else self.proposals,
            selection=selection,
            sam_params=self.sam_params,
            tile_params=self.tile_params,
            guided_params=self.guided_params,
            crop_params=self.crop_params,
            normalisation=NormalisationParams(**normalisation(self)),
            relevance=self.relevance,
            stack_params=StackParams(link=self.link),
        )

    def selection(self) -> SelectionParams:
        """The selection settings (validated)."""
        return SelectionParams(
            mode=self.mode,
            threshold=self.threshold,
            top_k=self.top_k,
            distractors=self.distractors,
            background=self.background,
            relevance_weight=self.relevance_weight,
        )


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
    return Segmenter(
        request.sam,
        request.clip,
        request.device,
        cache_size=cache_size,
        precision=request.precision,
    )


def check(request: Request) -> RunConfig:
    """Refuse a request early, with the reason, before any work starts; return its
    configuration, built once."""
    if request.image_layer is None:
        raise InputError("Choose an image layer to segment.")
    if not request.prompt.strip() and request.concept is None:
        raise InputError("Type what to segment in the prompt field, e.g. 'nucleus'.")
    if request.proposals not in kinds_where(per_image=False):
        raise InputError(f"Unknown proposals {request.proposals!r}.")
    if request.proposals != "sam" and request.labels_layer is not None:
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
