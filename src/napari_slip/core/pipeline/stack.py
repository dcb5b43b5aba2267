"""Segmenting images with leading dimensions (z, t, ...) plane by plane.

Each 2D plane (with its colour axis, if any) is segmented on its own; ids stay unique
across the whole volume, and the table records which plane each object is in. The
candidates of every plane are kept with the result, so new selection settings are
applied to the whole stack without touching the image again (:func:`reselect_stack`).
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..params import NormalisationParams, SelectionParams, check_options
from ..runtime.generators import relabel
from ..runtime.progress import Progress
from .images import plane_of
from .results import TABLE_COLUMNS, SegmentationResult
from .segmenter import Segmenter, proposals_of
from .session import Candidates


@dataclass
class StackResult:
    """Labels for a whole stack.

    Attributes
    ----------
    labels
        int32 array of the stack's shape without the colour axis.
    table
        The per-object table with one ``axis{i}`` column per leading axis.
    provenance
        The first segmented plane's provenance, plus the planes done.
    message
        One line about the whole run.
    candidates
        Each segmented plane's candidates (for re-selection without image work).
    prompt
        The prompt the labels answer.
    candidate_table
        Every candidate of every plane with its score, ``kept`` and ``id`` (see
        :class:`~.results.SegmentationResult`), with the ``axis{i}`` columns.
    """

    labels: np.ndarray
    table: pd.DataFrame
    provenance: dict = field(default_factory=dict)
    message: str = ""
    candidates: dict[tuple[int, ...], Candidates] = field(default_factory=dict, repr=False)
    prompt: str = ""
    candidate_table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    #: The prompt's relevance map where one was asked for (``relevance=True``): float32
    #: of the labels' shape; in a stack, planes not segmented are 0.
    relevance: np.ndarray | None = None
    #: Each plane's relevance map where one was made (asked for, or selection used it:
    #: ``relevance_weight``), for re-selection without image work.
    plane_relevance: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_objects(self) -> int:
        return len(self.table)


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
        f"{len(table)} object(s) matching {prompt!r}{where}"
        if len(table)
        else f"Nothing found for {prompt!r}{where}"
    )
    if len(planes) == 1 and not len(table):
        message = results[0].message
    scored = [c for c in scored if len(c)]
    candidate_table = (
        pd.concat(scored, ignore_index=True) if scored else results[0].candidate_table.copy()
    )
    return StackResult(out, table, provenance, message, candidates, prompt, candidate_table)


def iter_segment_stack(
    segmenter: Segmenter,
    image: np.ndarray,
    prompt: str,
    *,
    rgb: bool = False,
    planes: Sequence[tuple[int, ...]] | None = None,
    labels: np.ndarray | None = None,
    start_id: int = 1,
    proposals: str | None = None,
    relevance: bool = False,
    **options: Any,
) -> Generator[Progress, None, StackResult]:
    """Segment chosen planes (default: all) of an nD image.

    Parameters
    ----------
    segmenter
        The engine.
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
    **options
        Selection and normalisation options, as for :meth:`Segmenter.segment`.
    """
    check_options(options, (*SelectionParams.names(), *NormalisationParams.names()), "segment")
    if rgb:
        options.setdefault("rgb", True)
    kind = proposals_of(proposals, labels)
    # The whole run is checked once, before any model loads; each plane is one run.
    config = segmenter.run_config(
        prompt, "segment", proposals=kind, relevance=relevance, **options
    )
    lead = leading_shape(image.shape, rgb)
    out_shape = tuple(image.shape[:-1] if rgb else image.shape)
    if labels is not None and tuple(np.shape(labels)) != out_shape:
        raise InputError(
            f"Proposal labels have shape {tuple(np.shape(labels))}, the image needs {out_shape}."
        )
    if kind in ("relevance", "guided") and labels is not None:
        raise InputError(f"proposals={kind!r} makes its own candidates: give no labels.")
    if planes is None:
        planes = list(itertools.product(*(range(n) for n in lead)))
    planes = [tuple(int(i) for i in p) for p in planes]
    for p in planes:
        if len(p) != len(lead) or any(not 0 <= i < n for i, n in zip(p, lead, strict=True)):
            raise InputError(f"Plane {p} is outside the image's leading shape {lead}.")
    keep_maps = relevance or bool(config.selection.relevance_weight)
    results, candidates, maps = [], {}, {}
    for n, plane in enumerate(planes, start=1):
        if lead:  # a plain 2D image has no slices to report
            yield Progress("slice", n - 1, len(planes), f"slice {plane}")
        gen = segmenter.iter_run(
            plane_of(image, plane),
            config,
            labels=None if labels is None else np.asarray(labels[plane]),
        )
        if len(planes) > 1:
            tag = f"slice {n}/{len(planes)} {plane}"
            gen = relabel(gen, lambda e, tag=tag: f"{tag}: {e.message}")
        result = yield from gen
        candidates[plane] = result.candidates
        if keep_maps:
            maps[plane] = result.used_relevance
        results.append(result)
    result = _assemble(out_shape, planes, results, prompt, len(lead), start_id, candidates)
    result.plane_relevance = maps
    if relevance:
        result.relevance = relevance_volume(out_shape, maps)
    if lead:
        yield Progress("slice", len(planes), len(planes), result.message)
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
    segmenter: Segmenter,
    previous: StackResult,
    selection: SelectionParams,
    start_id: int = 1,
) -> StackResult:
    """``previous`` with new selection settings: no image work, a text encoding at most."""
    planes = list(previous.candidates)
    maps = previous.plane_relevance
    if selection.relevance_weight and any(p not in maps for p in planes):
        raise InputError("The relevance weight needs the relevance map: run again.")
    results = [
        segmenter.select(previous.candidates[p], previous.prompt, selection, relevance=maps.get(p))
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
    result.plane_relevance = maps
    result.relevance = previous.relevance
    return result
