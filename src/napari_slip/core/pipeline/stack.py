"""Segmenting images with leading dimensions (Z, T, ...): each 2D plane (with its
colour axis, if any) gives its candidates, then the stack's objects are chosen.

Along Z and T the planes' objects are linked into 3D objects and tracks, and selection
chooses among whole objects (:mod:`.linked`); with ``link=False`` (or along axes that
are neither), each plane's objects are its own, ids unique across the volume, and the
table records which plane each object is in. The candidates of every plane are kept with
the result, so new selection settings are applied to the whole stack without touching
the image again (:func:`reselect_stack`). Tables carry the measurements of
:mod:`~napari_slip.core.measure`.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..config import OPTIONS, RunConfig
from ..errors import InputError
from ..params import SelectionParams, check_options
from ..proposal_kinds import PROPOSAL_KINDS
from ..runtime.generators import relabel
from ..runtime.progress import Progress
from .carry import CarriedSamSource, carried_from
from .finish import finished
from .images import plane_of
from .results import TABLE_COLUMNS, SegmentationResult
from .run import iter_run, proposals_of
from .scope import RunScope
from .selection import score_unit
from .stack_measure import plane_intensity
from .stack_result import StackResult


def lead_letters(lead: str | None, n_lead: int) -> str:
    """Letters of a stack's leading axes: those given, else napari's order (the last
    leading axis is Z, the one before it T; any before those are linked along neither)."""
    if lead is not None:
        if len(lead) != n_lead:
            raise InputError(f"{n_lead} leading axes need {n_lead} letters; got {lead!r}.")
        return lead
    if n_lead == 0:
        return ""
    named = "TZ"[-n_lead:] if n_lead <= 2 else "TZ"
    return "".join(str(i) for i in range(max(0, n_lead - 2))) + named


def leading_shape(shape: Sequence[int], rgb: bool) -> tuple[int, ...]:
    """The leading (non-plane) dimensions of an image of ``shape``."""
    plane_ndim = 3 if rgb else 2
    if len(shape) < plane_ndim:
        raise InputError(f"An image of shape {tuple(shape)} has no 2D plane to segment.")
    return tuple(shape[: len(shape) - plane_ndim])


def _assemble(
    out_shape: tuple[int, ...],
    planes: list[tuple[int, ...]],
    results: list[SegmentationResult],
    prompt: str,
    n_lead: int,
    start_id: int,
    candidates: dict,
) -> StackResult:
    """One labels array and table from per-plane results (ids continue across planes)."""
    out = np.zeros(out_shape, dtype=np.int32)
    tables, scored, next_id = [], [], start_id
    for plane, result in zip(planes, results, strict=True):
        cand = result.candidate_table.copy()
        cand.loc[cand["kept"].astype(bool), "id"] += next_id - 1
        for axis, index in enumerate(plane):
            cand[f"axis{axis}"] = index
        scored.append(cand)
        plane_labels = result.labels
        if len(result.table):
            plane_labels = np.where(plane_labels > 0, plane_labels + (next_id - 1), 0)
            table = result.table.copy()
            table["id"] += next_id - 1
            for axis, index in enumerate(plane):
                table[f"axis{axis}"] = index
            tables.append(table)
            next_id += len(result.table)
        out[plane] = plane_labels
    columns = TABLE_COLUMNS + [f"axis{a}" for a in range(n_lead)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    provenance = {
        **(results[0].provenance if results else {}),
        "planes": [list(p) for p in planes],
    }
    where = f" in {len(planes)} plane(s)" if n_lead else ""
    message = (
        f"{len(table)} object(s) matching {prompt!r}{where}."
        if len(table)
        else f"Nothing found for {prompt!r}{where}."
    )
    if len(planes) == 1 and not len(table):
        message = results[0].message
    scored = [c for c in scored if len(c)]
    candidate_table = (
        pd.concat(scored, ignore_index=True) if scored else results[0].candidate_table.copy()
    )
    result = StackResult(out, table, provenance, message, candidates, prompt, candidate_table)
    if results:
        result.score_unit = results[0].score_unit
    return result


def iter_segment_stack(
    segmenter: Any,
    image: np.ndarray,
    prompt: str,
    *,
    rgb: bool = False,
    planes: Sequence[tuple[int, ...]] | None = None,
    labels: np.ndarray | None = None,
    start_id: int = 1,
    proposals: str | None = None,
    relevance: bool = False,
    lead: str | None = None,
    scale: dict | None = None,
    unit: str | None = None,
    **options: Any,
) -> Generator[Progress, None, StackResult]:
    """Segment chosen planes (default: all) of an nD image.

    Parameters
    ----------
    segmenter
        The engine (a :class:`~.segmenter.Segmenter`).
    image
        Array whose last two axes (three if ``rgb``) are a plane.
    prompt
        What to segment.
    rgb
        Whether the last axis is colour.
    planes
        Leading indices of the planes to segment, e.g. ``[(4,)]`` for z=4 of a
        z-stack; all planes if None.
    labels
        Proposal labels of the image's shape (without colour), used plane by plane.
    start_id
        The first id to give (ids continue across planes).
    proposals
        ``relevance`` or ``guided`` for prompt-guided candidates (see
        :meth:`Segmenter.segment`); default SAM's grid, or ``labels``.
    relevance
        Also make the prompt's relevance map of each plane segmented (see
        :meth:`Segmenter.relevance`): ``result.relevance``, of the labels' shape.
    lead
        The leading axes' letters (``"Z"``, ``"T"``, ``"TZ"``); default napari's order
        (see :func:`lead_letters`). Objects are linked along Z and T.
    scale, unit
        Pixel sizes per axis letter and their unit, for the measurements.
    **options
        Selection and normalisation options, as for :meth:`Segmenter.segment`;
        ``link=False`` (or ``stack_params``) keeps each plane's objects its own.
    """
    check_options(options, OPTIONS, "segment")
    if rgb:
        options.setdefault("rgb", True)
    kind = proposals_of(proposals, labels)
    # The whole run is checked once, before any model loads; each plane is one run.
    config = segmenter.run_config(
        prompt, "segment", proposals=kind, relevance=relevance, **options
    )
    return (
        yield from iter_stack(
            segmenter,
            image,
            config,
            rgb=rgb,
            planes=planes,
            labels=labels,
            start_id=start_id,
            lead=lead,
            scale=scale,
            unit=unit,
        )
    )


def iter_stack(
    segmenter: Any,
    image: Any,
    config: RunConfig,
    *,
    rgb: bool = False,
    planes: Sequence[tuple[int, ...]] | None = None,
    labels: Any = None,
    start_id: int = 1,
    lead: str | None = None,
    scale: dict | None = None,
    unit: str | None = None,
) -> Generator[Progress, None, StackResult]:
    """:func:`iter_segment_stack` for a validated ``config``."""
    kind, prompt, query = config.proposals, config.prompt, config.query
    lead_shape = leading_shape(image.shape, rgb)
    letters = lead_letters(lead, len(lead_shape))
    out_shape = tuple(image.shape[:-1] if rgb else image.shape)
    if labels is not None and tuple(np.shape(labels)) != out_shape:
        raise InputError(
            f"Proposal labels have shape {tuple(np.shape(labels))}, the image needs {out_shape}."
        )
    if PROPOSAL_KINDS[kind].from_prompt and labels is not None:
        raise InputError(f"proposals={kind!r} makes its own candidates: give no labels.")
    if planes is None:
        planes = list(itertools.product(*(range(n) for n in lead_shape)))
    planes = [tuple(int(i) for i in p) for p in planes]
    for p in planes:
        if len(p) != len(lead_shape) or any(
            not 0 <= i < n for i, n in zip(p, lead_shape, strict=True)
        ):
            raise InputError(f"Plane {p} is outside the image's leading shape {lead_shape}.")
    keep_maps = config.relevance or bool(config.selection.relevance_weight)
    results, candidates, maps = [], {}, {}
    carries = carrying(config, kind, labels, letters, image.shape[len(lead_shape) :][:2])
    for n, plane in enumerate(planes, start=1):
        if lead_shape:  # a plain 2D image has no slices to report
            yield Progress("slice", n - 1, len(planes), f"slice {plane}")
        previous = planes[n - 2] if n > 1 else None
        source = None
        if carries and carried_plane(previous, plane, config.stack_params.grid_every):
            source = CarriedSamSource(
                config.sam_params, carried_from(candidates[previous].proposals)
            )
        gen = iter_run(
            segmenter,
            plane_of(image, plane),
            config,
            labels=None if labels is None else np.asarray(labels[plane]),
            source=source,
            measure=False,
        )
        if len(planes) > 1:
            tag = f"slice {n}/{len(planes)} {plane}"
            gen = relabel(gen, lambda e, tag=tag: f"{tag}: {e.message}")
        result = yield from gen
        candidates[plane] = result.candidates
        if keep_maps:
            maps[plane] = result.used_relevance
        results.append(result)
    linking = config.stack_params.link and len(planes) > 1 and any(a in letters for a in "ZT")
    if linking:
        yield Progress("linking", 0, 1, "linking objects across planes")
        from .linked import link_parts, partition

        scope = segmenter.scope(config)
        sims = [
            plane_similarities(scope, candidates[p], query, config.selection, maps.get(p))
            for p in planes
        ]
        parts = [
            partition(candidates[p].proposals, sims[i][:, 0], config.stack_params.dedup_iou)
            for i, p in enumerate(planes)
        ]
        intensity = partial(plane_intensity, image, config=config)
        linked = link_parts(parts, planes, out_shape, letters, config.stack_params, intensity)
        result = linked_result(scope, linked, candidates, sims, config.selection, query)
        result.provenance = {
            **(results[0].provenance if results else {}),
            "planes": [list(p) for p in planes],
        }
        yield Progress("linking", 1, 1, result.message)
    else:
        result = _assemble(
            out_shape, planes, results, prompt, len(lead_shape), start_id, candidates
        )
    result.candidates, result.query = candidates, query
    result.provenance["stack"] = {
        "axes": letters + "YX",
        **config.stack_params.as_dict(),
        "linked": bool(linking),
    }
    result.axes, result.scale, result.unit = letters + "YX", dict(scale or {}), unit
    result.image = image
    finished(result, config)
    result.plane_relevance = maps
    if config.relevance:
        result.relevance = relevance_volume(out_shape, maps)
    if lead_shape:
        yield Progress("slice", len(planes), len(planes), result.message)
    return result


def carrying(config: RunConfig, kind: str, labels, letters: str, plane_shape) -> bool:
    """Whether planes between full grids decode only the previous plane's objects
    (see :mod:`.carry`): ``grid_every`` above 1, SAM's own grid (untiled) as the
    proposals, and a Z or T axis last among the leading ones."""
    from .collect import is_tiled

    if config.stack_params.grid_every <= 1 or kind != "sam" or labels is not None:
        return False
    if not letters or letters[-1] not in "ZT":
        return False
    return not is_tiled(config.tile_params, config.sam_params, tuple(plane_shape))


def carried_plane(previous, plane, grid_every: int) -> bool:
    """Whether ``plane`` decodes ``previous``'s objects rather than the full grid: it
    follows ``previous`` along the last leading axis and is not one of every
    ``grid_every``-th planes (those, and the first plane, decode the full grid)."""
    if previous is None or plane[:-1] != previous[:-1] or plane[-1] != previous[-1] + 1:
        return False
    return plane[-1] % grid_every != 0


def plane_similarities(scope: RunScope, candidates, prompt, selection, relevance) -> np.ndarray:
    """One plane's candidates' similarities (see :func:`.choose.similarities`), with
    the run's models and templates."""
    from .choose import similarities

    return similarities(candidates, prompt, selection, scope.models, scope.texts, relevance)


