"""What the user sees: the results panel, the compact dock, messages, stale state,
"nothing found" without empty layers. Real viewers, real threads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_slip._napari.form import MICROSCOPY_HINT
from napari_slip._napari.results_panel import camera_of
from napari_slip._napari.sample_data import make_nuclei_stack
from napari_slip.core.errors import InputError
from napari_slip.core.models import registry
from napari_slip.testing import blobs_image

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(slip):
    """The widget on the blobs image, its labels as the proposals."""
    viewer, widget, run = slip
    image, labels = blobs_image()
    viewer.add_image(image, name="blobs")
    viewer.add_labels(labels, name="truth")
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "cell"
    return viewer, widget, run, labels


def _table_ids(widget) -> list[int]:
    t = widget.results.table
    return [int(t.item(r, 0).text()) for r in range(t.rowCount())]


def test_results_table_lists_objects_and_a_click_selects_and_centres(setup):
    viewer, widget, run, _ = setup
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    assert widget.results.showing
    assert sorted(_table_ids(widget)) == [1, 2, 3, 4]
    scores = [float(widget.results.table.item(r, 1).text()) for r in range(4)]
    expected = layer.features.set_index("id")["score"]
    assert scores == pytest.approx([expected[i] for i in _table_ids(widget)], abs=5e-4)
    widget.results.table.sortItems(1)  # sortable by score (ascending)
    ordered = [float(widget.results.table.item(r, 1).text()) for r in range(4)]
    assert ordered == sorted(ordered)
    row = 2
    label_id = int(widget.results.table.item(row, 0).text())
    widget.results.table.cellClicked.emit(row, 0)
    assert layer.selected_label == label_id
    ys, xs = np.nonzero(layer.data == label_id)
    centre = ((ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2)
    assert tuple(camera_of(viewer).center[-2:]) == pytest.approx(centre, abs=0.6)
    # The proposals layer is hidden after the run: dropped objects must not look selected.
    assert not viewer.layers["truth"].visible


def test_histogram_shows_every_candidate_and_follows_the_slider(setup):
    viewer, widget, run, _ = setup
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    hist = widget.results.histogram
    assert len(hist.scores) == 4 and hist.kept.all() and hist.threshold == -1.0
    middle = float(np.sort(hist.scores)[1] + np.sort(hist.scores)[2]) / 2
    widget.threshold.value = middle  # re-selection and the line move together
    assert hist.threshold == pytest.approx(middle, abs=0.005)
    assert hist.kept.sum() == 2 == len(viewer.layers[-1].features)
    assert len(_table_ids(widget)) == 2
    assert "2 of 4 candidates kept" in widget.results.summary.value


def test_threshold_is_disabled_where_it_does_nothing(setup):
    _, widget, _, _ = setup
    widget.mode.value = "best"
    assert not widget.threshold.enabled
    widget.use_floor.value = True
    assert widget.threshold.enabled
    widget.use_floor.value = False
    widget.mode.value = "topk"
    assert not widget.threshold.enabled
    widget.mode.value = "threshold"
    assert widget.threshold.enabled


def test_nothing_found_adds_no_layer_but_shows_the_candidates(setup):
    viewer, widget, run, _ = setup
    widget.mode.value = "threshold"
    widget.threshold.value = 0.999
    n_layers = len(viewer.layers)
    run()
    assert len(viewer.layers) == n_layers  # no empty Labels layer
    assert "Nothing found" in widget.status.value and "No layer was added" in widget.status.value
    hist = widget.results.histogram
    assert len(hist.scores) == 4 and not hist.kept.any()
    assert "0 of 4 candidates kept; best" in widget.results.summary.value
    widget.threshold.value = -1.0  # now everything passes: the layer appears
    assert len(viewer.layers) == n_layers + 1
    assert len(viewer.layers[-1].features) == 4


def test_console_call_adds_no_layer_when_nothing_is_found(setup, tiny_sam_path, tiny_clip_path):
    import napari_slip

    viewer, _, _, _ = setup
    n_layers = len(viewer.layers)
    layer = napari_slip.segment_in_viewer(
        viewer,
        "cell",
        image="blobs",
        proposals="truth",
        mode="threshold",
        threshold=0.999,
        sam=str(tiny_sam_path),
        clip=str(tiny_clip_path),
        device="cpu",
    )
    assert layer is None and len(viewer.layers) == n_layers


def test_dock_is_narrow_and_fits_a_laptop_screen(setup):
    viewer, widget, run, _ = setup
    from napari_slip._napari.finetune_widget import FinetuneWidget

    viewer.add_image(np.zeros((3, 32, 32)), name="an image layer with a very long name indeed")
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    assert widget.results.showing
    # Both docks, results shown, fit a 1000 px screen with room for the title bars.
    total = widget.native.minimumSizeHint().height() + finetune.native.minimumSizeHint().height()
    assert total <= 950
    for show in (False, True):  # advanced sections scroll instead of growing the dock
        widget.show_advanced.value = finetune.show_advanced.value = show
        assert widget.advanced_area.isVisibleTo(widget.native) == show
        assert widget.native.minimumSizeHint().width() <= 350
        assert finetune.native.minimumSizeHint().width() <= 350
        assert widget.native.minimumSizeHint().height() <= 800


def test_stale_progress_and_status_are_reset(setup, tiny_clip_path, monkeypatch):
    viewer, widget, run, _ = setup
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    assert widget.status.value and widget.results.showing
    viewer.layers.remove(layer)  # the status described that layer
    assert widget.status.value in ("", MICROSCOPY_HINT) and not widget.results.showing
    run()
    assert widget.status.value
    viewer.add_image(np.ones((40, 40)), name="other")
    widget.image.value = viewer.layers["other"]  # another image: the result is not its
    # The line is free again: a one-channel image gets the microscopy suggestion there.
    assert widget.status.value == MICROSCOPY_HINT and not widget.results.showing
    # An error leaves no stale "loading models 0%".
    entry = registry.SamWeights(
        "vit_b", "http://127.0.0.1:9/sam_vit_b_01ec64.pth", "0" * 64, 1, ""
    )
    monkeypatch.setitem(registry.SAM_MODELS, "vit_b", entry)
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = None
    widget.sam.value = "vit_b"
    run()
    assert widget.status.value.startswith("Error: Could not download SAM vit_b (offline?)")
    assert "Choose a file" in widget.status.value and "sam=" not in widget.status.value
    assert widget.progress.native.format() == "" and widget.progress.value == 0


def test_results_of_a_stack_move_to_the_objects_plane(setup):
    viewer, widget, run, _ = setup
    image, labels = make_nuclei_stack(shape=(4, 96, 96), n=5)
    viewer.add_image(image, name="stack")
    viewer.add_labels(labels, name="nuclei")
    widget.image.value = viewer.layers["stack"]
    widget.proposals.value = viewer.layers["nuclei"]
    widget.scope.value = "all slices, per plane"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    table = widget.results.table
    where = _column(table, "where")
    planes = {table.item(r, where).text() for r in range(table.rowCount())}
    assert len(planes) == 4 and all(p.startswith("z ") for p in planes)
    row = next(r for r in range(table.rowCount()) if table.item(r, where).text() == "z 2")
    label_id = int(table.item(row, 0).text())
    table.cellClicked.emit(row, 0)
    assert viewer.dims.current_step[0] == 2 and layer.selected_label == label_id
    assert (layer.data[2] == label_id).any()


def test_all_slices_link_a_zstack_into_3d_objects_and_export_them(setup, tmp_path):
    viewer, widget, run, _ = setup
    image, truth = make_nuclei_stack(shape=(6, 96, 96), n=5, seed=2)
    viewer.add_image(image, name="stack", scale=(2.0, 0.5, 0.5))
    viewer.add_labels(truth, name="nuclei", scale=(2.0, 0.5, 0.5))
    widget.image.value = viewer.layers["stack"]
    widget.proposals.value = viewer.layers["nuclei"]
    widget.scope.value = "all slices"  # linked: the default
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    assert layer.data.shape == truth.shape  # one Labels layer of the stack's shape
    features = layer.features
    present = [i for i in np.unique(truth)[1:]]
    assert len(features) == len(present) and features["index"].is_unique
    for row in features.itertuples():  # each 3D object is one truth nucleus, all planes
        source = np.unique(truth[layer.data == row.index])
        assert len(source) == 1
        assert np.array_equal(layer.data == row.index, truth == source[0])
        assert row.n_planes == len(np.flatnonzero((truth == source[0]).any(axis=(1, 2))))
        assert row.volume_um3 == row.area * 0.5  # the layer's scale: 2 x 0.5 x 0.5
    table = widget.results.table
    assert table.rowCount() == len(present)
    # The histogram shows what selection chose among: the 3D objects.
    assert f"{len(present)} of {len(present)} 3D objects kept" in widget.results.summary.value
    assert len(widget.results.histogram.scores) == len(present)
    # Clicking a 3D object goes to its middle plane.
    tall = features.sort_values("n_planes").iloc[-1]
    row = next(r for r in range(table.rowCount()) if int(table.item(r, 0).text()) == tall["index"])
    where = _column(table, "where")
    assert table.item(row, where).text() == f"z {tall.bbox_z0}-{tall.bbox_z1 - 1}"
    table.cellClicked.emit(row, 0)
    assert viewer.dims.current_step[0] == round(tall.centroid_z)
    assert layer.selected_label == tall["index"]
    # Export writes every row with its measurements.
    out = tmp_path / "objects.csv"
    assert widget.results.files.export_button.isEnabled()
    widget.results.export_csv(out)
    written = pd.read_csv(out)
    assert sorted(written["id"]) == sorted(features["index"])
    assert {"volume_um3", "centroid_z", "n_planes", "mean_intensity"} <= set(written.columns)
    expected = [
        image[truth == s].mean()
        for s in written["id"].map(lambda i: np.unique(truth[layer.data == i])[0])
    ]
    assert written["mean_intensity"].to_numpy() == pytest.approx(expected)


def test_time_axis_label_links_frames_into_tracks(setup):
    viewer, widget, run, _ = setup
    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((5, 96, 96), np.int32)
    for t in range(5):  # three cells, drifting a little from frame to frame
        for i, (cy, cx) in enumerate(((20, 20), (50, 60), (75, 25)), start=1):
            truth[t][(yy - cy - 2 * t) ** 2 + (xx - cx) ** 2 < 64] = i
    image = np.where(truth > 0, 2000, 300).astype(np.uint16)
    viewer.add_image(image, name="movie")
    viewer.add_labels(truth, name="nuclei")
    viewer.dims.axis_labels = ("t", "y", "x")
    widget.image.value = viewer.layers["movie"]
    widget.proposals.value = viewer.layers["nuclei"]
    widget.scope.value = "all slices"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    result = widget.session.last.result
    assert result.axes == "TYX" and "track_id" in result.table
    assert result.n_objects == 3
    for row in result.table.itertuples():  # a track keeps its id in every frame
        assert np.array_equal(
            layer.data[row.t] == row.track_id,
            truth[row.t] == truth[row.t][layer.data[row.t] == row.track_id][0],
        )
    assert sorted(result.table.groupby("track_id")["t"].count()) == [5, 5, 5]
    features = layer.features  # one row per track
    assert features["index"].is_unique and {"t0", "t1", "n_frames"} <= set(features.columns)
    where = _column(widget.results.table, "where")
    texts = {
        widget.results.table.item(r, where).text() for r in range(widget.results.table.rowCount())
    }
    assert all(t.startswith("t ") for t in texts)


def test_console_call_links_a_stack_and_can_keep_planes(
    make_napari_viewer, tiny_sam_path, tiny_clip_path
):
    import napari_slip

    viewer = make_napari_viewer()
    image, truth = make_nuclei_stack(shape=(5, 96, 96), n=4, seed=2)
    viewer.add_image(image, name="stack")
    viewer.add_labels(truth, name="nuclei")
    common = dict(
        image="stack",
        proposals="nuclei",
        mode="threshold",
        threshold=-1.0,
        sam=str(tiny_sam_path),
        clip=str(tiny_clip_path),
        all_slices=True,
    )
    linked = napari_slip.segment_in_viewer(viewer, "nucleus", **common)
    assert linked.data.shape == truth.shape
    assert len(linked.features) == len(np.unique(truth)) - 1
    assert "n_planes" in linked.features and linked.features["n_planes"].max() > 1
    planes = napari_slip.segment_in_viewer(viewer, "nucleus", link=False, **common)
    per_plane = sum(len(np.unique(truth[z])) - 1 for z in range(len(truth)))
    assert len(planes.features) == per_plane and (planes.features["n_planes"] == 1).all()


def _rows_overlap(panel) -> list[str]:
    """Rows of a panel (in layout order) whose top is above the previous row's bottom."""
    layout = panel.body()
    bad, bottom = [], None
    for i in range(layout.count()):
        item = layout.itemAt(i).widget()
        if item is None or item.isHidden():
            continue
        geometry = item.geometry()
        if bottom is not None and geometry.top() < bottom:
            bad.append(type(item).__name__)
        bottom = geometry.bottom()
    return bad


