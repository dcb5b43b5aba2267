"""An image's axes in the dock: files opened from disk with napari's own reader (which
drops their axes) are named after their metadata; without metadata the status line
says what is assumed, and one click switches it."""

from __future__ import annotations

import numpy as np
import tifffile
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from napari_slip._napari.job import lead_letters, pixel_sizes


def _movie():
    """Two discs, each moving, over 5 frames: (T, Y, X) uint16, and its truth."""
    yy, xx = np.mgrid[:48, :48]
    frames = np.zeros((5, 48, 48), np.uint16)
    truth = np.zeros((5, 48, 48), np.int32)
    for t in range(5):
        for k, (y, x) in enumerate(((14, 10 + 3 * t), (34, 36 - 3 * t)), start=1):
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= 36
            frames[t][disc], truth[t][disc] = 900, k
    return frames + 100, truth


def test_a_tyx_file_opened_from_disk_is_a_time_series(slip, qtbot, tmp_path):
    viewer, widget, run = slip
    frames, truth = _movie()
    path = tmp_path / "movie.tif"
    meta = {"axes": "TYX", "unit": "um", "finterval": 2.0}
    tifffile.imwrite(path, frames, imagej=True, metadata=meta, resolution=(2.0, 2.0))
    (layer,) = viewer.open(str(path))  # napari's own reader: axes "-3", "-2", "-1"
    viewer.add_labels(truth, name="truth")
    widget.image.value = layer
    assert tuple(layer.axis_labels) == ("t", "y", "x")
    assert tuple(layer.scale) == (2.0, 0.5, 0.5)
    assert "Axes TYX read from movie.tif" in widget.status.value
    assert widget.axes.switch.native.isHidden() and widget.channel_axis.native.isHidden()
    assert lead_letters(widget.request()) == "T"
    assert pixel_sizes(widget.request()) == ({"T": 2.0, "Y": 0.5, "X": 0.5}, "um")
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "cell"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.scope.value = "all slices"
    run()
    result = widget.session.last.result
    assert "track_id" in result.table  # frames linked into tracks, not a 3D object
    for k in (1, 2):  # one track id per cell, frame by frame
        ids = {int(np.bincount(result.labels[t][truth[t] == k]).argmax()) for t in range(5)}
        assert len(ids) == 1 and 0 not in ids


def test_a_cyx_file_opened_from_disk_has_its_channel_axis(slip, tmp_path):
    viewer, widget, _ = slip
    rng = np.random.default_rng(0)
    path = tmp_path / "cells.ome.tif"
    data = rng.integers(0, 4000, (3, 40, 40), dtype=np.uint16)
    meta = {"axes": "CYX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3}
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    (layer,) = viewer.open(str(path))
    widget.image.value = layer
    assert tuple(layer.axis_labels) == ("c", "y", "x")
    assert widget.channel_axis.choices == (0,) and widget.channel_axis.value == 0
    assert not widget.channel_axis.native.isHidden() and widget.axes.switch.native.isHidden()


def test_without_metadata_the_assumption_is_said_and_switched_in_one_click(slip, qtbot):
    viewer, widget, _ = slip
    stack = viewer.add_image(np.zeros((30, 40, 40), np.uint16), name="stack")
    widget.image.value = stack
    assert widget.status.value.startswith("Axis 0 (30 planes) is treated as Z (depth)")
    assert (
        not widget.axes.switch.native.isHidden()
        and widget.axes.switch.text == "Axis 0 is read as Z: treat it as time"
    )
    assert widget.channel_axis.native.isHidden()  # a plain z-stack: no Channel axis row
    assert lead_letters(widget.request()) is None  # napari's order: a 3D stack is Z
    QTest.mouseClick(widget.axes.switch.native, Qt.MouseButton.LeftButton)
    assert stack.axis_labels[0] == "t" and lead_letters(widget.request()) == "T"
    assert widget.axes.switch.native.isHidden()
    three = viewer.add_image(np.zeros((3, 40, 40), np.uint16), name="three")
    widget.image.value = three
    assert "channels?" in widget.status.value
    assert (
        widget.axes.switch.text == "Axis 0 is read as Z: use it as channels"
        and widget.channel_axis.value is None
    )
    QTest.mouseClick(widget.axes.switch.native, Qt.MouseButton.LeftButton)
    assert widget.channel_axis.value == 0