def linked_result(
    scope: RunScope,
    linked,
    candidates: dict,
    sims: list[np.ndarray],
    selection: SelectionParams,
    prompt: str,
) -> StackResult:
    """The stack's labels and tables for ``selection`` over linked objects (``prompt``:
    the text, or a concept query, whose classes then label the objects)."""
    from .linked import object_similarities, select_objects
    from .results import candidates_table
    from .selection import select

    logit_scale = scope.models.load("clip").clip.logit_scale
    mode, floor, k = selection.mode, selection.threshold, selection.top_k
    chosen, labels, final, object_sims = select_objects(linked, sims, mode, floor, k, logit_scale)
    query, prompt = prompt, getattr(prompt, "name", prompt)
    rows = [
        {
            "id": int(final[o]),
            "score": float(s),
            "similarity": float(object_sims[o, 0]),
            "prompt": prompt,
        }
        for o, s in zip(chosen.indices, chosen.scores, strict=True)
    ]
    table = pd.DataFrame(rows, columns=["id", "score", "similarity", "prompt"])
    if "T" in linked.lead:  # a track's mother (0: none, or not kept)
        mothers = linked.parents()[chosen.indices]
        table["parent_track"] = np.where(mothers >= 0, final[mothers], 0).astype(np.int64)
    if not isinstance(query, str):  # a concept: each object's class, from its parts'
        # Each object's log-odds are its parts', weighted by area (as its selection row).
        logit = [query.logits(candidates[p], scope.texts, logit_scale) for p in linked.planes]
        n_columns = len(query.concept.classes) + 1
        objects = object_similarities(linked, logit, n_columns)
        table = query.annotate(table, chosen.indices, objects)
    scored = []
    for n, plane in enumerate(linked.planes):
        ids = {}
        for part in np.flatnonzero(linked.plane_of_part == n):
            if part and final[linked.object_of_part[part]]:
                ids[int(linked.candidate_of_part[part])] = int(final[linked.object_of_part[part]])
        proposals = candidates[plane].proposals
        plane_scores = (
            select(sims[n], mode, None, k, logit_scale).all_scores if len(sims[n]) else np.zeros(0)
        )
        cand = candidates_table(
            proposals, plane_scores, sims[n][:, 0] if len(sims[n]) else np.zeros(0), ids, prompt
        )
        for axis, index in enumerate(plane):
            cand[f"axis{axis}"] = index
        if len(cand):
            scored.append(cand)
    what = "track(s)" if "T" in linked.lead else "3D object(s)"
    where = f" in {len(linked.planes)} plane(s)"
    message = (
        f"{len(table)} {what} matching {prompt!r}{where}."
        if len(table)
        else f"Nothing found for {prompt!r}{where}: {chosen.reason}"
    )
    candidate_table = pd.concat(scored, ignore_index=True) if scored else candidates_table(None)
    result = StackResult(labels, table, {}, message, candidates, prompt, candidate_table)
    result.score_unit = score_unit(
        selection.mode, selection.relevance_weight, not isinstance(query, str)
    )
    result.linked = linked
    result.object_scores = pd.DataFrame(
        {"score": chosen.all_scores, "kept": final > 0, "id": final}
    )
    return result


