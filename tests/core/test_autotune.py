"""precision="auto" by measurement: the choice from injected timings (ties, a failing
fidelity check, threads), the cache per machine (a changed CPU or torch measures
again), a per-stage plan running through the real pipeline, the background
measurement (real thread, given up when a run starts), and what `models` prints."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_slip.core.models import autotune
from napari_slip.core.runtime import perf
from napari_slip.core.runtime.perf import Plan, stage_precision, stages_of


def _table(encoder, decoder, clip):
    """``{stage: {precision: {threads: seconds}}}`` from ``{precision: seconds}`` (or
    ``{precision: {threads: seconds}}``) per stage."""

    def rows(d):
        return {p: (t if isinstance(t, dict) else {"2": t}) for p, t in d.items()}

    return {"encoder": rows(encoder), "decoder": rows(decoder), "clip": rows(clip)}


def _faithful(table, **cosines):
    fid = {s: {p: 1.0 for p in row} for s, row in table.items()}
    for key, cos in cosines.items():
        stage, precision = key.split("_")
        fid[stage][precision] = cos
    return fid


def _entry(table, fidelity):
    return {
        "table": table,
        "fidelity": fidelity,
        "choice": autotune.choose(table, fidelity),
        "seconds": 1.0,
        "machine": {},
        "measured_at": "2026-12-02T00:00:00+00:00",
    }


def test_the_fastest_faithful_precision_wins_per_stage():
    table = _table(
        {"fp32": 7.5, "bf16": 4.0, "int8": 4.8},
        {"fp32": 1.00, "bf16": 0.99, "int8": 0.80},  # int8 fastest but unfaithful (below)
        {"fp32": 0.20, "bf16": 0.25, "int8": 0.12},
    )
    choice = autotune.choose(table, _faithful(table, decoder_int8=0.95))
    assert {s: c["precision"] for s, c in choice.items()} == {
        "encoder": "bf16",  # fastest
        "decoder": "fp32",  # bf16 within the tie margin of fp32; int8 fails fidelity
        "clip": "int8",  # stages may differ
    }
    plan = autotune.plan_of(choice)
    assert isinstance(plan, str) and plan == "enc-bf16.dec-fp32.clip-int8"
    assert [stage_precision(plan, s) for s in perf.STAGES] == ["bf16", "fp32", "int8"]
    assert stage_precision("bf16", "decoder") == "bf16"  # one precision: every stage
    assert stages_of(plan)["clip"] == {"precision": "int8", "threads": 2}
    assert Plan("bf16", "bf16", "bf16") == "bf16"  # uniform: the plain name
    import copy
    import pickle

    for again in (pickle.loads(pickle.dumps(plan)), copy.deepcopy(plan)):  # to workers
        assert isinstance(again, Plan) and again == plan and again.threads == plan.threads
        assert stage_precision(again, "clip") == "int8"


def test_fp32_keeps_ties_and_threads_are_chosen_too():
    table = _table(
        {"fp32": {"1": 1.0, "2": 0.6}, "bf16": {"1": 0.9, "2": 0.59}},  # tie at 2 threads
        {"fp32": {"1": 0.5, "2": 0.7}, "bf16": {"1": 0.6, "2": 0.8}},  # 1 thread faster
        {"fp32": {"1": 0.3, "2": 0.3}, "bf16": {"1": 0.1, "2": 0.2}},
    )
    choice = autotune.choose(table, _faithful(table))
    # int8 1% ahead of bf16 is noise, not worth a quantized copy of the model: bf16.
    near = _table(
        {"fp32": 7.5, "bf16": 4.00, "int8": 3.96}, {"fp32": 1.0, "int8": 0.5}, {"fp32": 1.0}
    )
    picked = autotune.choose(near, _faithful(near))
    assert picked["encoder"]["precision"] == "bf16" and picked["decoder"]["precision"] == "int8"
    assert choice["encoder"] == {"precision": "fp32", "threads": 2}
    assert choice["decoder"] == {"precision": "fp32", "threads": 1}
    assert choice["clip"] == {"precision": "bf16", "threads": 1}
    # Never slower than fp32: every choice within the tie margin of fp32's best or faster.
    for stage, pick in choice.items():
        best_fp32 = min(table[stage]["fp32"].values())
        assert table[stage][pick["precision"]][str(pick["threads"])] <= best_fp32


def test_the_cache_is_per_machine_and_a_changed_cpu_measures_again(monkeypatch):
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "_PENDING", False)
    cpu = torch.device("cpu")
    assert autotune.resolve_precision("auto", cpu) == autotune.guess()  # nothing measured
    assert autotune.pending()
    table = _table(
        {"fp32": 2.0, "int8": 1.0}, {"fp32": 1.0, "int8": 2.0}, {"fp32": 1.0, "int8": 0.5}
    )
    autotune.save_measurement(_entry(table, _faithful(table)))
    plan = autotune.resolve_precision("auto", cpu)
    assert plan == "enc-int8.dec-fp32.clip-int8" and isinstance(plan, Plan)
    assert autotune.resolve_precision("fp32", cpu) == "fp32"  # forced: no plan
    saved = json.loads(autotune.cache_file().read_text())
    assert list(saved) == [autotune.machine_key()] and "torch" in autotune.machine_key()
    # A damaged cache is no measurement (measured again), never a broken run.
    good = autotune.cache_file().read_text()
    for damaged in (
        "{not json",
        json.dumps(
            {
                autotune.machine_key(): {
                    "choice": {s: {"precision": "fp64", "threads": 2} for s in perf.STAGES}
                }
            }
        ),
    ):
        autotune.cache_file().write_text(damaged)
        assert autotune.load_measurement() is None
        assert autotune.resolve_precision("auto", cpu) == autotune.guess()
    autotune.cache_file().write_text(good)
    # Another torch (or CPU model, flags, threads): the measurement does not apply.
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert autotune.load_measurement() is None
    assert autotune.resolve_precision("auto", cpu) == autotune.guess()
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "0")  # off: the flag table, nothing due
    monkeypatch.setattr(autotune, "_PENDING", False)
    assert autotune.resolve_precision("auto", cpu) == autotune.guess()
    assert not autotune.pending() and autotune.measure_when_idle() is None


def test_a_measured_plan_runs_each_stage_in_its_precision(
    monkeypatch, tiny_sam_path, tiny_clip_path, fast_sam_params
):
    """The plan enters the real pipeline: SAM's encoder int8 (its quantized copy made),
    the decoder fp32, CLIP bf16; provenance says so; the threads come back."""
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.testing import blobs_image

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    table = _table(
        {"fp32": 2.0, "int8": 1.0, "bf16": 1.5},
        {"fp32": 1.0, "int8": 2.0, "bf16": 2.0},
        {"fp32": 1.0, "int8": 0.9, "bf16": 0.5},
    )
    autotune.save_measurement(_entry(table, _faithful(table)))
    threads = torch.get_num_threads()
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        disk_cache=False,
    )
    image, _ = blobs_image()
    result = seg.segment(image, "cell", mode="topk", top_k=2)
    stages = result.provenance["precision_stages"]
    assert {s: v["precision"] for s, v in stages.items()} == {
        "encoder": "int8",
        "decoder": "fp32",
        "clip": "bf16",
    }
    assert result.provenance["precision"] == "enc-int8.dec-fp32.clip-bf16"
    assert seg.model_set.load("sam").promptable._int8 is not None  # the encoder ran int8
    assert seg.model_set.load("clip").clip.precision == "bf16"
    assert seg.model_set.load("clip").clip.dtype == torch.bfloat16
    assert torch.get_num_threads() == threads and len(result.table) >= 1


def test_stage_threads_are_restored_and_stay_within_a_workers_share(monkeypatch):
    before = torch.get_num_threads()
    plan = Plan("fp32", "fp32", "fp32", threads={"encoder": 1, "clip": 8})
    with perf.stage_threads(plan, "encoder"):
        assert torch.get_num_threads() == 1
    with perf.stage_threads(plan, "decoder"):  # none chosen: as it is
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
    monkeypatch.setattr(perf, "_THREAD_CAP", None)
    perf.cap_threads(1)  # a batch worker's share of the cores
    with perf.stage_threads(plan, "clip"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_plans_threads_are_set_around_its_stages_only(
    monkeypatch, tiny_sam_path, tiny_clip_path, fast_sam_params
):
    """Measured: the encoder fastest on another thread count than the process's; the run
    sets it around the encoder and gives the process its own count back (watched
    through torch's own setter)."""
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.testing import blobs_image

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    table = _table(
        {"fp32": {str(other): 1.0, str(before): 2.0}},
        {"fp32": {str(before): 1.0}},
        {"fp32": {str(before): 1.0}},
    )
    autotune.save_measurement(_entry(table, _faithful(table)))
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n))[1])
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        disk_cache=False,
    )
    seg.segment(blobs_image()[0], "cell", mode="topk", top_k=1)
    assert calls[:2] == [other, before] and set(calls) == {other, before}
    assert torch.get_num_threads() == before


