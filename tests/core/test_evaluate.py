"""Evaluation metrics on controlled masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.training.evaluate import format_report, score_query, summarise


def _disk(cy, cx, r, shape=(40, 40)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_perfect_partial_and_wrong_selections():
    a, b, c = _disk(10, 10, 5), _disk(28, 28, 6), _disk(10, 30, 4)
    truth = [a, b]
    exact = score_query(a.astype(int), truth, n_objects=3)
    assert exact.hit and exact.ious == [1.0] and exact.dices == [1.0]
    assert exact.matched == 1 and exact.chance == pytest.approx(2 / 3)
    wrong = score_query(c.astype(int), truth)
    assert not wrong.hit and wrong.ious == [0.0] and wrong.matched == 0
    both = score_query(a * 1 + b * 2 + c * 3, truth)
    assert both.hit and both.matched == 2 and both.n_selected == 3
    nothing = score_query(np.zeros((40, 40), int), truth)
    assert not nothing.hit and nothing.n_selected == 0

    report = summarise([exact, wrong, both, nothing])
    assert report["queries"] == 4 and report["hit_rate"] == 0.5
    assert report["precision"] == pytest.approx(3 / 5)  # 3 matches of 5 selected masks
    assert report["recall"] == pytest.approx(3 / 8)  # of 2 true objects in each of 4 queries
    assert report["mean_iou"] == pytest.approx(np.mean([1.0, 0.0, 1.0, 1.0, 0.0]))


def test_a_half_overlap_is_not_a_hit():
    truth = np.zeros((10, 10), bool)
    truth[:, :5] = True
    sel = np.zeros((10, 10), int)
    sel[:, 3:10] = 1  # IoU = 20 / 100
    score = score_query(sel, [truth])
    assert not score.hit and score.ious == [pytest.approx(0.2)]


def test_report_table_lists_every_clip_and_chance():
    report = {
        "a": {
            "queries": 4,
            "hit_rate": 0.25,
            "mean_iou": 0.3,
            "dice": 0.3,
            "precision": 0.25,
            "recall": 0.1,
            "chance_hit_rate": 0.25,
            "mode": "best",
        },
        "b": {
            "queries": 4,
            "hit_rate": 1.0,
            "mean_iou": None,
            "dice": None,
            "precision": None,
            "recall": None,
            "chance_hit_rate": 0.25,
            "mode": "best",
        },
    }
    text = format_report(report)
    assert "0.250" in text and "1.000" in text and "(random pick)" in text and " -" in text
