"""Which proposals to keep, given their similarities to the prompt and other phrases.

Pure functions over a similarity matrix, so they are tested on controlled numbers.
Every mode may answer "nothing found" rather than force a mask onto an absent object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..params import DEFAULT_THRESHOLD, MODES, SelectionParams


@dataclass
class Selection:
    """Chosen proposals, best first.

    Attributes
    ----------
    indices
        Indices into the proposals, in decreasing score order.
    scores
        The score of each chosen proposal in this mode: cosine similarity for best,
        threshold and topk; probability of the prompt for distractors.
    all_scores
        That score for every proposal.
    reason
        Why nothing (or what) was selected, in one line.
    """

    indices: np.ndarray
    scores: np.ndarray
    all_scores: np.ndarray
    reason: str = ""

    @property
    def found(self) -> bool:
        return len(self.indices) > 0


def score_unit(mode: str, relevance_weight: float = 0.0, concept: bool = False) -> str:
    """What a selection's scores are, and so its threshold (one of
    :data:`SCORE_UNITS`): a concept's class probability, the prompt's probability
    against the distractors, or the cosine similarity to the prompt (plus the relevance
    map's share)."""
    if concept:
        return "class probability"
    if mode == "distractors":
        return "probability vs distractors"
    return "cosine + relevance" if relevance_weight else "cosine similarity"


#: The units scores come in (:func:`score_unit`): the range a threshold
#: in each may take and where it starts.
SCORE_UNITS = {
    "cosine similarity": (-1.0, 1.0, DEFAULT_THRESHOLD),
    "cosine + relevance": (-1.0, 1.0, DEFAULT_THRESHOLD),
    "probability vs distractors": (0.0, 1.0, 0.5),
    "class probability": (0.0, 1.0, 0.5),
}


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def select(
    similarities: np.ndarray,
    mode: str = MODES[0],
    threshold: float | None = None,
    top_k: int = SelectionParams.default("top_k"),
    logit_scale: float = 100.0,
) -> Selection:
    """Select proposals.

    Parameters
    ----------
    similarities
        (N, T) cosine similarities. Column 0 is the prompt; columns 1.. are competing
        phrases (distractors, then the background phrase), used by ``distractors``.
    mode
        ``best``: the single most similar proposal (SLIP).
        ``threshold``: every proposal with similarity >= ``threshold``.
        ``distractors``: softmax over all columns (scaled by ``logit_scale``); keep
        every proposal whose most likely phrase is the prompt.
        ``topk``: the ``top_k`` most similar proposals.
    threshold
        A floor on the mode's score (cosine, or probability for distractors). Required
        meaning in ``threshold`` mode (default :data:`DEFAULT_THRESHOLD`); optional in
        the others, where a proposal below it is not selected.
    top_k
        How many proposals ``topk`` keeps.
    logit_scale
        CLIP's temperature for the softmax in ``distractors`` mode.
    """
    if mode not in MODES:
        raise InputError(f"Unknown selection mode {mode!r}; use one of {', '.join(MODES)}.")
    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2 or sims.shape[1] < 1:
        raise InputError(f"similarities must be (proposals, phrases); got shape {sims.shape}.")
    n = sims.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if mode == "distractors":
        if sims.shape[1] < 2:
            raise InputError(
                "distractors mode needs at least one distractor or background phrase."
            )
        probs = softmax(sims * logit_scale, axis=1)
        scores = probs[:, 0]
        candidates = np.flatnonzero(probs.argmax(axis=1) == 0)
    else:
        scores = sims[:, 0]
        candidates = np.arange(n)
    if n == 0:
        return Selection(empty, np.zeros(0), scores, "There were no candidate objects.")
    floor = threshold
    if mode == "threshold" and floor is None:
        floor = DEFAULT_THRESHOLD
    if floor is not None:
        candidates = candidates[scores[candidates] >= floor]
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    if mode == "best":
        order = order[:1]
    elif mode == "topk":
        if top_k < 1:
            raise InputError(f"top_k must be at least 1; got {top_k}.")
        order = order[:top_k]
    if len(order):
        reason = f"{len(order)} object(s) selected"
    else:
        best = float(scores.max())
        if mode == "distractors" and floor is None:
            reason = (
                f"Every candidate matched a distractor or the background better than the "
                f"prompt (best prompt probability {best:.2f})."
            )
        else:
            reason = f"No candidate reached the threshold {floor:.3f} (best score {best:.3f})."
    return Selection(order.astype(np.int64), scores[order], scores, reason)