def test_a_real_measurement_is_consistent_and_gives_up_when_a_run_starts(monkeypatch):
    """The probes really run in the real background thread (fp32 only, one thread
    count, to stay quick): a table for every stage and a choice among the measured
    cells; bf16's fidelity is measured against fp32 (CLIP's probe); a measurement asked
    to stop keeps nothing."""
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "_PENDING", True)
    n = torch.get_num_threads()
    with pytest.raises(autotune.Interrupted):
        autotune.measure(["fp32"], [n], stop=lambda: True, stages=("clip",))
    assert autotune.load_measurement() is None and autotune.pending()
    clip = autotune.measure(["fp32", "bf16"], [n], stages=("clip",))
    assert set(clip["table"]) == {"clip"} and 0.99 < clip["fidelity"]["clip"]["bf16"] <= 1.0
    monkeypatch.setattr(autotune, "ENCODER_GRID", 28)  # the global block on fewer tokens
    monkeypatch.setattr(autotune, "POINT_BATCHES", (4, 8))  # 8 points, not 64
    monkeypatch.setattr(autotune, "cpu_precisions", lambda: ["fp32"])
    monkeypatch.setattr(autotune, "thread_options", lambda: [n])
    stopped = autotune.measure_when_idle()  # waits a moment, then measures
    with perf.running():  # a run starts: the background measurement gives way
        stopped.join(timeout=60)
        assert autotune.load_measurement() is None and autotune.pending()
    # The run's end (the process idle again) starts the real background thread.
    thread = autotune._THREAD
    assert thread is not stopped and thread.name == "napari-slip autotune"
    assert autotune.measure_when_idle() is None  # one at a time
    thread.join(timeout=120)
    entry = autotune.load_measurement()
    assert entry is not None and not autotune.pending()
    for stage in perf.STAGES:
        assert entry["table"][stage]["fp32"][str(n)] > 0
        pick = {k: v for k, v in entry["choice"][stage].items() if k != "point_batch"}
        assert pick == {"precision": "fp32", "threads": n}
    per_point = entry["point_batch"]  # the grid's decode timed at each batch
    assert set(per_point) == {"4", "8"} and all(t > 0 for t in per_point.values())
    assert entry["choice"]["decoder"]["point_batch"] == autotune.choose_batch(per_point)
    assert entry["machine"]["model"] == perf.cpu_info()["model"]