def relevance_volume(
    shape: tuple[int, ...], maps: dict[tuple[int, ...], np.ndarray]
) -> np.ndarray:
    """One float32 array of ``shape`` from relevance maps per plane (leading indices
    -> 2D map); planes without a map are 0. A 2D image's map is returned as it is."""
    if len(maps) == 1 and () in maps:
        return np.asarray(maps[()], dtype=np.float32)
    out = np.zeros(shape, dtype=np.float32)  # pages untouched until written
    for plane, values in maps.items():
        out[plane] = values
    return out


def reselect_stack(
    segmenter: Any,
    previous: StackResult,
    selection: SelectionParams,
    start_id: int = 1,
) -> StackResult:
    """``previous`` with new selection settings: no image work, a text encoding at most
    (with the models and options of the run that made ``previous``)."""
    planes = list(previous.candidates)
    config = previous.config
    maps, what = previous.plane_relevance, previous.query or previous.prompt
    if selection.relevance_weight and any(p not in maps for p in planes):
        raise InputError("The relevance weight needs the relevance map: run again.")
    if previous.linked is not None:
        scope = segmenter.scope(config)
        sims = [
            plane_similarities(scope, previous.candidates[p], what, selection, maps.get(p))
            for p in planes
        ]
        result = linked_result(scope, previous.linked, previous.candidates, sims, selection, what)
        result.provenance = {**previous.provenance, "selection": selection.as_dict()}
    else:
        results = [
            segmenter.select(
                previous.candidates[p], what, selection, relevance=maps.get(p), config=config
            )
            for p in planes
        ]
        n_lead = len(planes[0]) if planes else 0
        result = _assemble(
            previous.labels.shape,
            planes,
            results,
            previous.prompt,
            n_lead,
            start_id,
            previous.candidates,
        )
    result.provenance.setdefault("stack", previous.provenance.get("stack"))
    result.axes, result.scale, result.unit = previous.axes, previous.scale, previous.unit
    result.image = previous.image
    result.plane_relevance, result.query = maps, previous.query
    result.relevance = previous.relevance
    finished(result, None if config is None else config.with_selection(selection))
    return result
