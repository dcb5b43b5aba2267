"""Regenerate the screenshots in docs/images (run by hand, needs a display or Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py
    ... docs/make_screenshots.py --tiles      (tiles and folder mode)
    ... docs/make_screenshots.py --decoder    (a trained decoder guiding SAM)
    ... docs/make_screenshots.py --stack-relevance   (relevance maps of a z-stack)
    ... docs/make_screenshots.py --stack-3d   (a z-stack's linked 3D objects, 3D view)
    ... docs/make_screenshots.py --sections   (every section open, 1090 x 630 and 1600 x 1000)
    ... docs/make_screenshots.py --concept    (a Shift+click, then More like these: its preview)
    ... docs/make_screenshots.py --default-window   (1089 x 651: results in view, a long message)

Weights cannot be downloaded on the machines that build these docs, so the widget runs
with tiny random models (napari_slip.testing): the screenshots show the interface and
the outputs' form, not the quality of real SAM and CLIP selections.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from qtpy.QtWidgets import QApplication

import napari
from napari_slip._napari.class_names import format_classes
from napari_slip._napari.finetune_widget import FinetuneWidget
from napari_slip._napari.sample_data import coffee, nuclei_stack
from napari_slip._napari.widget import SlipWidget
from napari_slip.core.training.synthetic import synthetic_image
from napari_slip.testing import write_tiny_clip, write_tiny_sam

OUT = Path(__file__).parent / "images"
#: About napari's default window on a laptop screen: the dock must leave room.
WINDOW = (1090, 900)


def settle(seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def make_viewer(weights: Path):
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    widget = SlipWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment from text")
    widget.add_sam_file(write_tiny_sam(weights / "tiny_sam.pth"))
    widget.add_clip_file(write_tiny_clip(weights / "tiny_clip.safetensors"))
    widget.device.value = "cpu"
    return viewer, widget


def run_and_wait(widget) -> None:
    """Press Run and wait for the worker to finish."""
    widget.run()
    while widget.busy:
        settle(0.1)


def segmented_nuclei_stack(weights: Path, scale=None):
    """The sample nuclei z-stack, its truth labels as proposals, all slices linked,
    shown at plane 4: (viewer, widget)."""
    viewer, widget = make_viewer(weights)
    extra = {} if scale is None else {"scale": scale}
    for data, kwargs, kind in nuclei_stack():
        getattr(viewer, f"add_{kind}")(data, **extra, **kwargs)
    widget.image.value = viewer.layers["nuclei"]
    widget.proposals.value = viewer.layers["nuclei ground truth"]
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.scope.value = "all slices"
    run_and_wait(widget)
    viewer.dims.set_current_step(0, 4)
    return viewer, widget


def shoot(viewer, name: str) -> None:
    settle()
    iio.imwrite(OUT / name, viewer.screenshot(canvas_only=False, flash=False))
    print("wrote", OUT / name)


def tiles_and_folder(weights: Path) -> None:
    """A 1,536 px mosaic of small nuclei segmented in tiles by the trained fixture SAM,
    and the folder mode after a run over a small plate."""
    import tifffile

    from napari_slip._napari.results_panel import camera_of
    from napari_slip.testing.scenes import nuclei_mosaic, scenes
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_PATH

    viewer, widget = make_viewer(weights)
    rgb, _ = nuclei_mosaic(2, (1536, 1536), spacing=40)
    viewer.add_image(rgb[..., 0], name="nuclei mosaic", colormap="gray")
    widget.add_sam_file(FIXTURE_PATH)
    widget.image.value = viewer.layers["nuclei mosaic"]
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.points_per_side.value = FIXTURE_AMG["points_per_side"]
    widget.pred_iou_thresh.value = FIXTURE_AMG["pred_iou_thresh"]
    widget.stability_score_thresh.value = FIXTURE_AMG["stability_score_thresh"]
    widget.min_area.value = 30
    widget.tiles.value = "on"
    widget.overlap.value = 32
    run_and_wait(widget)
    from napari_slip.core.pipeline.tiles import tile_grid

    # Every candidate is kept (threshold -1: the tiny CLIP's scores mean nothing), SAM's
    # background masks included, so labels are drawn as outlines over the image, with
    # the tiles' borders in yellow.
    viewer.layers[-1].contour = 2
    rectangles = [
        np.array([[y0, x0], [y1, x1]]) for y0, x0, y1, x1 in tile_grid((1536, 1536), 256, 32)
    ]
    viewer.add_shapes(
        rectangles,
        shape_type="rectangle",
        edge_color="yellow",
        face_color="transparent",
        edge_width=2,
        name="tiles",
        opacity=0.6,
    )
    camera = camera_of(viewer)
    camera.center = (0, 680, 680)
    camera.zoom = camera.zoom * 4
    plate = weights / "plate"
    plate.mkdir()
    for i, image in enumerate(scenes(6, seed=3)[0]):
        tifffile.imwrite(plate / f"well{i}.tif", image)
    widget.show_folder.value = True
    widget.folder_in.value = plate
    widget.folder_out.value = weights / "plate_labels"
    widget.run_on_folder()
    while widget.busy:
        settle(0.1)
    shoot(viewer, "widget-tiles-folder.png")
    viewer.close()


def decoder_guided(weights: Path) -> None:
    """The fixture decoder (trained in seconds on the synthetic domain) guiding the
    trained fixture SAM: guided proposals, the relevance layer on its 0-1 scale."""
    from napari_slip.testing.decoder import write_decoder_fixture
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_PATH

    fixture = write_decoder_fixture(weights / "decoder", n_images=24, epochs=20)
    rgb, _labels, _names = synthetic_image(np.random.default_rng(7), size=256, n_objects=(9, 12))
    viewer, widget = make_viewer(weights)
    viewer.add_image(rgb, name="shapes")
    widget.add_sam_file(FIXTURE_PATH)
    widget.add_clip_file(fixture.clip)
    widget.image.value = viewer.layers["shapes"]
    widget.proposals.value = "guided"
    widget.add_decoder_file(fixture.decoder)
    widget.show_relevance.value = True
    widget.points_per_side.value = FIXTURE_AMG["points_per_side"]
    widget.pred_iou_thresh.value = FIXTURE_AMG["pred_iou_thresh"]
    widget.stability_score_thresh.value = FIXTURE_AMG["stability_score_thresh"]
    widget.prompt.value = "circle"
    # The tiny CLIP is random, so its crop scores mean nothing: the decoder's second
    # opinion (relevance weight 1) decides, with a threshold above CLIP's noise.
    widget.relevance_weight.value = 1.0
    widget.mode.value = "threshold"
    widget.threshold.value = 0.6
    run_and_wait(widget)
    viewer.layers[-1].contour = 2
    viewer.reset_view()
    shoot(viewer, "widget-decoder-guided.png")
    viewer.close()


def stack_relevance(weights: Path) -> None:
    """A z-stack of synthetic shapes: the fixture decoder's relevance map of each slice
    segmented, added to one volume layer aligned with the stack."""
    from napari_slip.testing.decoder import write_decoder_fixture

    fixture = write_decoder_fixture(weights / "decoder", n_images=24, epochs=20)
    rng = np.random.default_rng(11)
    stack = np.stack([synthetic_image(rng, size=256, n_objects=(9, 12))[0] for _ in range(4)])
    viewer, widget = make_viewer(weights)
    viewer.add_image(stack, name="shapes stack", rgb=True)
    widget.add_clip_file(fixture.clip)
    widget.image.value = viewer.layers["shapes stack"]
    widget.proposals.value = "relevance"  # the map's regions: no SAM
    widget.add_decoder_file(fixture.decoder)
    widget.show_relevance.value = True
    widget.prompt.value = "ring"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.scope.value = "current slice"
    for z in (1, 2):  # two slices, one at a time: their maps add up in one layer
        viewer.dims.set_current_step(0, z)
        run_and_wait(widget)
    viewer.layers[-1].contour = 2
    viewer.reset_view()
    shoot(viewer, "widget-relevance-stack.png")
    viewer.close()


def stack_3d(weights: Path) -> None:
    """A z-stack segmented with all slices linked: one id per 3D nucleus, in 3D."""
    viewer, _ = segmented_nuclei_stack(weights, scale=(3.0, 1.0, 1.0))
    shoot(viewer, "widget-stack-linked.png")
    viewer.dims.ndisplay = 3
    viewer.layers["nuclei"].visible = False
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (10, -35, 60)
    camera.zoom = 2.2
    shoot(viewer, "widget-stack-3d.png")
    viewer.close()


def concept_clicks(weights: Path) -> None:
    """Clicks that teach, with real mouse events: the trained fixture SAM on a synthetic
    scene, a text run that keeps two objects, a Shift+click on a missed object, then
    Find more like these: its preview (outlines) before Apply."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    from napari_slip.testing.scenes import scenes
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_PATH

    viewer, widget = make_viewer(weights)
    rgbs, truth = scenes(1, seed=5)
    image = viewer.add_image(rgbs[0], name="cells", rgb=True)
    widget.add_sam_file(FIXTURE_PATH)
    for name, value in {**FIXTURE_AMG, "points_per_side": 8}.items():
        if hasattr(widget, name):
            getattr(widget, name).value = value
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    widget.top_k.value = 2
    run_and_wait(widget)
    viewer.reset_view()
    settle(1.0)
    canvas = viewer.window._qt_viewer.canvas

    def click(y, x, button):
        wy, wx = image.data_to_world((y, x))
        px, py = (canvas.view.transform * canvas.view.scene.transform).map([wx, wy])[:2]
        modifier = Qt.KeyboardModifier.ShiftModifier
        QTest.mouseClick(canvas.native, button, modifier, QPoint(round(px), round(py)))
        while widget.edits.editing:  # the edit is computed in a worker
            settle(0.05)
        settle(0.3)

    layer = widget.session.last.layer
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    ys, xs = np.nonzero(truth[0] == missed[0])  # one missed object added by a click
    click(int(np.median(ys)), int(np.median(xs)), Qt.MouseButton.LeftButton)
    print("examples:", widget.results.examples.value)
    widget.suggest.more.native.click()  # Find more like these: a preview
    while widget.edits.editing:
        settle(0.05)
    settle(0.5)
    print("status:", widget.status.value)
    shoot(viewer, "widget-concept.png")
    viewer.close()


