"""What one press of "Run" means, in terms of the engine. No Qt here.

The widget's inputs are gathered into a :class:`Request`; :func:`iter_job` turns it into
engine calls (one per plane) and is wrapped in a thread worker by the widget, or
drained directly by :func:`~napari_slip._napari.scripting.segment_in_viewer`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.crops import CropParams
from ..core.errors import InputError
from ..core.models import DEFAULT_CLIP, DEFAULT_SAM
from ..core.progress import Progress
from ..core.proposals import SamProposalParams
from ..core.segmenter import Segmenter
from ..core.stack import StackResult, iter_segment_stack, leading_shape


@dataclass
class Request:
    """Everything a run needs, mapped from the widget (or the console call)."""

    image_layer: Any
    prompt: str
    mode: str = "best"
    threshold: float | None = None
    top_k: int = 3
    distractors: tuple[str, ...] = ()
    labels_layer: Any = None
    all_planes: bool = False
    #: The viewer's position (world coordinates), for the current plane.
    world_point: tuple[float, ...] = ()
    sam: str = DEFAULT_SAM
    clip: str = DEFAULT_CLIP
    device: str = "auto"
    sam_params: SamProposalParams = field(default_factory=SamProposalParams)
    crop_params: CropParams = field(default_factory=CropParams)
    templates: tuple[str, ...] | None = None

    @property
    def models(self) -> tuple[str, str, str]:
        return (self.sam, self.clip, self.device)

    def selection_only(self) -> tuple:
        """What may change while the image work stays valid."""
        return (self.prompt, self.mode, self.threshold, self.top_k, self.distractors)


def image_data(layer) -> np.ndarray:
    """A layer's full-resolution data (the first level of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def planes_of(request: Request) -> list[tuple[int, ...]] | None:
    """The leading indices to segment: the current plane, or None for all."""
    layer = request.image_layer
    lead = leading_shape(image_data(layer).shape, bool(layer.rgb))
    if not lead:
        return [()]
    if request.all_planes:
        return None
    point = layer.world_to_data(request.world_point) if len(request.world_point) else None
    step = [0] * len(lead) if point is None else np.round(point[: len(lead)]).astype(int)
    return [tuple(min(max(int(i), 0), n - 1) for i, n in zip(step, lead, strict=True))]


def engine_options(request: Request) -> dict:
    """The engine's per-call options for this request."""
    return {
        "mode": request.mode,
        "threshold": request.threshold,
        "top_k": request.top_k,
        "distractors": list(request.distractors),
        "contrast_limits": tuple(float(v) for v in request.image_layer.contrast_limits),
    }


def configure(segmenter: Segmenter | None, request: Request, cache_size: int = 64) -> Segmenter:
    """The segmenter for a request: the same one (models kept loaded) if models match."""
    if segmenter is None or segmenter.models != request.models:
        segmenter = Segmenter(request.sam, request.clip, request.device, cache_size=cache_size)
    segmenter.set_sam_params(request.sam_params)
    segmenter.set_crop_params(request.crop_params)
    segmenter.templates = request.templates
    return segmenter


def check(request: Request) -> None:
    """Refuse a request early, with the reason, before any work starts."""
    if request.image_layer is None:
        raise InputError("Choose an image layer to segment.")
    if not request.prompt.strip():
        raise InputError("Type what to segment in the prompt field, e.g. 'nucleus'.")
    if request.labels_layer is not None:
        expected = image_data(request.image_layer).shape
        expected = expected[:-1] if request.image_layer.rgb else expected
        if tuple(request.labels_layer.data.shape) != tuple(expected):
            raise InputError(
                f"The proposals layer {request.labels_layer.name!r} has shape "
                f"{tuple(request.labels_layer.data.shape)}, the image needs {tuple(expected)}."
            )


def iter_job(segmenter: Segmenter, request: Request) -> Generator[Progress, None, StackResult]:
    """Segment the request's planes; yields progress, returns labels for the whole layer."""
    check(request)
    layer = request.image_layer
    result = yield from iter_segment_stack(
        segmenter,
        image_data(layer),
        request.prompt,
        rgb=bool(layer.rgb),
        planes=planes_of(request),
        labels=None if request.labels_layer is None else request.labels_layer.data,
        **engine_options(request),
    )
    return result


def is_cached(segmenter: Segmenter | None, request: Request) -> bool:
    """Whether the request needs no SAM or CLIP image work (re-selection is instant)."""
    if segmenter is None or segmenter.models != request.models:
        return False
    if segmenter.sam_params != request.sam_params or segmenter.crop_params != request.crop_params:
        return False
    layer = request.image_layer
    data = image_data(layer)
    lead = leading_shape(data.shape, bool(layer.rgb))
    planes = planes_of(request)
    if planes is None:
        import itertools

        planes = list(itertools.product(*(range(n) for n in lead)))
    limits = tuple(float(v) for v in layer.contrast_limits)
    for plane in planes:
        labels = (
            None if request.labels_layer is None else np.asarray(request.labels_layer.data[plane])
        )
        if not segmenter.is_cached(
            np.asarray(data[plane]), labels, contrast_limits=limits, rgb=bool(layer.rgb) or None
        ):
            return False
    return True
