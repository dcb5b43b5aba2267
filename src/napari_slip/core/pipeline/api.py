"""The one-call API: :func:`segment` on a process-wide :class:`~.segmenter.Segmenter`.

Repeated calls in a notebook reuse the shared segmenter's caches and the shared
models; calls from several threads run one at a time (:data:`shared_lock`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import RunConfig
from ..params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    CropParams,
    GuidedParams,
    SamProposalParams,
    TileParams,
    check_options,
)
from ..runtime.generators import drain
from ..runtime.progress import Progress
from .dispatch import ImageInputs, iter_segment_image
from .results import SegmentationResult
from .segmenter import SEGMENT_OPTIONS, Segmenter, proposals_of

_SHARED: dict[str, Segmenter] = {}
_SHARED_LOCK = threading.RLock()


def shared_segmenter(
    sam: str | None = None,
    clip: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Segmenter:
    """The process-wide segmenter (caches for 64 images), its default models switched
    to those given (None keeps one; its caches are kept).

    :func:`segment` uses it with each call's own models (its defaults untouched).
    Hold :data:`shared_lock` while using it from several threads.
    """
    with _SHARED_LOCK:
        seg = _SHARED.get("default")
        if seg is None:
            seg = Segmenter(
                sam or DEFAULT_SAM,
                clip or DEFAULT_CLIP,
                device or "auto",
                cache_size=64,
                precision=precision or "auto",
            )
            _SHARED["default"] = seg
        elif (sam, clip, device, precision) != (None, None, None, None):
            seg.set_models(sam, clip, device, precision)
        return seg


#: Serialises calls on the shared segmenter (``segment()`` from several threads).
shared_lock = _SHARED_LOCK


def segment(
    image: np.ndarray,
    prompt: str,
    *,
    sam: str = DEFAULT_SAM,
    clip: str | None = None,
    device: str = "auto",
    sam_params: SamProposalParams | None = None,
    crop_params: CropParams | None = None,
    tile_params: TileParams | None = None,
    tiles: str | None = None,
    templates: Sequence[str] | None = None,
    precision: str = "auto",
    decoder: str | os.PathLike | None = None,
    guided_params: GuidedParams | None = None,
    progress: Callable[[Progress], None] | None = None,
    **options: Any,
) -> SegmentationResult:
    """One call: segment what ``prompt`` describes in ``image``.

    ``prompt`` is a text, or a :class:`~napari_slip.core.concepts.Concept` (classes
    shown by examples; each object gets its most probable class, or none, in the
    table's ``class`` and ``class_probability``; ``concept_class=`` keeps one class).
    ``clip`` defaults to :data:`~..params.DEFAULT_CLIP`, or a concept's own CLIP.

    A stack (z-stack, time series, with or without channels) needs its axes:
    ``axes="ZYX"`` (``TYX``, ``TZCYX``, ``CYX``...; a 2D or RGB image needs none), and
    optionally ``pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5}`` for physical sizes. Objects
    are linked across Z planes and T frames (``link=False``: each plane's own), and a
    :class:`~.stack.StackResult` comes back.

    ``tiles="on"`` (or ``"auto"``: above ``max_side``) runs SAM tile by tile at full
    resolution, for large images; ``tile_params`` sets the tile size and overlap. A
    dask or zarr image is then read tile by tile, never whole.

    ``proposals="guided"`` decodes SAM only at points the prompt's relevance map
    places (fast), ``proposals="relevance"`` takes the map's regions (no SAM);
    ``decoder`` names a trained decoder whose map that is.

    Keeps one shared :class:`Segmenter` (models in the shared hub, caches per image),
    so repeated calls in a notebook are fast. Options are those of
    :meth:`Segmenter.segment`; unknown ones are refused with the list of known ones.
    Safe to call from several threads (calls run one at a time).
    """
    check_options(options, SEGMENT_OPTIONS, "segment()")
    if clip is None:  # the default CLIP, or the one a concept was learnt with
        clip = getattr(prompt, "clip_spec", lambda: None)() or DEFAULT_CLIP
    inputs = ImageInputs.pick(options)  # the image's: beside the run's settings
    options["proposals"] = proposals_of(options.get("proposals"), inputs.labels, inputs.source)
    # Every check, the combinations included, before the shared segmenter or a model.
    config = RunConfig.build(
        prompt,
        "segment()",
        sam=sam,
        clip=clip,
        device=device,
        precision=precision,
        decoder=decoder,
        sam_params=sam_params,
        crop_params=crop_params,
        tile_params=tile_params,
        tiles=tiles,
        templates=templates,
        guided_params=guided_params,
        **options,
    )
    with shared_lock:
        seg = shared_segmenter()  # its caches; the models are the config's
        return drain(iter_segment_image(seg, image, config, inputs), progress)


__all__ = ["segment", "shared_lock", "shared_segmenter"]
