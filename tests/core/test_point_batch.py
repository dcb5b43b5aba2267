"""The grid's points per decoder batch chosen by measurement (``precision="auto"``):
the choice from timings, the probe on the real decoder, the batch the real pipeline
then decodes in, the options' batch first, and damaged cached values refused."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from napari_slip.core.models import autotune
from napari_slip.core.params import SamProposalParams
from napari_slip.core.runtime import perf
from napari_slip.core.runtime.perf import Plan, point_batch


def _save(point_batch_value, per_point=None) -> None:
    """A cached measurement choosing fp32 everywhere, with this point batch."""
    table = {s: {"fp32": {"2": 1.0}} for s in perf.STAGES}
    fidelity = {s: {"fp32": 1.0} for s in perf.STAGES}
    choice = autotune.choose(table, fidelity)
    choice["decoder"]["point_batch"] = point_batch_value
    entry = {
        "table": table,
        "fidelity": fidelity,
        "point_batch": per_point,
        "choice": choice,
        "seconds": 1.0,
        "machine": {},
        "measured_at": "2026-12-05T00:00:00+00:00",
    }
    autotune.cache_file().parent.mkdir(parents=True, exist_ok=True)
    autotune.cache_file().write_text(json.dumps({autotune.machine_key(): entry}))


def test_the_smallest_batch_near_the_fastest_wins():
    assert autotune.choose_batch({"8": 1.0, "16": 0.9, "32": 0.88, "64": 0.5}) == 64
    # Within the tie margin the smaller batch wins: less memory, progress sooner.
    assert autotune.choose_batch({"8": 1.0, "16": 0.97, "32": 0.96, "64": 1.2}) == 8
    assert autotune.choose_batch({"8": 1.0, "16": 0.8, "32": 0.79, "64": 0.9}) == 16


def test_a_plan_carries_its_point_batch_and_options_come_first():
    plan = Plan("bf16", "bf16", "bf16", threads={"decoder": 2}, point_batch=32)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert plan == "bf16"  # the batch changes no result: not in cache keys
    assert point_batch(plan, cpu) == 32
    assert point_batch(plan, cpu, asked=8) == 8  # the run's own option wins
    assert point_batch("bf16", cpu) == 16 and point_batch(plan, cuda) == 64
    assert perf.stages_of(plan)["decoder"]["point_batch"] == 32
    for again in (pickle.loads(pickle.dumps(plan)), copy.deepcopy(plan)):  # to workers
        assert again.point_batch == 32 and again.threads == {"decoder": 2}


def test_the_probe_times_the_real_decoder_at_each_batch(monkeypatch):
    monkeypatch.setattr(autotune, "POINT_BATCHES", (2, 4))
    per_point = autotune.measure_point_batch("fp32", torch.get_num_threads())
    assert set(per_point) == {"2", "4"} and all(0 < t < 10 for t in per_point.values())
    with pytest.raises(autotune.Interrupted):
        autotune.measure_point_batch("fp32", 1, stop=lambda: True)


def test_a_measured_batch_is_the_batch_the_grid_decodes_in(
    monkeypatch, tiny_sam_path, tiny_clip_path
):
    """Through the real segmenter: the grid's progress advances by the measured batch
    (the last batch the rest); ``points_per_batch`` given for a run wins over it;
    provenance records the batch."""
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.testing import blobs_image

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    _save(5, {"5": 0.001})
    image, _ = blobs_image()
    params = SamProposalParams(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=20
    )
    for asked, steps in ((None, [0, 5, 10, 15, 16]), (6, [0, 6, 12, 16])):
        seg = Segmenter(
            str(tiny_sam_path),
            str(tiny_clip_path),
            "cpu",
            sam_params=params
            if asked is None
            else SamProposalParams(
                points_per_side=4,
                points_per_batch=asked,
                pred_iou_thresh=0.0,
                stability_score_thresh=0.0,
                min_area=20,
            ),
            disk_cache=False,
        )
        seen = []

        def progress(p, seen=seen):
            if p.stage == "proposals":
                seen.append(p.done)

        result = seg.segment(image, "cell", mode="topk", top_k=2, progress=progress)
        assert sorted(set(seen)) == steps
        assert result.provenance["precision_stages"]["decoder"]["point_batch"] == 5


@pytest.mark.parametrize("value", [0, -4, 2.5, "16", True, 10**6])
def test_a_damaged_point_batch_is_no_measurement(monkeypatch, value):
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    _save(16)
    assert autotune.load_measurement()["choice"]["decoder"]["point_batch"] == 16
    _save(value)
    assert autotune.load_measurement() is None
    assert autotune.resolve_precision("auto", torch.device("cpu")) == autotune.guess()


def test_models_prints_the_point_batch_measured(monkeypatch, capsys):
    from napari_slip.cli import main

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    _save(32, {"8": 0.0067, "16": 0.0062, "32": 0.0054, "64": 0.0055})
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "grid     per point, by points per batch: 8: 6.7 ms, 16: 6.2 ms, " in out
    assert "32: 5.4 ms, 64: 5.5 ms  -> 32 points per batch" in out
