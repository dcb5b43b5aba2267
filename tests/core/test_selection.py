"""Selection modes on controlled similarities."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.pipeline.selection import select

from ..floats import assert_close

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
    assert_close(sel.scores, probs[[0, 2], 0], terms=SIMS.shape[1])  # a softmax's sum
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


def test_a_near_duplicate_of_a_kept_object_is_left_out_and_hides_nothing(
    tiny_sam_path, tiny_clip_path
):
    """SAM offers one object twice (IoU 0.9): the better-scoring mask stays, the other
    is no object of its own, and the best object's painted area is its whole mask."""
    from napari_slip.core.pipeline.proposals import Proposals
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.pipeline.session import Candidates

    seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path))
    clip = seg.model_set.load("clip")
    prompt = seg.text_embedding("a blob")
    other = np.random.default_rng(0).normal(size=prompt.shape)
    other /= np.linalg.norm(other)

    def box_mask(y0, x0, y1, x1):
        return np.ones((y1 - y0, x1 - x0), bool)

    boxes = np.array([[10, 10, 30, 30], [10, 10, 30, 31], [40, 40, 60, 60]])
    proposals = Proposals(
        (64, 64),
        boxes,
        [box_mask(*b) for b in boxes],
        np.ones(3, np.float32),
        np.zeros(3, np.int64),
    )
    # The best object is the smaller duplicate: painted largest first, the larger
    # (worse) one would be painted under it, but counted as a second object.
    embeddings = np.stack([prompt, 0.9 * prompt + 0.1 * other, 0.7 * prompt + 0.3 * other])
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    candidates = Candidates(
        proposals,
        embeddings.astype(np.float32),
        (seg.model_set.clip_spec, seg.model_set.precision),
    )
    assert clip is not None
    result = seg.select(candidates, "a blob", mode="threshold", threshold=-1)
    assert result.n_objects == 2
    assert result.candidate_table.set_index("candidate").loc[1, "kept"] == False  # noqa: E712
    best = result.table.iloc[0]
    assert best["area"] == 400 and np.count_nonzero(result.labels == best["id"]) == 400
    top = seg.select(candidates, "a blob", mode="topk", top_k=2)
    assert top.n_objects == 2  # the duplicate does not take a place in the top 2
    assert sorted(top.candidate_table.query("kept")["candidate"]) == [0, 2]