def every_section(weights: Path) -> None:
    """Both docks with every section and the results open, at napari's default window
    on a laptop (1090 x 630) and at 1600 x 1000: the docks scroll, the window keeps its
    size."""
    for size, name in (((1090, 630), "sections-default.png"), ((1600, 1000), "sections-1600.png")):
        viewer, widget = make_viewer(weights)
        viewer.window._qt_window.resize(*size)
        finetune = FinetuneWidget(viewer)
        viewer.window.add_dock_widget(finetune, name="Fine-tune CLIP")
        for data, kwargs, kind in coffee():
            getattr(viewer, f"add_{kind}")(data, **kwargs)
        widget.image.value = viewer.layers["coffee"]
        widget.prompt.value = "coffee cup"
        widget.mode.value = "threshold"
        widget.threshold.value = -1.0
        widget.points_per_side.value = 4
        widget.pred_iou_thresh.value = 0.0
        widget.stability_score_thresh.value = 0.0
        run_and_wait(widget)
        for section in (widget.show_advanced, widget.show_folder, finetune.show_advanced):
            section.value = True
        settle(0.5)
        print(name, "window", viewer.window._qt_window.size())
        shoot(viewer, name)
        viewer.close()


def finetune_shapes(weights: Path) -> None:
    """Fine-tuning from a stack of labelled synthetic shapes: the classes one per line,
    as clicking objects writes them, with the click row ticked."""
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    rng = np.random.default_rng(5)
    planes = [synthetic_image(rng, 128) for _ in range(6)]
    labels = np.zeros((6, 128, 128), np.int32)
    names: dict[int, str] = {}
    for z, (_, lab, cls) in enumerate(planes):
        offset = int(labels.max())
        labels[z] = np.where(lab > 0, lab + offset, 0)
        names.update({k + offset: v for k, v in cls.items()})
    viewer.add_image(np.stack([p[0] for p in planes]), name="shapes", rgb=True)
    viewer.add_labels(labels, name="objects")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune CLIP")
    base = write_tiny_clip(weights / "tiny_base.safetensors")
    widget._clip_files.append(str(base))
    widget.base.reset_choices()
    widget.base.value = str(base)
    widget.device.value = "cpu"
    widget.classes.value = format_classes(names)
    widget.clicks.name.value = sorted(set(names.values()))[0]
    widget.clicks.active.value = True
    widget.name.value = "shapes-demo"
    widget.train.value = "all"
    widget.epochs.value = 15
    widget.lr.value = 1e-3
    run_and_wait(widget)
    shoot(viewer, "finetune-widget.png")
    if widget.last_checkpoint is not None:
        widget.last_checkpoint.unlink()  # a demo, not a model to keep
    viewer.close()