def test_opening_every_section_never_grows_the_window(
    make_napari_viewer, tiny_sam_path, tiny_clip_path, qtbot
):
    from napari_slip._napari.finetune_widget import FinetuneWidget
    from napari_slip._napari.widget import SlipWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1090, 630)  # napari's default window on a laptop screen
    widget = SlipWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment from text")
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune, name="Fine-tune CLIP")
    widget.add_sam_file(tiny_sam_path)
    widget.add_clip_file(tiny_clip_path)
    widget.device.value = "cpu"
    image, labels = blobs_image()
    viewer.add_image(image, name="blobs")
    viewer.add_labels(labels, name="truth")
    qtbot.wait(300)
    height = window.height()
    assert height <= 700
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "cell"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    for section in (widget.show_advanced, widget.show_folder, finetune.show_advanced):
        section.value = True
    widget.show_error(InputError("a long error " * 30))
    qtbot.wait(300)
    assert widget.results.showing
    assert window.height() <= height  # the docks scroll inside themselves
    assert _rows_overlap(widget) == [] and _rows_overlap(finetune) == []
    window.resize(1024, 600)  # the smallest screen we support
    qtbot.wait(300)
    assert window.height() <= 640 and _rows_overlap(widget) == []


def test_table_shows_six_rows_and_follows_the_layer_through_undo(setup, tmp_path, qtbot):
    viewer, widget, run, labels = setup
    target = viewer.add_labels(np.zeros_like(labels), name="mine")
    widget.output.value = target
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    table = widget.results.table
    n = len(np.unique(labels)) - 1
    assert table.rowCount() == n
    row = table.verticalHeader().defaultSectionSize()
    assert table.minimumHeight() >= 6 * row  # with the summary and histogram in view
    visible = [r for r in range(table.rowCount()) if not table.isRowHidden(r)]
    assert len(visible) == n
    target.undo()  # the "add to" run is undone: its objects leave the table
    assert not target.data.any()
    qtbot.waitUntil(lambda: all(table.isRowHidden(r) for r in range(table.rowCount())))
    widget.results.export_csv(tmp_path / "after_undo.csv")
    assert len(pd.read_csv(tmp_path / "after_undo.csv")) == 0
    target.redo()  # (the table follows once the GUI thread is free)
    qtbot.waitUntil(lambda: not any(table.isRowHidden(r) for r in range(table.rowCount())))


