"""The dock's selection settings: the mode, the threshold (a floor in the other modes),
the distractors and top k. Their fields are shown where they do something, the
threshold speaks the mode's score unit, a click on the scores' histogram moves it, and
they give a run (or a re-selection) its selection options."""

from __future__ import annotations

import numpy as np

from ..core.params import parse_phrases
from ..core.pipeline.selection import score_unit
from . import form


class SelectionControls:
    """The selection fields and what they do.

    Parameters
    ----------
    relevance_weight
        The Advanced settings' relevance weight field (it changes the score's unit).
    """

    def __init__(self, relevance_weight) -> None:
        fields = form.selection_fields()
        self.mode, self.threshold = fields["mode"], fields["threshold"]
        self.use_floor, self.distractors = fields["use_floor"], fields["distractors"]
        self.top_k = fields["top_k"]
        self.relevance_weight = relevance_weight

    def fields(self) -> list:
        """Every field whose change re-selects the last result."""
        return [
            self.mode,
            self.threshold,
            self.use_floor,
            self.distractors,
            self.top_k,
            self.relevance_weight,
        ]

    def update(self, concept: bool) -> None:
        """Show each field only where it does something (``concept``: a concept is the
        target, whose classes compete with each other and "none": no mode, no phrases)."""
        mode = self.mode.value
        self.mode.visible = not concept
        self.distractors.visible = mode == "distractors" and not concept
        self.top_k.visible = mode == "topk" and not concept
        self.use_floor.visible = mode != "threshold" or concept
        # The threshold does something only in threshold mode or as a floor (a concept's:
        # a floor on the class probability).
        self.threshold.enabled = (mode == "threshold" and not concept) or bool(
            self.use_floor.value
        )
        self.threshold.set_unit(score_unit(mode, float(self.relevance_weight.value), concept))

    def pick(self, value: float) -> None:
        """The histogram was clicked at ``value``: the threshold goes there (as a floor in
        the modes where it is one), and the selection follows at once."""
        if self.mode.value != "threshold" and not self.use_floor.value:
            self.use_floor.value = True
        step = self.threshold.step or 0.005
        self.threshold.value = float(
            np.clip(round(value / step) * step, self.threshold.min, self.threshold.max)
        )

    def follow(self, histogram, value: float) -> None:
        """``histogram``'s threshold line at the slider's value (where it applies)."""
        if self.threshold.enabled:
            histogram.set_threshold(float(value))

    def options(self) -> dict:
        """The selection options of a run (by name, as ``RunConfig.build`` takes them)."""
        mode = self.mode.value
        floor = mode == "threshold" or self.use_floor.value
        return {
            "mode": mode,
            "threshold": self.threshold.value if floor else None,
            "top_k": int(self.top_k.value),
            "distractors": parse_phrases(self.distractors.value),
            "relevance_weight": float(self.relevance_weight.value),
        }


__all__ = ["SelectionControls"]
