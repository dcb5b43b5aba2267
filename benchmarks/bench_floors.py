"""Every stage against its floor, per precision (run by hand, not a test).

    python benchmarks/bench_floors.py [--json benchmarks/results/NAME.json] [--quick]

What a CPU can do is measured first, in the same run: the best rate of plain matrix
products (GFLOP/s) at the stages' own shapes, in fp32 and, where the CPU computes it
natively (avx512_bf16, AMX), in bf16. Then each stage through the objects a run uses
(``PromptableSam.embed`` and ``decode_points``, ``ClipModel.encode_images``), at
each precision: its FLOPs (counted by torch's FLOP counter on the modules as run),
its time (best of a few), its achieved GFLOP/s and the share of that precision's
matrix-product peak. The grid's decode is timed at several point batches (SAM's
16 by default on a CPU), the choice issue 39 asks ``auto`` to make by measurement.

Weights: SAM ViT-B at 1,024 px and CLIP ViT-B/32 with random weights (the arithmetic
does not depend on the values), built in-process (CLIP saved as a checkpoint and
loaded through the real loader). The bound: the decoder runs every
mask head (no IoU filter), the upper bound of the grid's decode; 64 points per timing.
The CPU, its threads and torch are printed first: no figure without its machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_concepts import build_clip
from bench_fp32 import best_time


def counted_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(precision: str, shapes) -> float:
    """The best rate (FLOP/s) of plain matrix products of ``shapes`` in ``precision``."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rates = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        rates.append(2 * m * k * n / best_time(lambda a=a, b=b: a @ b, 5))
    return max(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and batches")
    args = parser.parse_args(argv)
    import torch

    from napari_slip.core.models.clip import load_clip_checkpoint
    from napari_slip.core.models.promptable import PromptableSam
    from napari_slip.core.models.sam import SamConfig, build_sam
    from napari_slip.core.runtime.perf import cpu_has_fast_bf16, cpu_info, tune_allocator

    tune_allocator()
    torch.manual_seed(0)
    machine = {
        **cpu_info(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(f"CPU: {json.dumps(machine)}")
    precisions = ["fp32", "bf16"] if cpu_has_fast_bf16() else ["fp32"]
    repeats = 2 if args.quick else 3
    # The stages' own product shapes: the encoder's (tokens x width x 3 width, ...),
    # the decoder's image side (4,096 tokens x 256), CLIP's (50 tokens x 16 crops).
    shapes = ((4096, 768, 2304), (4096, 768, 3072), (4096, 256, 256), (800, 768, 3072))
    peaks = {p: matmul_peak(p, shapes) for p in precisions}
    for p, rate in peaks.items():
        print(f"matrix-product peak, {p}: {rate / 1e9:.0f} GFLOP/s")

    sam = PromptableSam(build_sam(SamConfig()))  # ViT-B, random weights
    with tempfile.TemporaryDirectory() as tmp:  # through the real loader
        clip = load_clip_checkpoint(build_clip(Path(tmp)))
    rgb = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    for model in (sam.model, clip.model):  # inference only (and the FLOP counter's
        model.requires_grad_(False)  # hooks refuse views of weights that need grads)
    embedding = sam.embed(rgb)
    points = np.random.default_rng(1).uniform(0, 1024, size=(64, 2))
    crops = [rgb[i * 60 : i * 60 + 224, i * 40 : i * 40 + 224] for i in range(16)]
    batches = (16, 64) if args.quick else (8, 16, 32, 64)
    rows = []

    def measure(stage: str, precision: str, fn, flops: float) -> None:
        seconds = best_time(fn, repeats)
        rate = flops / seconds
        row = {
            "stage": stage,
            "precision": precision,
            "seconds": round(seconds, 4),
            "gflop": round(flops / 1e9, 2),
            "gflop_per_s": round(rate / 1e9, 1),
            "share_of_peak": round(rate / peaks[precision], 3),
        }
        rows.append(row)
        print(
            f"  {stage:<34} {precision:<5} {seconds * 1000:9.1f} ms  {flops / 1e9:8.1f} GFLOP"
            f"  {rate / 1e9:7.1f} GFLOP/s  {100 * row['share_of_peak']:5.1f}% of its peak"
        )

    with torch.no_grad():
        encoder_flops = counted_flops(lambda: sam.embed(rgb))
        decode_flops = {
            n: counted_flops(lambda n=n: sam.decode_points(embedding, points[:n])) for n in batches
        }
        clip_flops = counted_flops(lambda: clip.encode_images(crops))
        for precision in precisions:
            clip.set_precision(precision)
            measure(
                "SAM encoder, 1,024 px",
                precision,
                lambda precision=precision: sam.embed(rgb, precision),
                encoder_flops,
            )
            for n in batches:
                calls = len(points) // n

                def grid(n=n, calls=calls, precision=precision):
                    for i in range(calls):
                        sam.decode_points(embedding, points[i * n : (i + 1) * n], precision)

                measure(
                    f"grid decode, batches of {n} points", precision, grid, decode_flops[n] * calls
                )
            measure(
                "CLIP ViT-B/32, 16 crops", precision, lambda: clip.encode_images(crops), clip_flops
            )
    if args.json:
        out = {
            "cpu": machine,
            "peaks_gflop_per_s": {p: round(r / 1e9, 1) for p, r in peaks.items()},
        }
        out["bound"] = "random weights; every mask head run (no IoU filter); 64 points"
        out["rows"] = rows
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