def test_models_prints_the_measured_table_and_the_choice(monkeypatch, capsys):
    from napari_slip.cli import main

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    assert main(["models"]) == 0
    assert "not measured yet" in capsys.readouterr().out
    table = _table(
        {"fp32": 7.5, "bf16": 4.0, "int8": 4.8},
        {"fp32": 0.02, "bf16": 0.017},
        {"fp32": 0.2, "int8": 0.1},
    )
    autotune.save_measurement(_entry(table, _faithful(table, clip_int8=0.5)))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "encoder  fp32 7500 ms x2; bf16 4000 ms x2; int8 4800 ms x2  -> bf16" in out
    assert "int8 100 ms x2 (cos 0.500: refused)  -> fp32" in out


def test_physical_cores_and_thread_options():
    options = autotune.thread_options()
    assert options == sorted(set(options)) and all(n >= 1 for n in options)
    cores = autotune.physical_cores()
    assert cores is None or 1 <= cores <= max(options)
    assert np.all(np.diff(options) > 0)


def test_the_command_line_measures_only_when_asked(
    monkeypatch, tmp_path, tiny_sam_path, tiny_clip_path, capsys
):
    """A CLI run with ``auto`` and no measurement uses the flag table and prints only
    its own work: no measurement in the foreground after it, no background thread.
    ``napari-slip models --measure`` measures; the next run uses that plan."""
    import tifffile

    from napari_slip.cli import main
    from napari_slip.testing import blobs_image

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "ENCODER_GRID", 28)
    monkeypatch.setattr(autotune, "POINT_BATCHES", (4, 8))
    monkeypatch.setattr(autotune, "cpu_precisions", lambda: ["fp32"])
    monkeypatch.setattr(autotune, "_THREAD", None)
    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    args = [
        "segment",
        str(tmp_path / "img.tif"),
        "--prompt",
        "cell",
        "-o",
        str(tmp_path / "out.tif"),
        "--proposals-from",
        str(tmp_path / "labels.tif"),
        "--sam",
        str(tiny_sam_path),
        "--clip",
        str(tiny_clip_path),
        "--device",
        "cpu",
        "--mode",
        "topk",
        "--top-k",
        "2",
        "--provenance",
        str(tmp_path / "prov.json"),
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "precisions" not in captured.err + captured.out
    assert (tmp_path / "out.tif").is_file() and autotune.load_measurement() is None
    assert autotune._THREAD is None  # no background thread either
    first = json.loads((tmp_path / "prov.json").read_text())
    assert first["precision"] == autotune.guess()
    assert main(["models", "--measure"]) == 0
    assert autotune.load_measurement() is not None
    assert "precision 'auto' measured" in capsys.readouterr().out
    assert main([*args, "--overwrite"]) == 0
    assert "precisions" not in capsys.readouterr().err
    again = json.loads((tmp_path / "prov.json").read_text())
    assert again["precision"] == "fp32" and again["precision_stages"]["encoder"]["threads"]


def _saved_with_threads(threads):
    table = _table({"fp32": 1.0}, {"fp32": 1.0}, {"fp32": 1.0})
    entry = _entry(table, _faithful(table))
    for pick in entry["choice"].values():
        pick["threads"] = threads
    autotune.cache_file().parent.mkdir(parents=True, exist_ok=True)
    autotune.cache_file().write_text(json.dumps({autotune.machine_key(): entry}))


def test_hostile_cache_values_are_no_measurement(monkeypatch):
    """Thread counts beyond what the process may use, a huge file, a deeply nested one:
    no measurement (the flag table), never a failing or flooded run."""
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    cpu = torch.device("cpu")
    most = max(autotune.thread_options())
    _saved_with_threads(most)
    assert autotune.load_measurement() is not None  # the largest allowed is kept
    for threads in (10**30, 4096, most + 1, 0, 2.5):
        _saved_with_threads(threads)
        assert autotune.load_measurement() is None, threads
        assert autotune.resolve_precision("auto", cpu) == autotune.guess()
    path = autotune.cache_file()
    path.write_text("[" * 100_000 + "]" * 100_000)  # nesting json cannot parse
    assert autotune.load_measurement() is None
    with open(path, "w") as fh:  # a sparse 1 GB file: never read whole
        fh.truncate(1 << 30)
    reads = []
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self))
    monkeypatch.setattr(Path, "read_bytes", lambda self, *a, **k: reads.append(self))
    assert autotune.load_measurement() is None and not reads


