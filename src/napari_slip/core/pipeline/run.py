"""One run, put together in one place: image -> proposals -> candidates -> relevance
-> selection -> result.

:func:`iter_run` is what every entry point ends in: :func:`~.api.segment`,
:meth:`Segmenter.segment <napari_slip.core.pipeline.segmenter.Segmenter.segment>`,
stacks plane by plane (:mod:`.stack`), batches image by image, the widget and the
console call (through a stack), and the command line. It takes a validated
:class:`~..config.RunConfig`, so every check has happened before it starts.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import InputError
from ..runtime.progress import Progress
from .results import SegmentationResult


def settings_of(segmenter: Any) -> dict:
    """A segmenter's models and options as keyword options of :meth:`RunConfig.build`."""
    return {
        "sam": segmenter.sam_spec,
        "clip": segmenter.clip_spec,
        "device": segmenter.device_spec,
        "precision": segmenter.precision_spec,
        "decoder": segmenter.decoder_spec,
        "templates": segmenter._texts.given,
        "sam_params": segmenter.sam_params,
        "tile_params": segmenter.tile_params,
        "guided_params": segmenter.guided_params,
        "crop_params": segmenter.crop_params,
    }


def configure(segmenter: Any, config: RunConfig) -> None:
    """Give a segmenter a run's models and options: the one place they enter it."""
    models = config.models
    segmenter.model_set.set(models.sam, models.clip, models.device, models.precision)
    segmenter.model_set.set_decoder(models.decoder)
    segmenter.sam_params = config.sam_params
    segmenter.tile_params = config.tile_params
    segmenter.guided_params = config.guided_params
    segmenter.crop_params = config.crop_params
    segmenter._texts.given = config.templates


def iter_run(
    segmenter: Any,
    image: np.ndarray | None,
    config: RunConfig,
    *,
    labels: np.ndarray | None = None,
    source: Any = None,
    labels_out: Any = None,
) -> Generator[Progress, None, SegmentationResult]:
    """One run of ``config`` on ``segmenter`` (a :class:`~.segmenter.Segmenter`, whose
    caches it uses and fills).

    Parameters
    ----------
    image
        The 2D image, or None for the segmenter's last one.
    config
        The run's settings (validated when it was made).
    labels
        A label image whose objects are the proposals (``proposals="labels"``).
    source
        A proposal source of your own instead of the configured proposals.
    labels_out
        Where to paint the labels instead of memory (a ``.zarr`` path or an array).

    The result also carries the candidates (``result.candidates``) and the relevance
    map it used, so that new selection settings need no image work.
    """
    configure(segmenter, config)
    prompt, selection = config.prompt, config.selection
    normalisation = config.normalisation.kwargs()
    if config.proposals in ("relevance", "guided"):
        if labels is not None or source is not None:
            raise InputError(
                f"proposals={config.proposals!r} makes its own candidates: give no "
                "labels or source."
            )
        if image is not None:  # the source needs to know the image (tiled or not)
            segmenter.set_image(image, **normalisation)
            image, normalisation = None, {}
        source = segmenter.proposal_source(config.proposals, prompt)
    elif config.proposals == "labels" and labels is None and source is None:
        raise InputError("proposals='labels' needs the label image: labels=...")
    candidates = yield from segmenter.iter_candidates(
        image, source, labels=labels, **normalisation
    )
    relevance = None
    if config.relevance or selection.relevance_weight:
        relevance = yield from segmenter.iter_relevance(prompt)
    yield Progress("selection", 0, 1, prompt)
    result = segmenter.select(
        candidates, prompt, selection, relevance=relevance, labels_out=labels_out
    )
    yield Progress("selection", 1, 1, result.message)
    result.candidates, result.used_relevance = candidates, relevance
    if config.relevance:
        result.relevance = relevance
    return result


__all__ = ["configure", "iter_run", "settings_of"]
