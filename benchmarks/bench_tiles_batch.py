"""Tiles and batches, measured (run by hand, not a test).

    python benchmarks/bench_tiles_batch.py [--json benchmarks/results/NAME.json]

Models: the trained fixture SAM (tests/data/fixture_sam.pth, input 256, trained on
synthetic scenes, so real masks survive) and a tiny random CLIP (scores mean nothing;
CLIP's cost is not what is measured here). The fixture's 256 px input plays SAM's
1,024: a 1,024 px mosaic shrunk for the fixture is what a 4,096 px image is for SAM.

1. Tiling against shrink-then-segment, on fluorescence-like mosaics of small nuclei
   (diameters 14-26 px): object recall of the candidates (IoU >= 0.5), objects found
   in pieces (split), objects offered twice (duplicates, IoU >= 0.8), masks gluing two
   or more objects (merged); also for the objects that cross a tile border, and with
   merging across tiles turned off (merge_iou=1).
2. Peak memory against image size: each size in its own process, the mosaic stored as
   a zarr array on disk and read lazily, labels painted into a zarr store; peak
   resident memory (VmHWM) of the process, models included.
3. Batch throughput: images per minute for 1 worker (in process) and 2 worker
   processes (a local Dask cluster), on 512 px scenes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _models(tmp: Path):
    from napari_slip.testing.tiny import write_tiny_clip
    from napari_slip.testing.trained_sam import FIXTURE_PATH

    clip = tmp / "clip.safetensors"
    if not clip.exists():
        write_tiny_clip(clip)
    return str(FIXTURE_PATH), str(clip)


def _params():
    from napari_slip.core.params import SamProposalParams
    from napari_slip.testing.trained_sam import FIXTURE_AMG

    return SamProposalParams(**FIXTURE_AMG, min_area=30)


def _crossing(truth, tiles):
    h, w = truth.shape
    rows = {y for t in tiles for y in (t[0], t[2])} - {0, h}
    cols = {x for t in tiles for x in (t[1], t[3])} - {0, w}
    cut = [truth[y - 1 : y + 1].ravel() for y in rows]
    cut += [truth[:, x - 1 : x + 1].ravel() for x in cols]
    ids = np.unique(np.concatenate(cut))
    return np.where(np.isin(truth, ids[ids > 0]), truth, 0)


def tiling(tmp: Path, sizes=(1024, 2048), overlap: int = 32) -> list[dict]:
    from napari_slip.core.params import TileParams
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.pipeline.tiles import tile_grid
    from napari_slip.core.runtime.generators import drain
    from napari_slip.testing.metrics import object_metrics
    from napari_slip.testing.scenes import nuclei_mosaic

    sam, clip = _models(tmp)
    rows = []
    for size in sizes:
        rgb, truth = nuclei_mosaic(11, (size, size), spacing=40)
        crossing = _crossing(truth, tile_grid(truth.shape, 256, overlap))
        for name, tiles in (
            ("shrink (tiles off)", TileParams(tiles="off")),
            ("tiles, no merging", TileParams(tiles="on", overlap=overlap, merge_iou=1.0)),
            ("tiles (default merge)", TileParams(tiles="on", overlap=overlap)),
        ):
            seg = Segmenter(
                sam,
                clip,
                "cpu",
                sam_params=_params(),
                tile_params=tiles,
                precision="fp32",
                disk_cache=False,
            )
            seg.set_image(rgb)
            start = time.perf_counter()
            props = drain(seg.iter_proposals())
            seconds = time.perf_counter() - start
            row = {
                "size": size,
                "method": name,
                "seconds": round(seconds, 2),
                "decoded_points": int(props.decoded_points),
                **object_metrics(truth, props),
                "crossing": object_metrics(crossing, props),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over ``exec`` from the forking parent, VmHWM starts afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _memory_child(store: str, labels: str, sam: str, clip: str) -> None:
    import zarr

    from napari_slip.core.params import TileParams
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.runtime.generators import drain

    image = zarr.open_array(store, mode="r")
    seg = Segmenter(
        sam,
        clip,
        "cpu",
        sam_params=_params(),
        tile_params=TileParams(tiles="on", overlap=32),
        precision="fp32",
        disk_cache=False,
    )
    start = time.perf_counter()
    candidates = drain(seg.iter_candidates(image))
    result = seg.select(candidates, "nucleus", mode="topk", top_k=100, labels_out=labels)
    print(
        json.dumps(
            {
                "candidates": len(candidates),
                "objects": result.n_objects,
                "seconds": round(time.perf_counter() - start, 1),
                "peak_rss_mb": _peak_mb(),
            }
        )
    )


def memory(tmp: Path, sizes=(512, 1024, 2048, 3072)) -> list[dict]:
    import zarr

    from napari_slip.testing.scenes import nuclei_mosaic

    sam, clip = _models(tmp)
    rows = []
    for size in sizes:
        _rgb, truth = nuclei_mosaic(13, (size, size), spacing=40)
        gray = _rgb[..., 0]
        del _rgb
        store = tmp / f"mosaic{size}.zarr"
        z = zarr.open_array(
            str(store), mode="w", shape=gray.shape, chunks=(512, 512), dtype=gray.dtype
        )
        z[:] = gray
        del gray
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(store),
                str(tmp / f"labels{size}.zarr"),
                sam,
                clip,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        row = {
            "size": size,
            "pixels": size * size,
            "objects_true": int(truth.max()),
            **json.loads(out.stdout.strip().splitlines()[-1]),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def throughput(tmp: Path, n_images: int = 24) -> list[dict]:
    import tifffile

    from napari_slip.core.batches import batch
    from napari_slip.testing.scenes import scenes

    sam, clip = _models(tmp)
    folder = tmp / "plate"
    folder.mkdir(exist_ok=True)
    images, _ = scenes(n_images, seed=5, size=512)
    for i, image in enumerate(images):
        tifffile.imwrite(folder / f"img{i:03d}.tif", image)
    rows = []
    for workers in (1, 2):
        start = time.perf_counter()
        summary = batch(
            folder,
            tmp / f"out{workers}",
            "object",
            sam=sam,
            clip=clip,
            device="cpu",
            workers=workers,
            sam_params=_params(),
            precision="fp32",
        )
        seconds = time.perf_counter() - start
        row = {
            "workers": workers,
            "images": len(summary.done),
            "seconds": round(seconds, 1),
            "images_per_minute": round(60 * len(summary.done) / seconds, 1),
            "note": "wall time including starting the cluster and loading models per worker",
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        _memory_child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--parts", default="tiling,memory,throughput")
    args = parser.parse_args()
    cache = tempfile.TemporaryDirectory()  # removed when the script ends
    os.environ.setdefault("NAPARI_SLIP_CACHE", cache.name)
    import torch

    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "models": "fixture SAM (input 256, trained on synthetic scenes) + tiny random CLIP",
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parts = args.parts.split(",")
        if "tiling" in parts:
            report["tiling"] = tiling(tmp)
        if "memory" in parts:
            report["memory"] = memory(tmp)
        if "throughput" in parts:
            report["throughput"] = throughput(tmp)
    if args.json:
        out = Path(args.json)
        if out.exists():  # running some parts updates those parts only
            report = {**json.loads(out.read_text()), **report}
        out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
