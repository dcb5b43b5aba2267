"""Edits, timed through the widget's real path (run by hand under Xvfb, not a test):
a Qt Shift+click on napari's canvas until the clicked pixel changes in the Labels
layer (``labels``: SAM's decode in the worker, napari's write), and until the edit's
table is shown and its example taught (``done``: CLIP's crop embedding and the
measurements, the second step) or the edit is refused in the status line; the first
click and the following ones; a re-selection (a threshold change). Prints the CPU,
the precision and the SAM. Then, with ViT-B, the quality of 3D adds on linked stacks
with the fixture SAM (Python API).

    xvfb-run -a python benchmarks/bench_edits.py [--clicks 20] [--sam vit_b] [--json OUT]

Weights: SAM (``--sam``: ViT-B, MobileSAM ``vit_t`` or EfficientViT-SAM-L0) and CLIP
ViT-B/32 at their published sizes with *random* weights (none can be downloaded
where this runs), saved as checkpoint files and loaded through the real loaders. The
decoder's arithmetic does not depend on the weights, but what follows a decode does:
random weights give arbitrary masks, many of which cover most of the image and are
refused (no CLIP crop embedding, no measurement), so the table reports applied and
refused clicks apart; the applied ones are the bound that counts. The image: 1,024 x
1,024 px of ~600 nuclei (``nuclei_mosaic``); the run before the clicks uses SAM's
grid at 4 x 4 points with no SAM filter, keeping its best object (it makes the
embedding the clicks decode on, and the output layer the first click edits).
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_concepts import build_clip


def build_sam(folder: Path, sam: str = "vit_b") -> Path:
    """A SAM at its published size with random weights, saved as a checkpoint:
    segment-anything's ViT-B, MobileSAM (``vit_t``) or EfficientViT-SAM-L0."""
    import torch

    from napari_slip.core.models.sam import SamConfig, build_sam

    torch.manual_seed(0)
    path = folder / f"sam_{sam}_random.pth"
    if sam == "vit_b":
        from segment_anything import sam_model_registry

        model = sam_model_registry["vit_b"]()
    elif sam == "vit_t":
        model = build_sam(SamConfig(encoder="tinyvit"))
    else:
        from napari_slip.core.models.efficientvit import PUBLISHED

        model = build_sam(SamConfig(encoder="efficientvit", efficientvit=PUBLISHED["l0"]))
    torch.save(model.state_dict(), path)
    return path


