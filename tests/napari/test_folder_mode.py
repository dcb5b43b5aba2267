"""The widget's folder mode: a folder of images segmented in a worker, resumably."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tifffile

from napari_slip.testing import blobs_image


def _plate(tmp_path, n=3):
    (tmp_path / "plate").mkdir()
    for i in range(n):
        image, _ = blobs_image(seed=i)
        tifffile.imwrite(tmp_path / "plate" / f"w{i}.tif", image)
    return tmp_path / "plate"


def test_folder_mode_segments_every_image_and_resumes(slip, qtbot, tmp_path, fast_sam_params):
    viewer, widget, _run = slip
    plate = _plate(tmp_path)
    widget.prompt.value = "blob"
    widget.mode.value = "topk"
    widget.top_k.value = 2
    widget.points_per_side.value = fast_sam_params.points_per_side
    widget.pred_iou_thresh.value = 0.0
    widget.stability_score_thresh.value = 0.0
    widget.min_area.value = 20
    widget.show_folder.value = True
    assert widget.folder_area.isVisibleTo(widget.native)
    widget.folder_in.value = plate
    widget.folder_out.value = tmp_path / "out"
    layers_before = len(viewer.layers)
    widget.results.summary.value = "3 of 9 candidates kept"  # as a last image's run left it
    widget.results.visible = True

    widget.run_folder.clicked.emit()  # a real click: the worker starts
    assert widget.busy
    assert widget.results.summary.value == "" and not widget.results.visible
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    summary = widget.last_batch
    assert sorted(summary.done) == ["w0.tif", "w1.tif", "w2.tif"]
    for name in summary.done:
        labels = tifffile.imread(tmp_path / "out" / name)
        assert 1 <= labels.max() <= 2
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert set(objects["image"]) == set(summary.done)
    assert widget.status.value.startswith("3 images: 3 segmented.")
    assert len(viewer.layers) == layers_before  # a folder run adds no layers
    # The panel tells the folder's outcome; any image opens with its labels.
    assert widget.results.summary.value.startswith("3 images: 3 segmented.")
    names = [c for c in widget.folder_result.choices if c]
    assert len(names) == 3 and names[0].startswith("w0.tif (")
    widget.folder_result.value = names[0]
    widget.open_result.clicked.emit()
    opened = viewer.layers["w0.tif labels"]
    np.testing.assert_array_equal(opened.data, tifffile.imread(tmp_path / "out" / "w0.tif"))
    assert viewer.layers["w0.tif"].data.shape == opened.data.shape
    widget.folder_out.value = tmp_path / "a" / "long" / "path" / "to" / "out"
    tip = widget.folder_out.tooltip.splitlines()
    assert tip[0] == str(tmp_path / "a" / "long" / "path" / "to" / "out") and "resumes" in tip[-1]
    widget.folder_out.value = tmp_path / "out"

    widget.run_folder.clicked.emit()  # again: everything is skipped
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert len(widget.last_batch.skipped) == 3 and not widget.last_batch.done


def test_folder_mode_refuses_missing_folders_and_prompt(slip, tmp_path):
    _viewer, widget, _run = slip
    widget.show_folder.value = True
    widget.folder_in.value = tmp_path / "nowhere"
    widget.folder_out.value = tmp_path / "out"
    widget.run_folder.clicked.emit()
    assert widget.status.value.startswith("Error: Type a prompt first")
    widget.prompt.value = "blob"
    widget.run_folder.clicked.emit()
    assert widget.status.value == "Error: Choose the folder of images to segment."
    widget.folder_in.value = tmp_path
    widget.folder_out.value = tmp_path
    widget.run_folder.clicked.emit()
    assert widget.status.value == "Error: Choose another folder to save the labels in."
    assert not widget.busy and not (tmp_path / "out").exists()
    assert np.all([not p.name.endswith(".tif") for p in tmp_path.iterdir()])


def test_cancelling_a_folder_run_keeps_the_images_done(slip, qtbot, tmp_path):
    _viewer, widget, _run = slip
    plate = _plate(tmp_path, n=8)
    widget.prompt.value = "blob"
    widget.show_folder.value = True
    widget.folder_in.value = plate
    widget.folder_out.value = tmp_path / "out"
    widget.run_folder.clicked.emit()
    # Cancel once the first image is written.
    qtbot.waitUntil(lambda: len(list((tmp_path / "out").glob("*.tif"))) >= 1, timeout=120_000)
    widget.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    kept = sorted(p.name for p in (tmp_path / "out").glob("*.tif"))
    assert 1 <= len(kept) < 8
    assert widget.status.value.startswith("Cancelled; the images done so far are kept")
    assert not list((tmp_path / "out").rglob("*.part"))
    widget.run_folder.clicked.emit()  # resumes: the kept images are skipped
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert sorted(widget.last_batch.skipped) == kept
    assert len(widget.last_batch.done) == 8 - len(kept)


def test_folder_results_survive_a_hand_edited_summary_and_open_a_stack_with_channels(
    slip, tmp_path
):
    import json

    from napari_slip.core.batches import BatchSummary

    _, widget, _ = slip
    out = tmp_path / "out"
    out.mkdir()
    image = np.zeros((3, 2, 32, 32), np.uint16)  # Z, C, Y, X
    labels = np.zeros((3, 32, 32), np.uint16)
    labels[1, 8:16, 8:16] = 1
    tifffile.imwrite(tmp_path / "cells.tif", image, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(out / "cells.tif", labels, photometric="minisblack")
    good = {"input": str(tmp_path / "cells.tif"), "labels": "cells.tif", "n_objects": 1}
    hostile = [good, "not an entry", {"labels": 5}, {"labels": "x.tif"}, {"input": 3}, None]
    hostile.append({**good, "labels": "other.tif", "n_objects": "many"})
    (out / "summary.json").write_text(json.dumps({"images": hostile}))
    summary = BatchSummary(out, ["cells.tif"], [], {}, "", 1.0, 1)
    widget.folder_results.show(summary)  # no exception: the usable entries listed
    assert sorted(widget.folder_results.entries) == [
        "cells.tif (1 objects)",
        "other.tif (0 objects)",
    ]
    layer = widget.folder_results.open("cells.tif (1 objects)")
    assert layer.data.shape == (3, 32, 32) and np.array_equal(layer.data, labels)
    assert len(layer.scale) == 3
    for damaged in ("{broken", "[1, 2]", json.dumps({"images": {"a": 1}})):
        (out / "summary.json").write_text(damaged)
        widget.folder_results.show(summary)
        assert widget.folder_results.entries == {}
