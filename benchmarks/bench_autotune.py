"""Is ``precision="auto"``'s measured choice the fastest on the real shapes? (by hand)

    python benchmarks/bench_autotune.py [--json benchmarks/results/NAME.json]

One process, one run, this machine's threads. Printed first: the CPU's model and
features. Then:

1. ``auto``'s own measurement (:func:`napari_slip.core.models.autotune.measure`, the
   probes it times on first use: two ViT-B encoder blocks, SAM's decoder on 16 + 8
   points, two CLIP ViT-B/32 blocks on 16 crops), its table and its choice, and how
   long it took.
2. The real stages at full size with random weights (the cost does not depend on the
   values): SAM vit_b's encoder on a 1,024 px image; SAM's decoder per point on 32
   points, with no mask passing the IoU filter (the lower bound of the mask stage's
   cost, what random weights give) and with every mask passing (the upper bound);
   CLIP ViT-B/32's image tower on 32 crops. Each in fp32, bf16 and int8 and every
   thread count ``auto`` considers, after a warm-up, in ``--rounds`` rounds that visit
   every precision in turn (the fastest round counts).
3. Per stage: the real time of ``auto``'s choice against the fastest fixed precision
   (target: within 10%) and against fp32 (target: never slower).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (fastest counts)")
    args = parser.parse_args(argv)
    import torch

    from napari_slip.core.models import autotune, autotune_report
    from napari_slip.core.models.clip import ClipModel, build_clip
    from napari_slip.core.models.promptable import ImageEmbedding, PromptableSam
    from napari_slip.core.models.sam import SamConfig, build_sam
    from napari_slip.core.runtime.perf import cpu_info, threads, tune_allocator

    tune_allocator()
    torch.manual_seed(0)
    machine = {
        **cpu_info(),
        "torch": torch.__version__,
        "thread_options": autotune.thread_options(),
        "physical_cores": autotune.physical_cores(),
    }
    print(json.dumps(machine))

    measured = autotune.measure()
    print(f"auto's measurement: {measured['seconds']} s")
    print("\n".join(autotune_report.describe_entry(measured)))

    sam = PromptableSam(build_sam(SamConfig()))
    rgb = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    embedding = ImageEmbedding(torch.randn(1, 256, 64, 64), (1024, 1024), (1024, 1024))
    points = np.random.default_rng(1).uniform(0, 1024, (args.points, 2))
    config = {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 512,
            "heads": 8,
            "layers": 12,
        },
    }
    clip_base = build_clip(config).eval()
    crops = [
        np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8) for i in range(32)
    ]

    def clip_of(precision):
        import copy

        clip = ClipModel(copy.deepcopy(clip_base), None, config, 224)
        clip.set_precision(precision)
        return clip

    keys = ("encoder", "decoder", "decoder_every_mask", "clip")
    real: dict = {k: {} for k in keys}
    clips = {p: clip_of(p) for p in autotune.cpu_precisions()}

    def runs(precision):  # per key: one call, and how many items it handles
        return {
            "encoder": (lambda: sam.embed(rgb, precision), 1),
            "decoder": (
                lambda: sam.decode_points_above(embedding, points, 1e9, precision),
                len(points),
            ),
            "decoder_every_mask": (
                lambda: sam.decode_points_above(embedding, points, -1e9, precision),
                len(points),
            ),
            "clip": (lambda: clips[precision].encode_images(crops), len(crops)),
        }

    # Rounds that visit every precision in turn (a burst of load on a shared machine
    # slows a round of all of them, not one precision); the fastest round counts.
    for n in autotune.thread_options():
        with threads(n), torch.no_grad():
            for precision in autotune.cpu_precisions():  # warm-up (int8: quantizing)
                for fn, _ in runs(precision).values():
                    fn()
            for _ in range(args.rounds):
                for precision in autotune.cpu_precisions():
                    for key, (fn, items) in runs(precision).items():
                        t0 = time.perf_counter()
                        fn()
                        t = (time.perf_counter() - t0) / items
                        row = real[key].setdefault(precision, {})
                        row[str(n)] = min(row.get(str(n), t), t)
        for precision in autotune.cpu_precisions():
            r = {k: real[k][precision][str(n)] for k in keys}
            print(
                f"{precision} x{n}: encoder {r['encoder']:.2f} s, decoder "
                f"{r['decoder'] * 1e3:.1f} ms/point (no mask) "
                f"{r['decoder_every_mask'] * 1e3:.1f} ms/point (every mask), CLIP "
                f"{r['clip'] * 1e3:.1f} ms/crop",
                flush=True,
            )

    verdict = {}
    for stage, key in (
        ("encoder", "encoder"),
        ("decoder", "decoder"),
        ("decoder", "decoder_every_mask"),
        ("clip", "clip"),
    ):
        pick = measured["choice"][stage]
        chosen = real[key][pick["precision"]][str(pick["threads"])]
        fastest = min(t for row in real[key].values() for t in row.values())
        fp32 = min(real[key]["fp32"].values())
        verdict[key] = {
            "auto": pick,
            "auto_s": chosen,
            "fastest_s": fastest,
            "fp32_s": fp32,
            "within_10pct_of_fastest": chosen <= 1.10 * fastest,
            "not_slower_than_fp32": chosen <= 1.02 * fp32,
        }
        print(
            f"{key:<19} auto {pick['precision']} x{pick['threads']}: {chosen / fastest:.2f}x "
            f"the fastest fixed precision, {chosen / fp32:.2f}x fp32"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "machine": machine,
                    "auto_measurement": measured,
                    "real": real,
                    "verdict": verdict,
                    "weights": "random (vit_b, ViT-B/32 shapes); no mask survives the "
                    "decoder's IoU filter in 'decoder', all in "
                    "'decoder_every_mask'",
                },
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
