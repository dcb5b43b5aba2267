"""Tiles in the widget: a multiscale, lazily read layer segmented at full resolution."""

from __future__ import annotations

import dask.array as da
import pytest

from napari_slip.testing.arrays import CountingArray
from napari_slip.testing.metrics import label_metrics
from napari_slip.testing.scenes import nuclei_mosaic
from napari_slip.testing.trained_sam import FIXTURE_AMG

pytestmark = pytest.mark.gui


def test_multiscale_lazy_layer_is_segmented_tile_by_tile_at_level_0(
    make_napari_viewer, trained_sam_path, tiny_clip_path, qtbot, monkeypatch
):
    from napari_slip._napari.widget import SlipWidget
    from napari_slip.core.pipeline import crops, images

    # Limits for a lazy image's intensity sample, hash strips and crop windows, as for
    # an image far bigger than this one: every read of the engine is then a tile at most.
    monkeypatch.setattr(images, "SAMPLE_PIXELS", 256 * 256)
    monkeypatch.setattr(images, "KEY_STRIP_PIXELS", 256 * 256)
    monkeypatch.setattr(crops, "MAX_WINDOW", 256)

    rgb, truth = nuclei_mosaic(3, (512, 768), spacing=44)
    gray = rgb[..., 0]
    level0 = CountingArray(gray, worker_reads_only=True)  # read on demand, like zarr
    level1 = da.from_array(gray[::2, ::2], chunks=(128, 128))
    viewer = make_napari_viewer()
    viewer.add_image([level0, level1], multiscale=True, name="mosaic", contrast_limits=(0, 255))
    widget = SlipWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_sam_file(trained_sam_path)
    widget.add_clip_file(tiny_clip_path)
    widget.device.value = "cpu"
    widget.exact.value = True
    widget.points_per_side.value = FIXTURE_AMG["points_per_side"]
    widget.pred_iou_thresh.value = FIXTURE_AMG["pred_iou_thresh"]
    widget.stability_score_thresh.value = FIXTURE_AMG["stability_score_thresh"]
    widget.min_area.value = 30
    widget.tiles.value = "on"
    widget.overlap.value = 32
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0  # every candidate: judge SAM's tiles, not random CLIP
    widget.image.value = viewer.layers["mosaic"]
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=180_000)

    layer = viewer.layers[-1]
    assert type(layer).__name__ == "Labels"
    assert layer.data.shape == truth.shape  # level 0, not the shrunk level 1
    provenance = layer.metadata["napari_slip"][-1]
    assert provenance["proposals"]["source"] == "sam-tiles"
    assert provenance["proposals"]["overlap"] == 32
    found = label_metrics(truth, layer.data)
    assert found["recall"] >= 0.85, found
    # The engine read level 0 a tile at a time (or a strided sample), never whole.
    assert level0.reads and max(level0.reads) <= 256 * 256

    # Fast (guided) mode on the same layer: points per tile from the map of the whole
    # image (CLIP window by window), still never a read of the whole level 0.
    level0.reads.clear()
    widget.proposals.value = "guided"
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=180_000)
    guided = viewer.layers[-1]
    assert guided is not layer and guided.data.shape == truth.shape
    assert guided.metadata["napari_slip"][-1]["proposals"]["source"] == "guided-tiles"
    assert label_metrics(truth, guided.data)["recall"] > 0.2
    assert level0.reads and max(level0.reads) <= 256 * 256
