"""Selection modes on controlled similarities."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.pipeline.selection import select

# Rows: proposals. Columns: prompt, distractor "dog", background.
SIMS = np.array(
    [
        [0.30, 0.10, 0.10],  # clearly the prompt
        [0.28, 0.31, 0.10],  # more like the distractor
        [0.22, 0.05, 0.21],  # the prompt, narrowly over the background (p ~ 0.73)
        [0.10, 0.05, 0.25],  # background
    ]
)


def test_best_is_the_argmax():
    sel = select(SIMS, "best")
    assert sel.indices.tolist() == [0] and sel.scores.tolist() == [0.30]


def test_best_answers_nothing_below_its_threshold():
    sel = select(SIMS, "best", threshold=0.35)
    assert not sel.found and "0.350" in sel.reason and "0.300" in sel.reason


def test_threshold_keeps_all_above_in_score_order():
    assert select(SIMS, "threshold", threshold=0.25).indices.tolist() == [0, 1]
    assert select(SIMS, "threshold").indices.tolist() == [0, 1]  # default 0.25
    assert not select(SIMS, "threshold", threshold=0.5).found


def test_topk_takes_k_best():
    assert select(SIMS, "topk", top_k=3).indices.tolist() == [0, 1, 2]
    assert select(SIMS, "topk", top_k=10).indices.tolist() == [0, 1, 2, 3]


def test_distractors_keep_every_proposal_whose_winner_is_the_prompt():
    sel = select(SIMS, "distractors")
    assert sel.indices.tolist() == [0, 2]
    probs = np.exp(SIMS * 100) / np.exp(SIMS * 100).sum(1, keepdims=True)
    np.testing.assert_allclose(sel.scores, probs[[0, 2], 0])
    assert select(SIMS, "distractors", threshold=0.9).indices.tolist() == [0]


def test_distractors_answer_nothing_when_the_concept_is_absent():
    sel = select(SIMS[[1, 3]], "distractors")
    assert not sel.found and "distractor or the background" in sel.reason


def test_no_proposals_and_bad_arguments():
    assert not select(np.zeros((0, 3)), "best").found
    with pytest.raises(InputError, match="Unknown selection mode"):
        select(SIMS, "all")
    with pytest.raises(InputError, match="top_k"):
        select(SIMS, "topk", top_k=0)
    with pytest.raises(InputError, match="distractor"):
        select(SIMS[:, :1], "distractors")
