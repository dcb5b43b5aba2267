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
3. The other method the issue names, measured here, not built into napari-slip:
   carrying each object's mask to the next plane as a SAM prompt (micro-sam's way):
   the grid's objects of the middle plane are prompted plane by plane up and down at
   their centroid (the mask of the three with the best predicted IoU that overlaps the
   previous one by IoU >= 0.3; stop otherwise). Share recovered and SAM points decoded,
   against the grid on every plane plus overlap linking.
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

from napari_slip.testing.metrics import recovered

ROOT = Path(__file__).resolve().parents[1]


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


def mask_carrying(stacks, sam_params) -> dict:
    """Objects of the middle plane carried up and down as SAM point prompts."""
    from napari_slip.core.models.promptable import PromptableSam
    from napari_slip.core.models.sam import load_sam
    from napari_slip.core.pipeline.linking import overlaps
    from napari_slip.core.pipeline.proposals import sam_proposals
    from napari_slip.core.runtime.generators import drain
    from napari_slip.testing.trained_sam import FIXTURE_PATH

    model, _ = load_sam(FIXTURE_PATH)
    sam = PromptableSam(model)
    shares, carried_points, grid_points = [], 0, 0
    for image, truth in stacks:
        depth = len(image)
        embeddings = [sam.embed(np.repeat(image[z][..., None], 3, axis=-1)) for z in range(depth)]
        middle = depth // 2
        seeds = drain(sam_proposals(sam, embeddings[middle], sam_params))
        grid_points += seeds.decoded_points * depth  # the grid on every plane
        labels = np.zeros(truth.shape, np.int32)
        for n, (box, mask) in enumerate(zip(seeds.boxes, seeds.masks, strict=True), start=1):
            full = np.zeros(truth.shape[1:], bool)
            y0, x0, y1, x1 = (int(v) for v in box)
            full[y0:y1, x0:x1] = mask
            labels[middle][full & (labels[middle] == 0)] = n
            for step in (-1, 1):
                previous, z = full, middle + step
                while 0 <= z < depth and previous.any():
                    yy, xx = np.nonzero(previous)
                    point = np.array([[xx.mean(), yy.mean()]])
                    low, iou = sam.decode_points(embeddings[z], point)
                    carried_points += 1
                    masks = (sam.upscale(low[0], embeddings[z]) > sam.mask_threshold).numpy()
                    best = None
                    for k in np.argsort(-iou[0].numpy()):
                        inter = np.count_nonzero(masks[k] & previous)
                        union = np.count_nonzero(masks[k] | previous)
                        if union and inter / union >= 0.3:
                            best = masks[k]
                            break
                    if best is None:
                        break
                    labels[z][best & (labels[z] == 0)] = n
                    previous, z = best, z + step
        ia, ib, inter = overlaps(truth, labels)
        size_t, size_l = np.bincount(truth.ravel()), np.bincount(labels.ravel())
        ious = inter / (size_t[ia] + size_l[ib] - inter)
        shares.append(len(set(ia[ious >= 0.5].tolist())) / int(truth.max()))
    row = {
        "recovered": float(np.mean(shares)),
        "carried_points_decoded": int(carried_points),
        "grid_points_decoded_every_plane": int(grid_points),
    }
    print(
        f"mask carrying from the middle plane: {row['recovered']:.3f} recovered, "
        f"{carried_points} points decoded to carry (the grid on every plane: "
        f"{grid_points})"
    )
    return row


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
    scratch = tempfile.TemporaryDirectory()  # removed when the script ends
    tmp = Path(scratch.name)
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
    out["mask_carrying"] = mask_carrying(stacks, sam_params)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
