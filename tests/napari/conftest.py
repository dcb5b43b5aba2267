"""The segmentation widget in a real viewer, with the tiny checkpoint files."""

from __future__ import annotations

import pytest

from napari_slip._napari.widget import SlipWidget


@pytest.fixture
def slip(make_napari_viewer, tiny_sam_path, tiny_clip_path, qtbot):
    """(viewer, widget, run): ``run()`` presses Run and waits for the worker."""
    viewer = make_napari_viewer()
    widget = SlipWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_sam_file(tiny_sam_path)
    widget.add_clip_file(tiny_clip_path)
    widget.device.value = "cpu"

    def run():
        widget.run()
        qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)

    return viewer, widget, run
