"""The dock as a microscopist reads it at napari's default window (1,089 x 651): every
message whole, the results in view after a run, one unit per view (real viewer, real
Qt events)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, QRect, Qt

from napari_slip._napari import toasts
from napari_slip.core.errors import WeightsUnavailableError
from napari_slip.testing.scenes import nuclei_scene

DEFAULT_WINDOW = (1089, 651)


@pytest.fixture
def shown(slip, qtbot):
    """The ``slip`` viewer shown at napari's default window size."""
    viewer, widget, run = slip
    viewer.window.show()
    viewer.window._qt_window.resize(*DEFAULT_WINDOW)
    qtbot.wait(100)
    return viewer, widget, run


def _scene(viewer, widget, n_objects: int = 9):
    image, truth = nuclei_scene(np.random.default_rng(4), n=(n_objects, n_objects + 1))
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(truth, name="truth")
    widget.image.value = viewer.layers["nuclei"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    return truth


def _in_view(area, widget, rect: QRect | None = None) -> bool:
    """Whether ``rect`` of ``widget`` (all of it by default) lies inside the scroll
    area's viewport as it is scrolled now."""
    rect = widget.rect() if rect is None else rect
    top_left = widget.mapTo(area.viewport(), rect.topLeft())
    bottom_right = widget.mapTo(area.viewport(), rect.bottomRight())
    return area.viewport().rect().contains(QRect(top_left, bottom_right))


def test_after_a_run_the_summary_histogram_and_five_rows_are_in_view(shown, qtbot):
    viewer, widget, run = shown
    truth = _scene(viewer, widget)
    area = widget._scroll
    area.verticalScrollBar().setValue(0)  # the form at the top, as before a run
    assert not _in_view(area, widget.results.table)  # below the fold at this size
    run()
    qtbot.wait(200)
    results = widget.results
    assert len(results.rows) == truth.max() >= 5
    assert results.summary.value.startswith(f"{truth.max()} of {truth.max()} candidates")
    for part in (results.summary.native, results.histogram, results.table.horizontalHeader()):
        assert part.isVisible() and _in_view(area, part)
    table = results.table
    for row in range(5):
        cell = table.visualRect(table.model().index(row, 0))
        assert cell.height() > 0 and _in_view(area, table.viewport(), cell)
        assert table.item(row, 0) is not None
    # The window kept napari's size: the dock scrolled, it did not grow.
    assert widget.native.window().height() <= DEFAULT_WINDOW[1] + 1


def test_a_long_error_is_whole_selectable_and_its_tooltip(shown, qtbot, tmp_path):
    _, widget, _ = shown
    error = WeightsUnavailableError.offline(
        "SAM ViT-B",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        tmp_path / "cache" / "sam_vit_b_01ec64.pth",
        "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>",
    )
    widget.show_error(error)
    qtbot.wait(100)
    label, toggle = widget.status.native, widget.status_line.toggle.native
    text = widget.status.value
    assert text.endswith(error.for_surface("widget").splitlines()[0])
    assert label.toolTip() == text  # the tooltip is the message, always
    width = label.width()
    assert label.height() < label.heightForWidth(width)  # cut at first ...
    assert toggle.isVisible() and toggle.text() == "Show all"  # ... with a way to all
    qtbot.mouseClick(toggle, Qt.MouseButton.LeftButton)
    qtbot.wait(100)
    assert label.height() >= label.heightForWidth(label.width())  # the whole text
    assert toggle.text() == "Show less"
    # Selectable and copyable: drag across the text with the mouse.
    assert label.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    label.setSelection(0, len(text))
    assert label.selectedText() == text
    # A new message starts folded, with its own tooltip; a short one needs no toggle.
    widget.status.value = "3 object(s) matching 'nucleus'."
    qtbot.wait(50)
    assert label.toolTip() == widget.status.value and not toggle.isVisible()


def test_the_toast_says_what_happened_first_and_the_rest_is_there(shown, qtbot):
    viewer, widget, run = shown
    _scene(viewer, widget)
    widget.pred_iou_thresh.value = 0.99  # not used: label proposals; force nothing kept
    widget.threshold.value = 1.0
    run()
    status = widget.status.value
    assert status.startswith("Nothing found for 'nucleus'")
    posted = toasts.headlined(status)
    first, _, rest = posted.partition("\n")
    assert first == "Nothing found for 'nucleus'." and rest
    assert posted.replace("\n", " ").replace("'nucleus'. ", "'nucleus': ").lower() == (
        status.lower()
    )
    qtbot.waitUntil(lambda: any(t.message.text() == posted for t in toasts.on_screen()))


def test_nothing_found_offers_its_fix_beside_the_status_in_view(shown, qtbot):
    viewer, widget, run = shown
    image, _ = nuclei_scene(np.random.default_rng(4))
    viewer.add_image(image, name="nuclei")
    widget.image.value = viewer.layers["nuclei"]
    widget.prompt.value = "nucleus"
    widget.points_per_side.value = 4
    widget.pred_iou_thresh.value = 0.99  # random SAM weights: no mask passes
    widget.stability_score_thresh.value = 0.99
    run()
    assert "Lower Min IoU or Min stability (Advanced settings)" in widget.status.value
    fix = widget.results.suggest
    assert fix.isVisible()
    # Pinned with the status below the scrolling form: in view however it is scrolled.
    assert fix.parentWidget() is widget.native
    for value in (0, widget._scroll.verticalScrollBar().maximum()):
        widget._scroll.verticalScrollBar().setValue(value)
        qtbot.wait(20)
        assert fix.visibleRegion().boundingRect() == fix.rect()
    status_bottom = widget.status.native.mapTo(widget.native, QPoint(0, 0)).y()
    assert fix.mapTo(widget.native, QPoint(0, 0)).y() > status_bottom


@pytest.mark.parametrize(
    ("mode", "concept", "unit"),
    [
        ("threshold", False, "cosine similarity"),
        ("distractors", False, "probability vs distractors"),
    ],
)
def test_the_histogram_and_threshold_share_the_modes_unit(shown, qtbot, mode, concept, unit):
    viewer, widget, run = shown
    _scene(viewer, widget)
    widget.mode.value = mode
    widget.distractors.value = "debris, dust"
    widget.use_floor.value = True
    slider = widget.threshold
    assert slider.unit == unit
    if unit.startswith("probability"):  # switched: a probability's range and start
        assert (slider.min, slider.max, slider.value) == (0.0, 1.0, 0.5)
        slider.value = 0.0
    else:
        slider.value = -1.0
    run()
    hist = widget.results.histogram
    assert hist.unit == unit and f"({unit})" in widget.results.summary.value
    scores = widget.results.rows["score"].to_numpy(float)
    if unit.startswith("probability"):
        assert ((scores >= 0) & (scores <= 1)).all()
    # Switching the mode back switches the slider's unit, range and value too.
    widget.mode.value = "distractors" if mode == "threshold" else "threshold"
    assert slider.unit != unit
    lo, hi = (0.0, 1.0) if slider.unit.startswith("probability") else (-1.0, 1.0)
    assert (slider.min, slider.max) == (lo, hi)


def test_a_far_threshold_leaves_the_bars_their_width_and_pageup_steps(shown, qtbot):
    viewer, widget, run = shown
    _scene(viewer, widget)
    run()
    hist = widget.results.histogram
    assert hist.threshold == -1.0 and hist.threshold_far()
    lo, hi = hist.range()
    scores = hist.scores
    assert lo > -1.0 and lo <= scores.min() and hi >= scores.max()
    spread = float(scores.max() - scores.min())
    assert hi - lo == pytest.approx(spread + 2 * max(0.05 * spread, 0.005))  # the scores'
    # Keyboard: PageDown / PageUp move the threshold by ten steps.
    from qtpy.QtWidgets import QSlider

    slider = widget.threshold.native.findChild(QSlider)
    widget.threshold.value = 0.2
    before = widget.threshold.value
    slider.setFocus()
    qtbot.keyClick(slider, Qt.Key.Key_PageDown)
    assert widget.threshold.value == pytest.approx(before - 10 * widget.threshold.step)
    qtbot.keyClick(slider, Qt.Key.Key_PageUp)
    assert widget.threshold.value == pytest.approx(before)


def test_save_and_export_from_the_dock_read_back(shown, qtbot, tmp_path):
    import json

    import pandas as pd
    import roifile
    import shapely
    import tifffile
    from shapely.geometry import shape

    viewer, widget, run = shown
    _scene(viewer, widget)
    viewer.layers["nuclei"].scale = (0.5, 0.5)
    run()
    files = widget.results.files
    assert files.save_button.isEnabled() and files.export_button.isEnabled()
    layer = widget.session.last.layer
    gone = int(layer.data.max())
    layer.data = np.where(layer.data == gone, 0, layer.data)  # the user removed one
    qtbot.wait(50)
    labels = np.asarray(layer.data)
    written = files.save_labels(tmp_path / "cells.ome.tif")
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.series[0].axes == "YX" and np.array_equal(tif.asarray(), labels)
    table = pd.read_csv(written[1])
    assert sorted(table["id"]) == sorted(set(np.unique(labels)) - {0})  # what is shown
    assert "area_um2" in table and gone not in set(table["id"])
    row = table.iloc[0]
    assert row["area_um2"] == pytest.approx(row["area"] * 0.25)
    files.export(tmp_path / "cells.geojson")
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    for feature in json.loads((tmp_path / "cells.geojson").read_text())["features"]:
        label = feature["properties"]["measurements"]["label"]
        inside = shapely.contains_xy(shape(feature["geometry"]), xx + 0.5, yy + 0.5)
        assert np.array_equal(inside, labels == label)
        assert feature["properties"]["classification"]["name"] == "nucleus"
    files.export(tmp_path / "cells.zip")
    names = sorted(int(r.name.split("-")[0]) for r in roifile.roiread(tmp_path / "cells.zip"))
    assert set(names) == set(np.unique(labels)) - {0}
    # What was written is said in the status; a bad name is refused and writes nothing.
    files._write(lambda: files.export(tmp_path / "cells.xlsx"))
    assert widget.status.value.startswith("Not saved:") and ".geojson" in widget.status.value
    assert not (tmp_path / "cells.xlsx").exists()


def test_the_table_shows_physical_sizes_channels_and_where_and_columns_can_be_hidden(
    shown, qtbot, tmp_path
):
    viewer, widget, run = shown
    _, truth = nuclei_scene(np.random.default_rng(4), n=(6, 7))
    stack = np.stack([truth] * 3).astype(np.int32)
    image = np.stack([(truth > 0) * 1000 + 100 * z for z in range(3)]).astype(np.uint16)
    viewer.add_image(image, name="planes", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(stack, name="truth")
    widget.image.value = viewer.layers["planes"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.scope.value = "all slices"
    run()
    table = widget.results.table
    headers = [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())]
    assert headers[:2] == ["id", "score"] and "volume \u00b5m\u00b3" in headers
    assert "where" in headers and "mean" in headers
    rows = widget.results.rows
    size, where = headers.index("volume \u00b5m\u00b3"), headers.index("where")
    for r in range(table.rowCount()):
        row = rows.iloc[int(table.item(r, 0).data(Qt.ItemDataRole.UserRole))]
        assert float(table.item(r, size).text()) == pytest.approx(row["volume_um3"], abs=0.01)
        assert row["volume_um3"] == pytest.approx(row["area"] * 2.0 * 0.25)
        assert table.item(r, where).text() == "z 0-2"  # linked through the 3 planes
    # Untick a column in the header's menu: hidden now and for the next result.
    menu = widget.results.column_menu()
    action = next(a for a in menu.actions() if a.text() == "mean")
    action.setChecked(False)
    assert table.isColumnHidden(headers.index("mean"))
    run()
    assert table.isColumnHidden(headers.index("mean")) and not table.isColumnHidden(where)
    # Save labels... of a 3D result: an OME-Zarr with its axes and pixel sizes.
    import zarr

    written = widget.results.files.save_labels(tmp_path / "planes.ome.zarr")
    group = zarr.open_group(str(written[0]), mode="r")
    meta = group.attrs["multiscales"][0]
    assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    assert np.array_equal(group["0"][...], widget.session.last.layer.data)


def test_a_histogram_click_that_makes_the_layer_takes_down_nothing_found(shown, qtbot):
    viewer, widget, run = shown
    _scene(viewer, widget)
    widget.threshold.value = 1.0
    run()
    assert widget.session.last.layer is None
    qtbot.waitUntil(lambda: any("Nothing found" in t.message.text() for t in toasts.on_screen()))
    hist = widget.results.histogram
    qtbot.mouseClick(hist, Qt.MouseButton.LeftButton, pos=QPoint(2, 10))
    qtbot.waitUntil(lambda: widget.session.last.layer is not None)
    qtbot.waitUntil(lambda: not toasts.on_screen())
    assert "matching 'nucleus'" in widget.status.value


def test_table_columns_name_classes_channels_and_planes():
    import pandas as pd

    from napari_slip._napari.table_columns import columns_for, where_text

    rows = pd.DataFrame(
        {
            "id": [1, 2],
            "score": [0.9, 0.8],
            "class": ["mitotic", "interphase"],
            "class_probability": [0.7, 0.95],
            "area": [40, 50],
            "area_um2": [10.0, 12.5],
            "mean_intensity_c0": [1.0, 2.0],
            "mean_intensity_c1": [1.0, 2.0],  # a copy of c0: shown once
            "mean_intensity_c2": [5.0, 6.0],
            "axis0": [3, 4],
            "axis1": [0, 1],
        }
    )
    columns = columns_for(rows, ["axis0", "axis1"], "TZYX")
    headers = [c.header for c in columns]
    assert headers == [
        "id",
        "score",
        "class",
        "probability",
        "area \u00b5m\u00b2",
        "where",
        "mean c0",
        "mean c2",
    ]
    row = rows.iloc[1]
    values = {c.header: c.value(row) for c in columns}
    assert values["class"] == "interphase" and values["probability"] == 0.95
    assert values["area \u00b5m\u00b2"] == 12.5 and values["where"] == "t 4, z 1"
    linked = pd.Series({"t": 2, "bbox_z0": 3, "bbox_z1": 10})
    assert where_text(linked, [], "TZYX") == "t 2, z 3-9"
    assert where_text(pd.Series({"bbox_z0": 4, "bbox_z1": 5}), [], "ZYX") == "z 4"
    plain = columns_for(rows.drop(columns=["area_um2", "axis0", "axis1"]), [], "")
    assert "area px" in [c.header for c in plain] and "where" not in [c.header for c in plain]


def test_save_labels_asks_before_replacing_the_table_beside(shown, qtbot, tmp_path):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    _, widget, _ = shown
    files = widget.results.files
    target = str(tmp_path / "cells.ome.tif")
    assert files._may_replace(target)  # nothing there: no question
    (tmp_path / "cells.csv").write_text("the user's own table")
    answers = []

    def answer(button):
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            answers.append(box.text())
            box.button(button).click()

    for button, expected in (
        (QMessageBox.StandardButton.No, False),
        (QMessageBox.StandardButton.Yes, True),
    ):
        QTimer.singleShot(200, lambda button=button: answer(button))
        assert files._may_replace(target) is expected
    assert len(answers) == 2 and "cells.csv" in answers[0]
    assert (tmp_path / "cells.csv").read_text() == "the user's own table"


def test_layer_events_never_rescan_checkpoint_folders(shown, monkeypatch, tmp_path):
    """napari calls the dock's reset_choices on every layer event: the layer lists
    follow, the checkpoint folders are scanned only when asked."""
    from napari_slip._napari import model_pickers

    viewer, widget, _ = shown
    widget.add_checkpoint_folder(tmp_path)
    scans = []
    real = model_pickers.clip_choices
    monkeypatch.setattr(model_pickers, "clip_choices", lambda *a: scans.append(1) or real(*a))
    for i in range(3):
        viewer.add_image(np.zeros((16, 16)), name=f"new {i}")
    viewer.layers["new 0"].name = "renamed"
    del viewer.layers["new 1"]
    assert scans == []
    assert "renamed" in [str(getattr(c, "name", c)) for c in widget.image.choices]
    assert "new 1" not in [str(getattr(c, "name", c)) for c in widget.image.choices]
    widget.rescan_button.changed.emit(True)  # the button: scanned again
    assert scans