#: The flags that make one screenshot (or one set) instead of the default ones.
def default_window(weights: Path) -> None:
    """napari's default window (1,089 x 651) after a run on a 16-bit nuclei image with
    its label image as proposals, and after a long error: the dock scrolled to the
    results, the whole message one click away."""
    from napari_slip.core.errors import WeightsUnavailableError
    from napari_slip.testing.scenes import nuclei_scene

    viewer, widget = make_viewer(weights)
    viewer.window._qt_window.resize(1089, 651)
    image, truth = nuclei_scene(np.random.default_rng(4), n=(9, 10))
    viewer.add_image(image, name="nuclei", scale=(0.5, 0.5))
    viewer.add_labels(truth, name="nuclei labels", scale=(0.5, 0.5))
    widget.image.value = viewer.layers["nuclei"]
    widget.proposals.value = viewer.layers["nuclei labels"]
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run_and_wait(widget)
    shoot(viewer, "widget-default-window.png")
    error = WeightsUnavailableError.offline(
        "SAM ViT-B",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        Path.home() / ".cache" / "napari-slip" / "sam_vit_b_01ec64.pth",
        "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>",
    )
    widget.show_error(error)
    settle(0.3)
    widget.status_line.toggle.native.click()
    shoot(viewer, "widget-long-message.png")
    viewer.close()


