"""Selection over candidates: score them against the prompt and its competitors, keep
what the mode says, paint the labels. A text encoding at most: no image work."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import CropParams, SelectionParams
from .context import TextEmbeddings
from .modelset import ModelSet
from .proposals import near_duplicates
from .provenance import provenance
from .results import SegmentationResult, candidates_table, mean_inside, paint_labels
from .scoring import cosine
from .selection import Selection, score_unit, select
from .session import Candidates


def choose(
    candidates: Candidates,
    prompt: str,
    selection: SelectionParams,
    models: ModelSet,
    texts: TextEmbeddings,
    crop_params: CropParams,
    *,
    relevance: np.ndarray | None = None,
    labels_out: Any = None,
) -> SegmentationResult:
    """The result of ``selection`` over ``candidates`` for ``prompt`` (see
    :meth:`Segmenter.select <napari_slip.core.pipeline.segmenter.Segmenter.select>`);
    ``prompt`` may be a :class:`~..concepts.Concept` or a
    :class:`~..concepts.ConceptQuery` (their classes decide, see :mod:`~..concepts.query`)."""
    from ..concepts import as_query

    query = as_query(prompt)
    if query is not None:
        query.check_clip(models.load("clip").sha256, models.clip_spec)
        prompt, selection = query.name, replace(selection, mode="distractors")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
    if candidates.clip != (models.clip_spec, models.precision):
        raise InputError("These candidates were embedded with another CLIP; collect them again.")
    same = [d for d in selection.distractors if d.casefold() == prompt.strip().casefold()]
    if selection.mode == "distractors" and same:
        raise InputError(
            f"The distractor {same[0]!r} is the prompt itself, so nothing could beat "
            "it; remove it from the distractors."
        )
    logit_scale = models.load("clip").clip.logit_scale
    if query is not None:  # the classifier's log-odds, once: columns and the table's
        logit = query.logits(candidates, texts, logit_scale)
        sims = query.columns(logit) / logit_scale
    else:
        sims = similarities(candidates, prompt, selection, models, texts, relevance)
    proposals = candidates.proposals
    chosen = without_duplicates(proposals, sims, selection, logit_scale)
    similarity = sims[:, 0] if len(sims) else np.zeros(0)
    if query is not None:  # no cosine to show: the class probability
        similarity = chosen.all_scores
    if isinstance(labels_out, (str, os.PathLike)):
        from ..io import create_zarr_labels

        labels_out = create_zarr_labels(labels_out, proposals.shape)
    label_image, table, ids = paint_labels(
        proposals, chosen.indices, chosen.scores, similarity, prompt, out=labels_out
    )
    message = (
        f"{len(table)} object(s) matching {prompt!r}"
        if len(table)
        else f"Nothing found for {prompt!r}: {chosen.reason}"
    )
    if not len(proposals) and proposals.funnel:  # which of SAM's filters dropped what
        from .proposals import funnel_hint

        message = (
            f"Nothing found for {prompt!r}: no candidate objects. {funnel_hint(proposals.funnel)}"
        )
    shrunk = candidates.source.get("max_side")
    if candidates.source.get("source") == "sam" and shrunk and max(proposals.shape) > shrunk:
        message += (
            f" (SAM saw the image shrunk {max(proposals.shape) / shrunk:.1f}x; "
            "tiles keep small objects)"
        )
    record = provenance(prompt, selection, candidates, models, texts.templates(), crop_params)
    candidate_table = candidates_table(proposals, chosen.all_scores, similarity, ids, prompt)
    if query is not None:
        by_id = {v: k for k, v in ids.items()}
        table = query.annotate(table, [by_id[i] for i in table["id"]], logit)
        candidate_table = query.annotate(candidate_table, candidate_table["candidate"], logit)
        record["concept"] = query.describe()
    return SegmentationResult(
        labels=label_image,
        table=table,
        provenance=record,
        message=message,
        candidate_table=candidate_table,
        score_unit=score_unit(selection.mode, selection.relevance_weight, query is not None),
    )


#: Kept masks more alike than this (IoU) are one object: the better-scoring one stays.
DUPLICATE_IOU = 0.8


def without_duplicates(
    proposals, sims: np.ndarray, selection: SelectionParams, logit_scale: float
) -> Selection:
    """The mode's choice with near-duplicates of a better-scoring kept object left out
    (SAM often offers one object twice; the second would hide the first where it is
    painted over it and count twice). ``topk`` takes its ``top_k`` after that."""
    k = len(proposals) if selection.mode == "topk" else selection.top_k
    chosen = select(sims, selection.mode, selection.threshold, max(k, 1), logit_scale)
    if len(chosen.indices) > 1:
        kept = near_duplicates(proposals, chosen.indices, DUPLICATE_IOU)
        mask = np.isin(chosen.indices, kept)
        chosen = Selection(
            chosen.indices[mask], chosen.scores[mask], chosen.all_scores, chosen.reason
        )
    if selection.mode == "topk":
        chosen = Selection(
            chosen.indices[: selection.top_k],
            chosen.scores[: selection.top_k],
            chosen.all_scores,
            chosen.reason,
        )
    return chosen


def similarities(
    candidates: Candidates,
    prompt: str,
    selection: SelectionParams,
    models: ModelSet,
    texts: TextEmbeddings,
    relevance: np.ndarray | None = None,
) -> np.ndarray:
    """(N, phrases) cosine similarity of each candidate to the prompt (column 0, plus the
    relevance weight times its mean relevance where one is set), the distractors and, in
    distractors mode, the background phrase. For a concept query: its selection columns
    (:meth:`~..concepts.ConceptQuery.columns`) over CLIP's ``logit_scale``, so that the
    distractors rule's softmax gives the classifier's probabilities."""
    from ..concepts import as_query

    query = as_query(prompt)
    if query is not None:
        logit_scale = models.load("clip").clip.logit_scale
        logit = query.logits(candidates, texts, logit_scale)
        return query.columns(logit) / logit_scale
    phrases = [prompt, *selection.distractors]
    if selection.mode == "distractors" and selection.background.strip():
        phrases.append(selection.background)
    proposals = candidates.proposals
    if len(proposals):
        vectors = np.stack([texts.embed(p) for p in phrases])
        sims = cosine(candidates.embeddings, vectors)
    else:
        sims = np.zeros((0, len(phrases)))
    if selection.relevance_weight and len(proposals):
        if relevance is None:
            raise InputError("relevance_weight needs the prompt's relevance map.")
        from .guided import unit_map

        inside = mean_inside(proposals, unit_map(relevance, models.relevance_is_probability))
        sims = sims.copy()
        sims[:, 0] += selection.relevance_weight * inside
    return sims


__all__ = ["choose", "similarities"]
