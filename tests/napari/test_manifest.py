"""The npe2 manifest, sample data, the menu entry, and napari-safe imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_manifest_is_valid_and_registered():
    from npe2 import PluginManager, PluginManifest

    manifest = PluginManifest.from_distribution("napari-slip")
    manifest.validate_imports()
    pm = PluginManager.instance()
    pm.discover()
    assert "napari-slip" in pm.iter_manifests() or pm.get_manifest("napari-slip")
    widgets = [w.display_name for w in manifest.contributions.widgets]
    assert widgets == ["Segment from text", "Fine-tune CLIP"]
    menu = manifest.contributions.menus["napari/layers/segment"]
    assert [item.command for item in menu] == ["napari-slip.make_widget"]
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "napari-slip"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "ndim", "rgb"),
    [
        ("coffee", 3, True),
        ("astronaut", 3, True),
        ("cell", 2, False),
        ("ihc", 3, True),
        ("nuclei_stack", 3, False),
    ],
)
def test_sample_data_ships_with_the_packages(name, ndim, rgb):
    from napari_slip._napari import sample_data

    layers = getattr(sample_data, name)()
    data, kwargs, kind = layers[0]
    assert kind == "image" and data.ndim == ndim and bool(kwargs.get("rgb")) == rgb
    assert data.size > 10_000 and np.ptp(data) > 0


def test_sample_stack_is_16_bit_with_matching_labels():
    from napari_slip._napari.sample_data import nuclei_stack

    (image, _, _), (labels, _, kind) = nuclei_stack()
    assert image.dtype == np.uint16 and kind == "labels" and labels.shape == image.shape
    assert image[labels > 0].mean() > image[labels == 0].mean() + 1000


def test_widget_opens_from_the_plugin_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    from napari._app_model import get_app_model

    from napari_slip._napari.widget import SlipWidget

    # The entry in Layers > Segment runs our widget command.
    items = get_app_model().menus.get_menu("napari/layers/segment")
    commands = [getattr(item, "command", None) for item in items]
    assert "napari-slip.make_widget" in [c.id for c in commands if c is not None]
    _, widget = viewer.window.add_plugin_dock_widget("napari-slip", "Segment from text")
    assert isinstance(widget, SlipWidget)
    viewer.add_image(np.zeros((16, 16)), name="late")
    assert [layer.name for layer in widget.image.choices] == ["late"]


def test_loading_torchvision_after_napari_draws_does_not_crash():
    """Regression: triton's LLVM clashed with Mesa's llvmpipe once a GL context existed."""
    code = (
        "import napari\n"
        "v = napari.Viewer(show=True)\n"
        "v.add_image(__import__('numpy').zeros((8, 8)))\n"
        "v.screenshot()\n"
        "import napari_slip._napari.widget, torchvision.ops, segment_anything, open_clip\n"
        "print('ok')\n"
        "v.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_dock_titles_fit_from_either_menu(make_napari_viewer):
    """napari titles a dock from the Layers menu with the plugin's display name and from
    the Plugins menu with its package name: either way the title is not cut."""
    from napari._app_model import get_app_model
    from qtpy.QtWidgets import QApplication, QDockWidget, QLabel

    viewer = make_napari_viewer()
    viewer.window.show()
    get_app_model().commands.execute_command("napari-slip.make_widget").result()
    viewer.window.add_plugin_dock_widget("napari-slip", "Fine-tune CLIP")
    QApplication.processEvents()
    titles = {}
    for dock in viewer.window._qt_window.findChildren(QDockWidget):
        for label in dock.titleBarWidget().findChildren(QLabel):
            titles[label.text()] = (
                label.fontMetrics().horizontalAdvance(label.text()),
                label.width(),
            )
    assert set(titles) >= {"Segment from text (napari-slip)", "Fine-tune CLIP (napari-slip)"}
    for title, (needed, width) in titles.items():
        assert needed <= width, (title, needed, width)
