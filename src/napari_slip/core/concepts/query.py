"""A concept as a run's target: its columns for selection, its class columns for tables.

Selection runs the engine's own ``distractors`` rule (:func:`~..pipeline.selection.select`)
on a matrix made from the concept's log-odds: column 0 is the class asked for (or "any
of the classes": the log-sum of their odds), the other columns are what competes with it
(the other classes and "none"). So an object is kept when its most probable label is
the class (or a class, not "none"), its score is that probability, ``threshold`` is a
floor on it, and z-stacks, time series, tiles and re-selection work unchanged: a linked
3D object's row is its parts' rows weighted by area, as for text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError
from .classifier import probabilities
from .concept import Concept
from .features import ObjectFeatures


@dataclass(frozen=True, eq=False)
class ConceptQuery:
    """What a run with a concept looks for: the concept, and one class of it or all."""

    concept: Concept
    class_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.concept, Concept):
            raise InputError(f"concept must be a Concept; got {type(self.concept).__name__}.")
        if self.class_name is not None:
            self.concept.class_index(self.class_name)  # refuses an unknown class

    @property
    def name(self) -> str:
        """The prompt this run is shown under (tables, messages)."""
        return self.class_name or self.concept.name

    def check_clip(self, sha256: str, spec: str) -> None:
        self.concept.check_clip(sha256, spec)

    def describe(self) -> dict:
        from .files import describe

        return {**describe(self.concept), "class": self.class_name}

    def features(self, candidates) -> ObjectFeatures:
        kept = getattr(candidates, "measurements", None)
        if kept is None or len(kept) != len(candidates):
            raise InputError(
                "These candidates carry no measurements for the concept: measure them with "
                "napari_slip.core.concepts.features_of(candidates, segmenter.image)."
            )
        return ObjectFeatures(kept, np.asarray(candidates.embeddings, dtype=np.float32))

    def logits(self, candidates, texts, logit_scale: float) -> np.ndarray:
        """(N, classes + 1) log-odds of every candidate (the last column: none)."""
        features = self.features(candidates)
        text = None
        if self.concept.has_text and len(features):
            text = np.full((len(features), len(self.concept.classes)), np.nan)
            for c, phrase in enumerate(self.concept.texts):
                if phrase:
                    text[:, c] = logit_scale * (features.clip @ texts.embed(phrase))
        return self.concept.logits(features, text)

    def columns(self, logit: np.ndarray) -> np.ndarray:
        """The selection matrix (log-odds): the class asked for first, its competitors."""
        logit = np.asarray(logit, dtype=np.float64)
        n_classes = len(self.concept.classes)
        if self.class_name is None:
            top = logit[:, :n_classes].max(axis=1, keepdims=True)
            lse = top + np.log(np.exp(logit[:, :n_classes] - top).sum(axis=1, keepdims=True))
            return np.concatenate([lse, logit[:, -1:]], axis=1)
        k = self.concept.class_index(self.class_name)
        others = [c for c in range(n_classes + 1) if c != k]
        return np.concatenate([logit[:, k : k + 1], logit[:, others]], axis=1)

    def annotate(self, table: pd.DataFrame, rows: np.ndarray, logit: np.ndarray) -> pd.DataFrame:
        """``table`` with ``class`` and ``class_probability`` columns; ``rows`` gives each
        table row's row of ``logit``."""
        table = table.copy()
        if not len(table):
            table["class"] = pd.Series(dtype=object)
            table["class_probability"] = pd.Series(dtype=float)
            return table
        probs = probabilities(np.asarray(logit)[np.asarray(rows, dtype=np.int64)])
        n_classes = len(self.concept.classes)
        if self.class_name is None:
            best = probs[:, :n_classes].argmax(axis=1)
        else:
            best = np.full(len(probs), self.concept.class_index(self.class_name))
        table["class"] = [self.concept.classes[b] for b in best]
        table["class_probability"] = probs[np.arange(len(best)), best]
        return table


def as_query(prompt) -> ConceptQuery | None:
    """The concept query ``prompt`` is, if it is one."""
    if isinstance(prompt, ConceptQuery):
        return prompt
    if isinstance(prompt, Concept):
        return ConceptQuery(prompt)
    return None


__all__ = ["ConceptQuery", "as_query"]
