"""A z-stack's time through the plain Python API, and what each faster option costs in
3D recall (run by hand, not a test).

    python benchmarks/bench_stack_speed.py [--planes 30] [--sams vit_t efficientvit_l0]
        [--json benchmarks/results/NAME.json] [--no-time | --no-recall]
        [--only OPTION ...] [--time-only OPTION ...] [--fixtures dense scales]

1. **Time**: ``napari_slip.segment(stack, "nucleus", sam=..., clip=..., axes="ZYX")``
   as a notebook calls it, on a dense 16-bit stack of ``--planes`` planes of 512 x 512
   px (``napari_slip.testing.dense.dense_nuclei_stack``: touching nuclei in the
   plane and along Z, 4x anisotropy, uneven background, noise), each option in a
   fresh process with its own empty cache folder, models loaded in the call, the
   CPU's ``auto`` precision. Weights: the SAMs at their published sizes (MobileSAM
   ``vit_t``, EfficientViT-SAM-L0, optionally ViT-B) and CLIP ViT-B/32, all random
   (the arithmetic does not depend on the values). **The bound**: with random weights
   no mask survives SAM's filters, so every plane decodes its whole grid and CLIP
   scores nothing: the cost of the encoder and of the grid's decode, which the
   options below change; the cost of the masks themselves is not in it.
2. **Recall**: the same options, in one precision (``--precision``, fp32 by
   default: the exact computation), with the trained fixture SAMs fine-tuned on dense
   planes (``tests/data/fixture_sam_dense.pth``) and on several scales too
   (``fixture_sam_scales.pth``), on 4 dense stacks (32 planes of 128 x 128 px),
   every candidate surviving selection: the share of nuclei recovered as one 3D
   object (3D IoU >= 0.5) and the grid points decoded per plane, against the full
   per-plane grid.

Options: ``grid 32`` (SAM's default 32 x 32 points per plane; the fixture's own
default is 16 x 16 on its 128 px planes), ``grid 16`` (a quarter of the points; the
fixture 8 x 8), ``skip covered`` (the full grid, but a point inside a mask already
found is not decoded; with random weights nothing is found, so its time is the full
grid's: only the fixture's decoded points show what it saves), ``carry ... grid every
k`` (``StackParams(grid_every=k)``; not timed, as skipping), ``own size`` and ``1.5x``
(``SamProposalParams(input_side=...)``: SAM sees a 512 px plane at 512 or 768 px
instead of 1,024; the fixtures' 128 px planes at 128 or 192 instead of 256).
The CPU, its threads and torch are printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

CHILD = """
import json, sys, time
import numpy as np
import napari_slip
from napari_slip.core.params import SamProposalParams
from napari_slip.core.params import StackParams
stack_path, sam, clip, options, stack_options = sys.argv[1:6]
stack = np.load(stack_path)
params = SamProposalParams(**json.loads(options))
stack_params = StackParams(**json.loads(stack_options))
t0 = time.perf_counter()
result = napari_slip.segment(stack, "nucleus", sam=sam, clip=clip, device="cpu",
                             axes="ZYX", sam_params=params, stack_params=stack_params)
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "precision": result.provenance["precision"],
                  "objects": int(result.labels.max())}))