def test_threshold_spans_the_scores_and_is_set_from_the_histogram(setup, qtbot):
    from qtpy.QtCore import QPoint, Qt

    _, widget, run, _ = setup
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    histogram = widget.results.histogram
    n_all = widget.results.table.rowCount()
    scores = np.sort(histogram.scores)
    slider = widget.threshold
    slider.value = float(scores[0])  # every candidate still passes
    lo, hi = histogram.range()
    # The slider's travel is the histogram's range (the scores shown) and a page of ten
    # steps on each side (PageUp, PageDown), not -1..1.
    page = 10 * slider.step
    assert lo - page - 0.01 <= slider.min <= scores[0] and slider.max >= scores[-1]
    assert slider.max - slider.min <= hi - lo + 2 * page + 0.02
    middle = float((scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2)
    x = int(histogram.x_of(middle))
    qtbot.mouseClick(histogram, Qt.MouseButton.LeftButton, pos=QPoint(x, 10))
    assert abs(slider.value - histogram.value_at(x)) <= slider.step
    kept = widget.results.table.rowCount()
    assert 0 < kept < n_all  # re-selected at once from the click
    assert kept == int((scores >= slider.value).sum())
    # In best mode a click makes the threshold a floor (what the line then means).
    widget.mode.value = "best"
    qtbot.mouseClick(histogram, Qt.MouseButton.LeftButton, pos=QPoint(2, 10))
    assert widget.use_floor.value and widget.threshold.enabled


def test_a_typed_threshold_outside_the_scores_is_taken(setup):
    _, widget, run, _ = setup
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    widget.threshold.value = -0.5  # within [-1, 1] but maybe off the fitted travel
    widget.threshold.value = 0.999  # nothing passes: typed, not refused
    assert widget.threshold.value == pytest.approx(0.999, abs=0.005)
    box = widget.threshold._box
    box.setValue(0.5)  # typed into the slider's box
    box.editingFinished.emit()
    assert widget.threshold.value == pytest.approx(0.5, abs=0.005)
    assert widget.results.histogram.threshold == pytest.approx(0.5, abs=0.005)


def test_no_candidates_offers_to_lower_the_filters_and_run_again(slip, qtbot):
    viewer, widget, run = slip
    image, _ = blobs_image()
    viewer.add_image(image, name="blobs")
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.points_per_side.value = 4
    widget.pred_iou_thresh.value = 0.95  # random SAM weights: no mask passes
    widget.stability_score_thresh.value = 0.95
    run()
    assert "below Min IoU 0.95" in widget.status.value
    assert widget.results.suggest.isVisibleTo(widget.native)
    widget.results.suggest.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert (widget.pred_iou_thresh.value, widget.stability_score_thresh.value) == (0.5, 0.7)
    assert widget.show_advanced.value  # the changed fields are shown
    assert widget.session.last.request.config().sam_params.pred_iou_thresh == 0.5  # it ran again


def test_a_new_run_takes_down_the_last_runs_error_toasts(setup, qtbot, tmp_path):
    """napari keeps every toast up while newer ones arrive: an old error would sit over
    the next, successful run as if it were about it."""
    import contextlib

    from napari._qt.dialogs.qt_notification import NapariQtNotification

    from napari_slip._napari import toasts

    def shown():
        texts = []
        for toast in list(NapariQtNotification._instances):
            # Earlier tests' viewers are gone, their toasts' Qt objects too.
            with contextlib.suppress(RuntimeError):
                texts += [toast.message.text()] if toast.isVisible() else []
        return texts

    viewer, widget, run, _ = setup
    viewer.window.show()  # napari shows toasts on a visible window only
    good_clip = widget.clip.value
    bad = tmp_path / "not_clip.safetensors"
    bad.write_bytes(b"garbage")
    widget.add_clip_file(bad)
    run()
    error = widget.status.value.removeprefix("Error: ")
    assert "not a readable safetensors" in error
    qtbot.waitUntil(lambda: shown() == [toasts.headlined(error)])
    assert [t.message.text() for t in toasts.on_screen()] == [toasts.headlined(error)]
    widget.clip.value = good_clip
    run()
    assert "object(s) matching 'cell'" in widget.status.value
    assert toasts.headlined(error) not in shown()  # the stale error is gone
    widget.threshold.value = widget.threshold.max  # nothing passes: an info toast, a sentence
    widget.mode.value = "threshold"
    run()
    assert widget.status.value.endswith(". No layer was added.")
    assert toasts.sentence("3 objects") == "3 objects." and toasts.sentence("Done.") == "Done."


def test_the_widget_measures_auto_in_the_background_after_a_run(setup, monkeypatch, qtbot):
    """The first run with ``auto`` and no measurement uses the guess and is not slowed;
    once it has finished, a real background thread measures (the probes kept small
    here) and caches the choice, which the next model set uses."""
    from napari_slip.core.models import autotune

    _, widget, run, _ = setup
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "ENCODER_GRID", 28)
    monkeypatch.setattr(autotune, "POINT_BATCHES", (4, 8))
    monkeypatch.setattr(autotune, "cpu_precisions", lambda: ["fp32"])
    monkeypatch.setattr(autotune, "_THREAD", None)
    run()
    assert "object(s) matching 'cell'" in widget.status.value
    thread = autotune._THREAD
    assert thread is not None and thread.name == "napari-slip autotune"
    # It may give way to work the widget does after a run and start again: wait for
    # the cached result, not for one thread.
    qtbot.waitUntil(lambda: autotune.load_measurement() is not None, timeout=60_000)
    assert not autotune.pending()
    assert autotune.resolve_precision("auto", __import__("torch").device("cpu")) == "fp32"


def _column(table, header: str) -> int:
    """The index of the table's column with ``header``."""
    headers = [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())]
    return headers.index(header)
