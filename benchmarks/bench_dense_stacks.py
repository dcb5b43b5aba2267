"""Dense stacks, measured (run by hand, not a test): does linking keep nuclei stacked
along Z apart, and what does it cost?

    python benchmarks/bench_dense_stacks.py [--stacks 4] [--json benchmarks/results/NAME.json]
        [--precision fp32]

Data: ``napari_slip.testing.dense.dense_nuclei_stack``: 32 planes x 128 x 128 px,
voxels 2 x 0.5 x 0.5 um (4x anisotropy), ~100 ellipsoidal nuclei per stack packed
on a jittered lattice (most touch their neighbours in the plane and along Z, many
stacked directly above one another), 16-bit counts, uneven depth-attenuated
background, anisotropic blur, photon and camera noise. Beside them, the easy stacks
of ``bench_stacks.py`` (``nuclei_stack``), which must stay at 1.00.

Through the plain Python API (``Segmenter.segment(stack, "nucleus", axes="ZYX",
pixel_size=...)``) with mode ``threshold`` at -1 (every candidate survives
selection; the CLIP is a tiny random one, its scores mean nothing). Reported: the
share of nuclei recovered as one 3D object (3D IoU >= 0.5), the objects returned,
the nuclei cut in pieces (two result objects each hold 20-80% of it), and the share
of the stack's time spent linking (splitting included):

1. each plane's true sections given as proposals (linking alone), for
   ``split_valley`` 0 (no splitting: the earlier linking) and a range of values, and
   with one plane's sections missing;
2. the trained fixture SAMs' proposals (16 x 16 points on every plane): the fixture
   trained on sparse scenes (tests/data/fixture_sam.pth) and the same fine-tuned on
   planes of dense stacks too (tests/data/fixture_sam_dense.pth; stacks of other
   seeds than these); on the dense stacks each one's 2D recall per plane (what
   linking gets) and the 3D share without and with splitting; on the easy stacks,
   the 3D share for each ``split_valley`` (noisy SAM sections must not be cut).

In one stated precision (``--precision``, fp32 by default: the exact computation;
never a plan ``auto`` measured on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_stacks import Timer, recovered

VALLEYS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)


def run(engine, image, proposals, voxel, valley: float, overlap: float = 0.5):
    """One stack through the public API: (labels, seconds, linking seconds)."""
    from napari_slip.core.params import StackParams

    timer = Timer()
    start = time.perf_counter()
    result = engine.segment(
        image,
        "nucleus",
        labels=proposals,
        axes="ZYX",
        pixel_size=dict(zip("ZYX", voxel, strict=True)),
        mode="threshold",
        threshold=-1,
        stack_params=StackParams(split_valley=valley, min_overlap=overlap),
        progress=timer,
    )
    return result.labels, time.perf_counter() - start, timer.link_seconds


def plane_recall(engine, image, truth, every: int = 4) -> float:
    """The share of true sections the SAM finds on its own (2D IoU >= 0.5), on every
    ``every``-th plane: what linking gets to work with."""
    found = []
    for z in range(0, len(truth), every):
        labels = engine.segment(image[z], "nucleus", mode="threshold", threshold=-1).labels
        found.append(recovered(truth[z], labels) if truth[z].any() else 1.0)
    return float(np.mean(found))


def oversplit(truth: np.ndarray, labels: np.ndarray) -> int:
    """Nuclei cut in pieces: two or more result objects hold 20-80% of its voxels."""
    from napari_slip.core.pipeline.linking import overlaps

    ia, _, inter = overlaps(truth, labels)
    share = inter / np.bincount(truth.ravel())[ia]
    piece = (share >= 0.2) & (share < 0.8)
    _, counts = np.unique(ia[piece], return_counts=True)
    return int((counts >= 2).sum())


def row(name: str, outcomes: list, truths: list) -> dict:
    shares = [recovered(t, labels) for (labels, _, _), t in zip(outcomes, truths, strict=True)]
    objects = sum(len(np.unique(labels)) - 1 for labels, _, _ in outcomes)
    total = sum(seconds for _, seconds, _ in outcomes)
    linking = sum(link for _, _, link in outcomes)
    out = {
        "recovered": round(float(np.mean(shares)), 3),
        "worst_stack": round(float(np.min(shares)), 3),
        "objects": int(objects),
        "cut_in_pieces": sum(oversplit(t, o[0]) for o, t in zip(outcomes, truths, strict=True)),
        "truth": int(sum(int(t.max()) for t in truths)),
        "linking_share": round(linking / total, 4) if total else 0.0,
    }
    print(f"  {name}: {out}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=4)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--no-sam", action="store_true", help="skip part 2")
    parser.add_argument("--precision", default="fp32", help="the models' precision")
    args = parser.parse_args(argv)
    os.environ["NAPARI_SLIP_AUTOTUNE"] = "0"  # no background measurement in this process

    from napari_slip.core.params import SamProposalParams, StackParams
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.runtime.perf import cpu_info
    from napari_slip.testing.dense import VOXEL, dense_nuclei_stack, true_sections
    from napari_slip.testing.scenes import nuclei_stack
    from napari_slip.testing.tiny import write_tiny_clip
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_DENSE_PATH, FIXTURE_PATH

    cpu = dict(cpu_info())
    print(f"CPU: {cpu} ({platform.machine()}, python {platform.python_version()})")
    scratch = tempfile.TemporaryDirectory()  # removed when the script ends
    tmp = Path(scratch.name)
    clip = str(write_tiny_clip(tmp / "clip.safetensors"))
    dense = [dense_nuclei_stack(seed) for seed in range(args.stacks)]
    easy = [nuclei_stack(seed) for seed in range(5)]
    dense_truth, easy_truth = [t for _, t in dense], [t for _, t in easy]
    print(
        f"{args.stacks} dense stacks of {dense[0][0].shape} ({dense[0][0].dtype}), "
        f"{sum(int(t.max()) for t in dense_truth)} nuclei; 5 easy stacks, "
        f"{sum(int(t.max()) for t in easy_truth)} nuclei"
    )
    out: dict = {
        "cpu": cpu,
        "precision": args.precision,
        "voxel_um": VOXEL,
        "dense_shape": list(dense[0][0].shape),
    }
    sam_params = SamProposalParams(**FIXTURE_AMG)
    precision = args.precision
    engine = Segmenter(
        str(FIXTURE_PATH), clip, sam_params=sam_params, disk_cache=False, precision=precision
    )

    print("1. true sections given as proposals")
    given: dict = {}
    for valley in VALLEYS:
        outcomes = [run(engine, i, true_sections(t), VOXEL, valley) for i, t in dense]
        given[f"dense, split_valley {valley}"] = row(
            f"dense, valley {valley}", outcomes, dense_truth
        )
        outcomes = [run(engine, i, true_sections(t), (1, 1, 1), valley) for i, t in easy]
        given[f"easy, split_valley {valley}"] = row(f"easy, valley {valley}", outcomes, easy_truth)
    default = StackParams().split_valley
    outcomes = [run(engine, i, true_sections(t, drop_plane=15), VOXEL, default) for i, t in dense]
    given["dense, one plane missed"] = row("dense, one plane missed", outcomes, dense_truth)
    for overlap in (0.3, 0.7, 0.9):
        outcomes = [run(engine, i, true_sections(t), VOXEL, 0.0, overlap) for i, t in dense]
        key = f"dense, no split, min_overlap {overlap}"
        given[key] = row(key, outcomes, dense_truth)
    out["labels_given"] = given

    fixtures = {"fixture_sam": FIXTURE_PATH, "fixture_sam_dense": FIXTURE_DENSE_PATH}
    for name, path in {} if args.no_sam else fixtures.items():
        print(f"2. {path.name}'s proposals (16 x 16 points on every plane)")
        engine = Segmenter(
            str(path), clip, sam_params=sam_params, disk_cache=False, precision=precision
        )
        sam: dict = {}
        recalls = [plane_recall(engine, image, truth) for image, truth in dense]
        sam["dense, 2D recall per plane"] = round(float(np.mean(recalls)), 3)
        print(f"  dense, the SAM's 2D recall per plane (IoU >= 0.5): {np.mean(recalls):.3f}")
        for valley in (0.0, default):
            outcomes = [run(engine, i, None, VOXEL, valley) for i, _ in dense]
            key = f"dense, split_valley {valley}"
            sam[key] = row(f"{name}, {key}", outcomes, dense_truth)
        for valley in VALLEYS:
            outcomes = [run(engine, i, None, (1, 1, 1), valley) for i, _ in easy]
            key = f"easy, split_valley {valley}"
            sam[key] = row(f"{name}, {key}", outcomes, easy_truth)
        out[name] = sam
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