ONE_SCREENSHOT = {
    "--default-window": default_window,
    "--tiles": tiles_and_folder,
    "--decoder": decoder_guided,
    "--sections": every_section,
    "--concept": concept_clicks,
    "--finetune": finetune_shapes,
    "--stack-3d": stack_3d,
    "--stack-relevance": stack_relevance,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    one = ONE_SCREENSHOT.get(sys.argv[1]) if len(sys.argv) == 2 else None
    if one is not None:  # one flag: that screenshot only
        with tempfile.TemporaryDirectory() as tmp:
            one(Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp)
        # 1. A 16-bit z-stack, proposals from a label image, all slices.
        viewer, widget = segmented_nuclei_stack(weights)
        shoot(viewer, "widget-stack.png")
        # The results panel: a threshold between the candidates' scores.
        scores = np.sort(widget.results.histogram.scores)
        widget.threshold.value = float(scores[len(scores) // 2])
        widget.results.table.sortItems(1)
        widget.results.table.cellClicked.emit(0, 0)
        shoot(viewer, "widget-results.png")
        viewer.close()

        # 2. A photo, distractors mode, before running.
        viewer, widget = make_viewer(weights)
        for data, kwargs, kind in coffee():
            getattr(viewer, f"add_{kind}")(data, **kwargs)
        widget.image.value = viewer.layers["coffee"]
        widget.prompt.value = "coffee cup"
        widget.mode.value = "distractors"
        widget.distractors.value = "saucer, spoon, table"
        widget.show_advanced.value = True
        shoot(viewer, "widget-photo.png")
        viewer.close()

        # 3. Fine-tuning from a stack of labelled synthetic shapes.
        finetune_shapes(weights)

        # 4. Tiles on a large mosaic, and a folder run.
        tiles_and_folder(weights)


if __name__ == "__main__":
    main()