def test_the_cache_is_parsed_once_per_version_of_the_file(monkeypatch):
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    _saved_with_threads(1)
    parsed = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text, **kw: parsed.append(1) or loads(text, **kw))
    for _ in range(50):  # every plane of a stack asks
        assert autotune.load_measurement() is not None
    assert len(parsed) == 1
    _saved_with_threads(1)  # a new version of the file: read again
    autotune.cache_file().write_text(autotune.cache_file().read_text() + "\n")
    assert autotune.load_measurement() is not None and len(parsed) == 2


def test_an_unwritable_cache_folder_measures_nothing_in_vain(monkeypatch, tmp_path):
    """A measurement that could not be kept is not started in the background, and an
    explicit one says where to write instead; no temporary is left."""
    import os

    from napari_slip.core.errors import InputError

    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(folder))
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "_PENDING", True)
    folder.chmod(0o500)
    try:
        assert not autotune.writable()
        assert autotune.measure_when_idle() is None
        if os.geteuid() != 0:
            table = _table({"fp32": 1.0}, {"fp32": 1.0}, {"fp32": 1.0})
            with pytest.raises(InputError, match="NAPARI_SLIP_CACHE"):
                autotune.save_measurement(_entry(table, _faithful(table)))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)
    not_a_folder = tmp_path / "cache.txt"  # NAPARI_SLIP_CACHE set to a file by mistake
    not_a_folder.write_text("mine")
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(not_a_folder))
    table = _table({"fp32": 1.0}, {"fp32": 1.0}, {"fp32": 1.0})
    with pytest.raises(InputError, match="NAPARI_SLIP_CACHE"):
        autotune.save_measurement(_entry(table, _faithful(table)))
    assert not_a_folder.read_text() == "mine"


