"""The first prompt through the plain Python API, as a notebook calls it, against the
same with the allocator tuned for the whole process (run by hand, not a test).

    python benchmarks/bench_api_allocator.py [--json benchmarks/results/NAME.json]

Each case runs in a fresh process: ``napari_slip.segment(image, "a star", sam=...,
clip=...)`` with the models loaded in the call, SAM vit_b and CLIP ViT-B/32 at their
real sizes with random weights (SAM's default filters keep no mask with random
weights: bound 1, no mask survives; the cost is the encoder and the decoder's grid),
a 1,024 px image, SAM's full 32 x 32 grid, the CPU's default precision (``auto``).

- ``untuned``: ``NAPARI_SLIP_MALLOC=0`` (what the plain API did before its runs tuned
  the allocator themselves);
- ``plain API``: as a user calls it now (each run tunes the allocator for itself and
  gives the memory back after);
- ``imports done``: as ``plain API``, with torch, torchvision, segment_anything,
  open_clip and the pipeline imported before the clock (a fresh process pays about
  3 s of imports at its first call: a notebook's first call does, its later ones do
  not; the naive loop's clock starts after its imports and model loading);
- ``tuned process``: ``tune_allocator()`` first (what the command line and the widget
  do for their process);
- ``plain API, auto measured``: as a user calls it once ``auto`` has measured this CPU
  (``napari-slip models --measure`` in an earlier process, as a first session leaves
  it); the three cases before run with no measurement (``auto``'s flag-table guess),
  as a machine's very first run does.

Reported: wall time, user and system CPU time, and minor page faults of the call.
With ``--naive``: the naive SLIP loop's first prompt on the same models (bench_pipeline's
worker: fp32, segment_anything's generator, crops one by one through PIL; its models
loaded before the clock starts, its CLIP stage on 100 label crops since SAM keeps no
mask with random weights), and the plain API's speed-up over it, against the loop's
whole prompt and against its SAM stages alone (the plain API's 0 candidates cost it no
CLIP work, so the SAM-only ratio is the one that does not flatter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
import numpy as np
mode, sam, clip = sys.argv[1:4]
import napari_slip
from napari_slip.core.runtime.perf import tune_allocator
if mode == "tuned process":
    tune_allocator()
if mode == "imports done":  # what a kernel has after its first call (3 s here)
    import open_clip, segment_anything, torch, torchvision
    import napari_slip.core.pipeline.dispatch
rng = np.random.default_rng(0)
image = rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
result = napari_slip.segment(image, "a star", sam=sam, clip=clip, device="cpu")
wall = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "wall_s": wall,
    "precision": result.provenance["precision"],
    "user_s": after.ru_utime - before.ru_utime,
    "system_s": after.ru_stime - before.ru_stime,
    "minor_faults": after.ru_minflt - before.ru_minflt,
    "objects": result.n_objects,
    "candidates": len(result.candidate_table),
}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument(
        "--naive",
        action="store_true",
        help="also time the naive SLIP loop's first prompt (bench_pipeline's, "
        "about 3 minutes) on the same models: the speed-up users get",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_pipeline import _prepare_models

    from napari_slip.core.runtime.perf import cpu_info

    print(f"CPU: {dict(cpu_info())}")
    out: dict = {"cpu": dict(cpu_info())}
    with tempfile.TemporaryDirectory() as tmp:
        sam, clip = _prepare_models(Path(tmp))
        modes = (
            "untuned",
            "plain API",
            "imports done",
            "tuned process",
            "plain API, auto measured",
        )
        for mode in modes:
            # Each case its own empty cache folder: every case is a first prompt that
            # runs SAM's encoder (a shared folder would hand later cases the first
            # case's embedding from disk).
            env = {**os.environ, "NAPARI_SLIP_CACHE": tempfile.mkdtemp(dir=tmp)}
            if mode == "untuned":
                env["NAPARI_SLIP_MALLOC"] = "0"
            if mode == "plain API, auto measured":  # as in a later session: measured once
                measured = subprocess.run(
                    [sys.executable, "-m", "napari_slip.cli", "models", "--measure"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out["auto_measurement"] = [
                    ln
                    for ln in measured.stdout.splitlines()
                    if "precision 'auto'" in ln or "->" in ln
                ]
                print("\n".join(out["auto_measurement"]))
            child_mode = "plain API" if mode.startswith("plain API") else mode
            run = subprocess.run(
                [sys.executable, "-c", CHILD, child_mode, sam, clip],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(run.stdout.strip().splitlines()[-1])
            out[mode] = row
            faults = row["minor_faults"] / 1e6
            print(
                f"{mode:24s} [{row['precision']}] wall {row['wall_s']:6.1f} s  "
                f"user {row['user_s']:6.1f} s  "
                f"system {row['system_s']:5.1f} s  minor faults {faults:5.2f} M"
                f"  ({row['candidates']} candidates, {row['objects']} objects: no mask "
                "survives SAM's filters with random weights)"
            )
        if args.naive:  # SLIP's loop, fp32, segment_anything's generator, crop by crop
            env = {
                **os.environ,
                "NAPARI_SLIP_MALLOC": "0",
                "BENCH_FIRST_PROMPT_ONLY": "1",
                "NAPARI_SLIP_CACHE": tempfile.mkdtemp(dir=tmp),
            }
            cmd = [
                sys.executable,
                str(Path(__file__).parent / "bench_pipeline.py"),
                "--worker",
                "naive",
                "--models",
                sam,
                clip,
                "--size",
                "1024",
                "--points",
                "32",
                "--crops",
                "100",
            ]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            naive = json.loads(run.stdout.strip().splitlines()[-1])
            stages = naive["stages"]
            out["naive"] = {"first_prompt_s": naive["first_prompt"], "stages": stages}
            sam_s = stages["encoder"] + stages["masks"]
            plain = out["plain API"]["wall_s"]
            imported = out["imports done"]["wall_s"]
            print(
                f"naive SLIP loop: first prompt {naive['first_prompt']:.1f} s (SAM "
                f"{sam_s:.1f} s, CLIP on 100 label crops {stages['clip']:.1f} s; models "
                f"loaded and libraries imported before its clock). Plain API first prompt "
                f"(models loaded in the call, no crop to score: 0 candidates): "
                f"{naive['first_prompt'] / plain:.1f}x the naive loop's whole prompt, "
                f"{sam_s / plain:.1f}x its SAM stages alone; with the libraries imported "
                f"before the clock, as the naive loop's: {naive['first_prompt'] / imported:.1f}x "
                f"and {sam_s / imported:.1f}x"
            )
    plain, tuned = out["plain API"]["wall_s"], out["tuned process"]["wall_s"]
    print(
        f"plain API / tuned process: {plain / tuned:.2f}; untuned / plain API: "
        f"{out['untuned']['wall_s'] / plain:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