def one_click(viewer, widget, y: int, x: int, right: bool = False) -> tuple[float, float, bool]:
    """A real Shift+click (``right``: Shift+right-click) on napari's canvas at data
    pixel (y, x): milliseconds to the Labels layer written (napari's
    ``labels_update`` event, which ``data_setitem`` emits as it asks for the
    repaint) and to the edit done (its table shown, its example taught, or the
    refusal), and whether the labels changed. The wait runs Qt's event loop, as a
    user's napari does (a poll with a short sleep)."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    canvas = viewer.window._qt_viewer.canvas
    wy, wx = viewer.layers["nuclei"].data_to_world((y, x))
    px, py = (canvas.view.transform * canvas.view.scene.transform).map([wx, wy])[:2]
    layer = widget.session.last.layer
    before = None if layer is None else layer.data.copy()
    button = Qt.MouseButton.RightButton if right else Qt.MouseButton.LeftButton
    written = []

    def labels_written(_event=None) -> None:
        written.append(time.perf_counter())

    if layer is not None:
        layer.events.labels_update.connect(labels_written)
    start = time.perf_counter()
    QTest.mouseClick(
        canvas.native, button, Qt.KeyboardModifier.ShiftModifier, QPoint(round(px), round(py))
    )
    while widget.edits.editing:
        QApplication.processEvents()
        time.sleep(0.0005)
    QApplication.processEvents()
    done = 1000 * (time.perf_counter() - start)
    if layer is not None:
        layer.events.labels_update.disconnect(labels_written)
    written = written[0] if written else None
    layer = widget.session.last.layer
    changed = layer is not None and (before is None or not np.array_equal(layer.data, before))
    return (done if written is None else 1000 * (written - start)), done, bool(changed)


def click_times(viewer, widget, truth, n_clicks: int) -> dict:
    """First the run's kept objects removed with Shift+right-clicks (no decode), then
    Shift+clicks on unlabelled nuclei, each timed by :func:`one_click`."""
    layer = widget.session.last.layer
    removed = []
    if layer is not None:
        for label in np.unique(layer.data)[1:]:
            ys, xs = np.nonzero(layer.data == label)
            labels_ms, done_ms, _ = one_click(viewer, widget, ys[0], xs[0], right=True)
            removed.append((labels_ms, done_ms))
    rng = np.random.default_rng(0)
    applied, refused, first = [], [], None
    for v in rng.permutation(np.unique(truth)[1:]):
        ys, xs = np.nonzero(truth == v)
        y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
        layer = widget.session.last.layer
        if layer is not None and layer.data[y - 3 : y + 4, x - 3 : x + 4].any():
            continue  # labelled (or nearly): a Shift+click there decodes nothing
        labels_ms, done_ms, changed = one_click(viewer, widget, y, x)
        if first is None:
            first = {"labels_ms": round(labels_ms, 1), "done_ms": round(done_ms, 1)}
            first.update(applied=changed, status=widget.status.value)
        else:
            (applied if changed else refused).append((labels_ms, done_ms))
        if len(applied) + len(refused) + 1 >= n_clicks:
            break

    def stats(values):
        if not values:
            return {"n": 0}
        labels, done = np.asarray(values).T
        out = {"n": len(values), "labels_median_ms": round(float(np.median(labels)), 1)}
        out["labels_max_ms"] = round(float(np.max(labels)), 1)
        out["done_median_ms"] = round(float(np.median(done)), 1)
        return out

    return {
        "removed": stats(removed),
        "first": first,
        "applied": stats(applied),
        "refused": stats(refused),
    }


def write_times(widget, truth) -> dict:
    """The GUI thread's share of an applied click on a nucleus-sized object, on the
    widget's own output layer: the edit of a true nucleus's pixels written by
    :meth:`Teaching.apply` (napari's ``data_setitem``, one undo step) and undone."""
    teaching = widget.session.teaching
    layer = teaching.output_layer()
    times = []
    for v in np.unique(truth)[1:21]:
        nucleus = (truth == v) & (layer.data == 0)
        if not nucleus.any() or teaching.editor is None:
            continue
        label = teaching.editor.next_id()
        made = teaching.editor.edit_of("add", label, nucleus, label, f"Added object {label}.")
        start = time.perf_counter()
        teaching.apply(made)
        times.append(1000 * (time.perf_counter() - start))
        layer.undo()
    return {"n": len(times), "median_ms": round(float(np.median(times)), 2)}


def stack_clicks(seeds=(3, 4, 5)) -> dict:
    """3D adds on linked stacks with the fixture SAM (tests/data), through the Python
    API: each nucleus of ``nuclei_stack`` taken out of the labels, then clicked once on
    its widest section; 3D IoU with the truth and the planes it spans."""
    import napari_slip
    from napari_slip.core.params import SamProposalParams
    from napari_slip.testing import write_tiny_clip
    from napari_slip.testing.scenes import nuclei_stack
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_PATH

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_tiny_clip(Path(tmp) / "clip.safetensors")
        params = SamProposalParams(**FIXTURE_AMG, min_area=30)
        kept = {"disk_cache": False, "cache_size": 16}
        seg = napari_slip.Segmenter(str(FIXTURE_PATH), str(clip), "cpu", sam_params=params, **kept)
        ious, short = [], 0
        for seed in seeds:
            image, truth = nuclei_stack(seed, depth=8)
            options = {"axes": "ZYX", "mode": "threshold", "threshold": -1}
            result = seg.segment(image, "nucleus", labels=truth, **options)
            for k in range(1, truth.max() + 1):
                inside = truth == k
                editor = napari_slip.edit(result, seg)
                z0, y0, x0 = np.argwhere(inside)[0]
                editor.remove_at(y0, x0, plane=(int(z0),))
                z = int(np.argmax(inside.sum(axis=(1, 2))))
                ys, xs = np.nonzero(inside[z])
                c = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
                made = editor.add_at(ys[c] + 0.5, xs[c] + 0.5, plane=(z,))
                new = editor.labels == made.label
                ious.append(np.logical_and(new, inside).sum() / np.logical_or(new, inside).sum())
                short += new.any(axis=(1, 2)).sum() < inside.any(axis=(1, 2)).sum()
    ious = np.asarray(ious)
    median, share = float(np.median(ious)), float((ious >= 0.7).mean())
    return {
        "nuclei": len(ious),
        "median_iou": round(median, 3),
        "share_iou_0.7": round(share, 3),
        "fewer_planes": int(short),
    }


def engine_times(widget, truth) -> dict:
    """The worker's steps of an applied click on a nucleus-sized object, through the
    Python API on the widget's own result (public calls): SAM's decode of the point,
    the object's features (CLIP crop embedding and measurements), the table."""
    import napari_slip
    from napari_slip.core.concepts.features import ObjectFeatures, measure_objects
    from napari_slip.core.pipeline.plane import proposals_of_masks

    result = widget.session.last.result
    editor = napari_slip.edit(result, widget.session.segmenter)
    handle = editor.handle
    times: dict = {"decode": [], "features": [], "table": []}
    for v in np.unique(truth)[1:11]:
        nucleus = truth == v
        ys, xs = np.nonzero(nucleus)
        start = time.perf_counter()
        handle.decode([(ys[len(ys) // 2] + 0.5, xs[len(xs) // 2] + 0.5)], [True])
        times["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        clip = handle.embed_masks([nucleus])
        ObjectFeatures(
            measure_objects(handle.image, proposals_of_masks(handle.shape, [nucleus])), clip
        )
        times["features"].append(time.perf_counter() - start)
        start = time.perf_counter()
        editor.table()
        times["table"].append(time.perf_counter() - start)
    return {k: round(1000 * float(np.median(v)), 1) for k, v in times.items()}


def reselect_time(widget) -> dict:
    """A threshold change on the last result (no image work), as the slider does it."""
    times = []
    widget.mode.value = "threshold"
    for value in (0.1, -0.2, 0.05, -0.1, 0.0):
        start = time.perf_counter()
        widget.threshold.value = value
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": round(float(np.median(times)), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=60)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--sam",
        default="vit_b",
        choices=["vit_b", "vit_t", "efficientvit_l0"],
        help="the SAM at its real size (vit_t: MobileSAM)",
    )
    args = parser.parse_args(argv)
    from qtpy.QtWidgets import QApplication

    import napari
    from napari_slip._napari.widget import SlipWidget
    from napari_slip.core.runtime.perf import cpu_info
    from napari_slip.testing.scenes import nuclei_mosaic

    cpu = dict(cpu_info())
    print(f"CPU: {cpu} ({platform.machine()}, python {platform.python_version()})")
    rgb, truth = nuclei_mosaic(1, (1024, 1024), spacing=40)
    out: dict = {"cpu": cpu, "sam": f"{args.sam} (random weights)", "clip": "ViT-B-32 (random)"}
    out["image"] = "1024 x 1024, nuclei_mosaic"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sam, clip = build_sam(tmp, args.sam), build_clip(tmp)
        viewer = napari.Viewer(show=True)
        viewer.add_image(rgb, name="nuclei", rgb=True)
        widget = SlipWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.add_sam_file(sam)
        widget.add_clip_file(clip)
        widget.device.value = "cpu"
        widget.points_per_side.value = 4
        # Random weights pass no SAM filter: with none, the run keeps its best object,
        # so the output layer exists before the first click, as after a real run.
        widget.pred_iou_thresh.value = widget.stability_score_thresh.value = 0.0
        widget.prompt.value = "nucleus"
        widget.mode.value = "topk"
        widget.top_k.value = 1
        start = time.perf_counter()
        widget.run()
        while widget.busy:
            QApplication.processEvents()
            time.sleep(0.01)
        out["run_s"] = round(time.perf_counter() - start, 1)
        out["precision"] = widget.session.last.result.provenance.get("precision")
        print(f"  run (embedding + 4 x 4 grid): {out['run_s']} s, precision {out['precision']}")
        out["reselect"] = reselect_time(widget)  # before any edit (after one: refused)
        print(f"  re-selection: {out['reselect']}")
        widget.mode.value = "topk"
        out["clicks"] = click_times(viewer, widget, truth, args.clicks)
        print(f"  clicks: {out['clicks']}")
        out["write_nucleus"] = write_times(widget, truth)
        print(f"  an applied nucleus's write on the GUI thread: {out['write_nucleus']}")
        out["engine_ms"] = engine_times(widget, truth)
        print(f"  an applied click's worker steps, nucleus-sized (median ms): {out['engine_ms']}")
        viewer.close()
    if args.sam == "vit_b":  # the quality of 3D adds does not depend on the timed SAM
        out["stack_clicks"] = stack_clicks()
        print(f"  3D adds on linked stacks (fixture SAM): {out['stack_clicks']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
