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
from dataclasses import replace
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import InputError
from ..measure import Measuring
from ..proposal_kinds import PROPOSAL_KINDS
from ..runtime.progress import Progress
from .choose import choose
from .collect import iter_candidates, pick_source, prompt_source
from .finish import finished
from .results import SegmentationResult
from .stack_measure import channels_last


def proposals_of(proposals: str | None, labels: Any = None, source: Any = None) -> str:
    """The proposals a call means: as named, else from its labels, else SAM's grid (or
    a source of the caller's own, which may not need SAM)."""
    if proposals is not None:
        return proposals
    if labels is not None:
        return "labels"
    if source is not None and not getattr(source, "needs_sam", True):
        return "labels"
    return "sam"


def iter_run(
    segmenter: Any,
    image: np.ndarray | None,
    config: RunConfig,
    *,
    labels: np.ndarray | None = None,
    source: Any = None,
    labels_out: Any = None,
    measure: bool = True,
    scale: dict | None = None,
    unit: str | None = None,
) -> Generator[Progress, None, SegmentationResult]:
    """One run of ``config`` on ``segmenter`` (a :class:`~.segmenter.Segmenter`, whose
    caches it uses and fills; its own settings are not used, nor changed: the run's
    models and options are the config's, through :meth:`Segmenter.scope`).

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
    measure, scale, unit
        Add the measurements (:mod:`~napari_slip.core.measure`) to the table, with pixel
        sizes ``scale`` (``{"Y": .., "X": ..}``) in ``unit`` where known.

    The result also carries the candidates (``result.candidates``) and the relevance
    map it used, so that new selection settings need no image work.
    """
    scope = segmenter.scope(config)  # the run's models and options; nothing written
    # Every model file first: a missing CLIP is not found out after SAM's whole stage.
    yield from scope.models.iter_resolve(config.needs_sam)
    original = image
    prompt, selection = config.prompt, config.selection
    if image is not None:
        lazy = config.tile_params.tiles != "off"
        session = segmenter.workspace.open(image, config.normalisation.kwargs(), lazy)
    elif config.normalisation.kwargs():
        raise InputError("Normalisation options need the image they apply to.")
    else:
        session = segmenter.current_session()
    if PROPOSAL_KINDS[config.proposals].from_prompt:
        if labels is not None or source is not None:
            raise InputError(
                f"proposals={config.proposals!r} makes its own candidates: give no "
                "labels or source."
            )
        source = prompt_source(
            config.proposals,
            prompt,
            session,
            scope.context,
            config.guided_params,
            config.sam_params,
            config.tile_params,
        )
    elif config.proposals == "labels" and labels is None and source is None:
        raise InputError("proposals='labels' needs the label image: labels=...")
    query = config.query
    if not isinstance(query, str):  # a concept: its CLIP checked before any image work
        clip = yield from scope.models.iter_load("clip")
        query.check_clip(clip.sha256, scope.models.clip_spec)
    source = pick_source(source, labels, session, config.sam_params, config.tile_params)
    candidates = yield from iter_candidates(
        session,
        source,
        scope.context,
        config.crop_params,
        segmenter.batch_size,
        segmenter.stats,
    )
    if not isinstance(query, str):
        from ..concepts import features_of

        yield Progress("measuring objects", 0, 1, f"{len(candidates)} candidates")
        features_of(candidates, session.image)
        yield Progress("measuring objects", 1, 1, f"{len(candidates)} candidates")
    if measure:  # this run's own copy (cached candidates are shared between runs)
        how = Measuring(channels_last(original, config), scale, unit)
        candidates = replace(candidates, measuring=how)
    relevance = None
    if config.relevance or selection.relevance_weight:
        relevance = yield from scope.context.relevance.iter_map(session, prompt)
    yield Progress("selection", 0, 1, prompt)
    result = choose(
        candidates,
        query,
        selection,
        scope.models,
        scope.texts,
        config.crop_params,
        relevance=relevance,
        labels_out=labels_out,
    )
    result.candidates, result.used_relevance = candidates, relevance
    finished(result, config)  # the run's columns, as every re-selection's and edit's
    yield Progress("selection", 1, 1, result.message)
    if config.relevance:
        result.relevance = relevance
    return result


__all__ = ["iter_run", "proposals_of"]