@contextlib.contextmanager
def _unwritable(folder):
    """``folder`` made unwritable for real: read-only for a user, immutable for root
    (``chattr +i``: root writes through permissions); made writable again after."""
    import os
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:  # a file system without the attribute
        pytest.skip(f"root cannot make {folder} unwritable here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_measuring_into_an_unwritable_cache_folder_says_so_first(monkeypatch, tmp_path, capsys):
    """``napari-slip models --measure`` with a cache folder that cannot be written
    (for real: no permission, or immutable when the suite runs as root): exit 2 with
    one line naming the folder and NAPARI_SLIP_CACHE, before any measuring; nothing
    written there, the user's file kept."""
    from napari_slip.cli import main

    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "mine.txt").write_text("kept")
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(folder))
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    measured = []
    monkeypatch.setattr(autotune, "measure", lambda **kw: measured.append(kw) or {})
    with _unwritable(folder):
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")  # truly unwritable
        assert main(["models", "--measure"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and str(folder) in errors[0] and "NAPARI_SLIP_CACHE" in errors[0]
    assert measured == []  # said before measuring
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]
    assert (folder / "mine.txt").read_text() == "kept"


def test_learn_on_a_folder_prints_only_its_own_work(monkeypatch, tmp_path, tiny_clip_path, capsys):
    """``precision`` is ``auto`` and nothing is measured yet: ``learn`` learns and
    says so, and no measurement runs after it (nor is one cached)."""
    from napari_slip.cli import main
    from napari_slip.testing.concept_scenes import write_concept_folder

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "_THREAD", None)
    data = write_concept_folder(tmp_path / "data", 2, seed=5)
    out = tmp_path / "cells.concept"
    args = ["learn", str(data), "-o", str(out), "--clip", str(tiny_clip_path), "--shots", "2"]
    assert main([*args, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert out.is_file() and "Learnt" in captured.err
    assert "precisions" not in captured.err + captured.out and "autotune" not in captured.err
    assert autotune.load_measurement() is None and autotune._THREAD is None
    assert autotune.pending()  # auto was used unmeasured: the old CLI measured here


def test_models_never_shows_a_measurement_that_is_not_in_use(monkeypatch, capsys):
    """With NAPARI_SLIP_AUTOTUNE=0, ``auto`` is the flag table: a stored measurement
    is not shown as if it were used."""
    from napari_slip.cli import main

    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    _saved_with_threads(1)
    assert autotune.load_measurement() is not None
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "0")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "off (NAPARI_SLIP_AUTOTUNE=0)" in out and "is not used" in out
    assert "measured" not in out.split("auto gives")[0] and "-> " not in out
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    assert main(["models"]) == 0
    assert "precision 'auto' measured" in capsys.readouterr().out


def test_nothing_runs_at_import():
    """Importing the package registers no exit handler and no idle hook (they are
    registered when a measurement first becomes due)."""
    import subprocess
    import sys

    code = (
        "import atexit\n"
        "ours, register = [], atexit.register\n"
        "def record(f, *a, **k):\n"
        "    ours.append(getattr(f, '__module__', '') or '')\n"
        "    return register(f, *a, **k)\n"
        "atexit.register = record\n"
        "import napari_slip, napari_slip.core.models.autotune, napari_slip.cli\n"
        "from napari_slip.core.runtime import perf\n"
        "print(sum(m.startswith('napari_slip') for m in ours), len(perf._IDLE_HOOKS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    handlers, hooks = (int(v) for v in out.stdout.split()[-2:])
    assert (handlers, hooks) == (0, 0)