"""

#: Option name -> (real-size SAM params, the fixture's params on its 128 px planes,
#: stack params).
OPTIONS = {
    "grid 32": ({}, {}, {}),
    "grid 16": ({"points_per_side": 16}, {"points_per_side": 8}, {}),
    "skip covered": ({"skip_covered": True}, {"skip_covered": True}, {}),
    "carry, grid every 2": ({}, {}, {"grid_every": 2}),
    "carry, grid every 4": ({}, {}, {"grid_every": 4}),
    "carry + skip covered, grid every 4": (
        {"skip_covered": True},
        {"skip_covered": True},
        {"grid_every": 4},
    ),
    "own size": ({"input_side": 512}, {"input_side": 128}, {}),
    "1.5x": ({"input_side": 768}, {"input_side": 192}, {}),
    "1.5x, carry + skip covered, grid every 4": (
        {"skip_covered": True, "input_side": 768},
        {"skip_covered": True, "input_side": 192},
        {"grid_every": 4},
    ),
    "own size, grid 16": (
        {"input_side": 512, "points_per_side": 16},
        {"input_side": 128, "points_per_side": 8},
        {},
    ),
    "carry + skip covered, grid every 4, own size": (
        {"skip_covered": True, "input_side": 512},
        {"skip_covered": True, "input_side": 128},
        {"grid_every": 4},
    ),
    "carry, grid every 8": ({}, {}, {"grid_every": 8}),
    "carry + skip covered, grid every 8": (
        {"skip_covered": True},
        {"skip_covered": True},
        {"grid_every": 8},
    ),
}
#: Options whose time with random weights would flatter (they decode fewer points only
#: where SAM keeps masks, which random weights never do): not timed at real size.
MASK_DEPENDENT = ("skip covered", "carry")


def time_options(sams: list[str], planes: int, tmp: Path, only: list[str] | None) -> dict:
    from bench_edits import build_sam
    from bench_pipeline import _prepare_models

    from napari_slip.testing.dense import dense_nuclei_stack

    stack, _ = dense_nuclei_stack(0, shape=(planes, 512, 512))
    stack_path = tmp / "stack.npy"
    np.save(stack_path, stack)
    print(f"stack {stack.shape} {stack.dtype}, range {stack.min()}-{stack.max()}")
    _, clip = _prepare_models(tmp)  # CLIP ViT-B/32 at its real size, random weights
    out: dict = {}
    for name in sams:
        sam = str(build_sam(tmp, name)) if name != "vit_b" else _prepare_models(tmp)[0]
        for option, (params, _, stacking) in OPTIONS.items():
            if any(m in option for m in MASK_DEPENDENT) or (only and option not in only):
                continue
            env = {**os.environ, "NAPARI_SLIP_CACHE": tempfile.mkdtemp(dir=tmp)}
            args = [str(stack_path), sam, clip, json.dumps(params), json.dumps(stacking)]
            run = subprocess.run(
                [sys.executable, "-c", CHILD, *args],
                env=env,
                capture_output=True,
                text=True,
            )
            if run.returncode:
                raise SystemExit(run.stderr[-3000:])
            row = json.loads(run.stdout.strip().splitlines()[-1])
            row["per_plane_s"] = round(row["wall_s"] / planes, 3)
            out.setdefault(name, {})[option] = row
            print(
                f"  {name:16s} {option:18s} [{row['precision']}] {row['wall_s']:6.1f} s "
                f"({row['per_plane_s']:.2f} s per plane)"
            )
    return out


def recall_options(
    n_stacks: int,
    tmp: Path,
    only: list[str] | None = None,
    precision: str = "fp32",
    fixture: str = "dense",
) -> dict:
    from bench_stacks import recovered

    from napari_slip.core.params import SamProposalParams, StackParams
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.testing.dense import VOXEL, dense_nuclei_stack
    from napari_slip.testing.tiny import write_tiny_clip
    from napari_slip.testing.trained_sam import (
        FIXTURE_AMG,
        FIXTURE_DENSE_PATH,
        FIXTURE_SCALES_PATH,
    )

    path = {"dense": FIXTURE_DENSE_PATH, "scales": FIXTURE_SCALES_PATH}[fixture]

    clip = str(write_tiny_clip(tmp / "tiny_clip.safetensors"))
    stacks = [dense_nuclei_stack(seed) for seed in range(n_stacks)]
    out: dict = {}
    for option, (_, params, stacking) in OPTIONS.items():
        if only and option not in only:
            continue
        sam_params = SamProposalParams(**{**FIXTURE_AMG, **params})
        engine = Segmenter(
            str(path),
            clip,
            sam_params=sam_params,
            precision=precision,
            disk_cache=False,
        )
        shares, decoded, seconds = [], [], 0.0
        for image, truth in stacks:
            start = time.perf_counter()
            result = engine.segment(
                image,
                "nucleus",
                axes="ZYX",
                pixel_size=dict(zip("ZYX", VOXEL, strict=True)),
                mode="threshold",
                threshold=-1,
                stack_params=StackParams(**stacking),
            )
            seconds += time.perf_counter() - start
            shares.append(recovered(truth, result.labels))
            planes = result.candidates.values()
            decoded.append(np.mean([c.proposals.decoded_points for c in planes]))
        out[option] = {
            "recovered": round(float(np.mean(shares)), 3),
            "worst_stack": round(float(np.min(shares)), 3),
            "points_decoded_per_plane": round(float(np.mean(decoded)), 1),
            "grid_points": sam_params.points_per_side**2,
            "seconds": round(seconds, 1),
        }
        print(f"  {fixture} fixture, {option}: {out[option]}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", type=int, default=30)
    parser.add_argument("--sams", nargs="+", default=["vit_t", "efficientvit_l0"])
    parser.add_argument("--stacks", type=int, default=4, help="dense stacks for recall")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--only", nargs="+", help="recall of these options only")
    parser.add_argument(
        "--precision", default="fp32", help="the fixture's precision for recall (fp32: exact)"
    )
    parser.add_argument("--no-time", action="store_true", help="recall only")
    parser.add_argument("--no-recall", action="store_true", help="time only")
    parser.add_argument(
        "--fixtures",
        nargs="+",
        default=["dense", "scales"],
        choices=["dense", "scales"],
        help="the fixture SAMs recall is measured with",
    )
    parser.add_argument("--time-only", nargs="+", help="time these options only")
    args = parser.parse_args(argv)

    import torch

    from napari_slip.core.runtime.perf import cpu_info

    # No background measurement of `auto` in this process (the recall runs say their
    # precision; the timed runs are fresh processes with their own cache folders).
    os.environ["NAPARI_SLIP_AUTOTUNE"] = "0"

    cpu = dict(cpu_info())
    print(
        f"CPU: {cpu} ({platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__})"
    )
    out: dict = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "bound": "random weights at real size: no mask survives, the whole grid decoded "
        "on every plane, no crop scored",
    }
    with tempfile.TemporaryDirectory() as tmp:
        out["recall_precision"] = args.precision
        for fixture in [] if args.no_recall else args.fixtures:
            print(f"1. recall with the {fixture} fixture SAM (4 stacks of 32 x 128 x 128)")
            out[f"recall_{fixture}_fixture"] = recall_options(
                args.stacks, Path(tmp), args.only, args.precision, fixture
            )
        if not args.no_time:
            print(f"2. time of a {args.planes}-plane 512 x 512 16-bit stack, plain API")
            out["time"] = time_options(args.sams, args.planes, Path(tmp), args.time_only)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
