"""Stacks, measured (run by hand, not a test): are 3D objects recovered, and what does
linking cost?

    python benchmarks/bench_stacks.py [--stacks 5] [--json benchmarks/results/NAME.json]

Data: synthetic fluorescence-like z-stacks (``napari_slip.testing.scenes.nuclei_stack``:
256 x 256 px, 8 planes, 8-14 ellipsoidal nuclei of different depths (1 to 8 planes),
some touching). Truth: one id per nucleus.

Through the plain Python API (``Segmenter.segment(stack, prompt, axes="ZYX")``), as a
notebook calls it, with mode ``threshold`` at -1: every candidate object survives
selection (the upper bound; the CLIP is a tiny random one, so its scores mean nothing
and are not what is measured). Reported:

1. Each plane's objects given (the truth, numbered plane by plane, as labels
   proposals): the share of 3D nuclei recovered at 3D IoU >= 0.5, linked and per
   plane; also with one plane's objects removed (a plane where detection failed),
   and for linking's ``min_overlap`` at 0.3, 0.5 (default) and 0.7.
2. The trained fixture SAM (tests/data/fixture_sam.pth, 16 x 16 points): the same
   share, linked and per plane, how many objects each returns, the time per plane
   and the share of the stack's time spent linking.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def recovered(truth: np.ndarray, labels: np.ndarray, iou: float = 0.5) -> float:
    from napari_slip.core.pipeline.linking import overlaps

    ia, ib, inter = overlaps(truth, labels)
    size_t, size_l = np.bincount(truth.ravel()), np.bincount(labels.ravel())
    ious = inter / (size_t[ia] + size_l[ib] - inter)
    return len(set(ia[ious >= iou].tolist())) / int(truth.max())


def per_plane_labels(truth: np.ndarray, drop_plane: int | None = None) -> np.ndarray:
    out = np.zeros_like(truth)
    for z in range(len(truth)):
        if z == drop_plane:
            continue
        ids = np.unique(truth[z])[1:]
        lut = np.zeros(int(truth.max()) + 1, np.int32)
        lut[ids] = np.arange(1, len(ids) + 1)
        out[z] = lut[truth[z]]
    return out


class Timer:
    """Progress callback that times the linking stage."""

    def __init__(self) -> None:
        self.link_start = None
        self.link_seconds = 0.0

    def __call__(self, event) -> None:
        if event.stage == "linking" and event.done == 0:
            self.link_start = time.perf_counter()
        elif event.stage == "linking" and self.link_start is not None:
            self.link_seconds += time.perf_counter() - self.link_start
            self.link_start = None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    from napari_slip.core.params import SamProposalParams, StackParams
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.runtime.perf import cpu_info
    from napari_slip.testing.scenes import nuclei_stack
    from napari_slip.testing.tiny import write_tiny_clip
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_PATH

    cpu = dict(cpu_info())
    print(f"CPU: {cpu} ({platform.machine()}, python {platform.python_version()})")
    tmp = Path(tempfile.mkdtemp())
    clip = str(write_tiny_clip(tmp / "clip.safetensors"))
    sam_params = SamProposalParams(**FIXTURE_AMG)
    stacks = [nuclei_stack(seed) for seed in range(args.stacks)]
    n_truth = sum(int(t.max()) for _, t in stacks)
    print(f"{args.stacks} stacks of {stacks[0][0].shape}, {n_truth} nuclei in all")
    out: dict = {"cpu": cpu, "stacks": args.stacks, "nuclei": n_truth}

    def seg():
        return Segmenter(str(FIXTURE_PATH), clip, sam_params=sam_params, disk_cache=False)

    # 1. Each plane's objects given.
    given: dict = {}
    engine = seg()
    for name, drop in (("every plane", None), ("one plane missed", 3)):
        for link in (True, False):
            shares = []
            for image, truth in stacks:
                result = engine.segment(
                    image,
                    "nucleus",
                    labels=per_plane_labels(truth, drop),
                    axes="ZYX",
                    mode="threshold",
                    threshold=-1,
                    link=link,
                )
                shares.append(recovered(truth, result.labels))
            key = f"{name}, {'linked' if link else 'per plane'}"
            given[key] = float(np.mean(shares))
            print(f"labels given, {key}: {given[key]:.3f} of 3D nuclei at IoU >= 0.5")
    for overlap in (0.3, 0.5, 0.7):
        shares = []
        for image, truth in stacks:
            result = engine.segment(
                image,
                "nucleus",
                labels=per_plane_labels(truth),
                axes="ZYX",
                mode="threshold",
                threshold=-1,
                stack_params=StackParams(min_overlap=overlap),
            )
            shares.append(recovered(truth, result.labels))
        given[f"min_overlap {overlap}"] = float(np.mean(shares))
        print(f"labels given, min_overlap {overlap}: {np.mean(shares):.3f}")
    out["labels_given"] = given

    # 2. The trained fixture SAM, cold caches for each run.
    rows = {}
    for link in (True, False):
        shares, counts, seconds, linking, planes = [], [], 0.0, 0.0, 0
        for image, truth in stacks:
            engine = seg()
            timer = Timer()
            start = time.perf_counter()
            result = engine.segment(
                image,
                "nucleus",
                axes="ZYX",
                mode="threshold",
                threshold=-1,
                link=link,
                progress=timer,
            )
            seconds += time.perf_counter() - start
            linking += timer.link_seconds
            planes += len(image)
            shares.append(recovered(truth, result.labels))
            counts.append(int(result.n_objects))
        key = "linked" if link else "per plane"
        rows[key] = {
            "recovered": float(np.mean(shares)),
            "objects_returned": int(sum(counts)),
            "seconds_per_plane": seconds / planes,
            "linking_share_of_stack_time": linking / seconds,
        }
        print(
            f"fixture SAM, {key}: {rows[key]['recovered']:.3f} recovered, "
            f"{sum(counts)} objects returned (all candidates survive; truth {n_truth}), "
            f"{seconds / planes:.3f} s per plane, linking {100 * linking / seconds:.1f}% "
            "of the stack's time"
        )
    out["fixture_sam"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
