"""Clicks that teach, with real mouse and key events on napari's canvas at its default
window size: Shift+click adds the object under the cursor (SAM decodes that point),
Shift+right-click removes a label, Shift+U undoes; the prompts layer shows each click;
the concept saved from the dock finds objects in another image."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

import napari_slip
from napari_slip._napari.widget import SlipWidget
from napari_slip.core.concepts import Concept
from napari_slip.core.concepts.files import concept_dir
from napari_slip.core.params import SamProposalParams
from napari_slip.testing.scenes import scenes
from napari_slip.testing.trained_sam import FIXTURE_AMG

SHIFT = Qt.KeyboardModifier.ShiftModifier
CTRL = Qt.KeyboardModifier.ControlModifier
ALT = Qt.KeyboardModifier.AltModifier
#: The dock of each test's viewer (clicks wait for its edits).
_WIDGETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@pytest.fixture
def teach(make_napari_viewer, trained_sam_path, tiny_clip_path, qtbot):
    viewer = make_napari_viewer(show=True)
    rgbs, truth = scenes(2, seed=5)
    viewer.add_image(rgbs[0], name="cells", rgb=True)
    widget = SlipWidget(viewer)
    _WIDGETS[viewer] = widget
    viewer.window.add_dock_widget(widget)
    widget.add_sam_file(trained_sam_path)
    widget.add_clip_file(tiny_clip_path)
    widget.device.value = "cpu"
    for name, value in {**FIXTURE_AMG, "points_per_side": 8}.items():
        if hasattr(widget, name):  # box NMS has no field in the dock: its default is SAM's
            getattr(widget, name).value = value
    widget.prompt.value = "object"
    widget.mode.value = "topk"
    widget.top_k.value = 2

    def run():
        widget.run()
        qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)

    return viewer, widget, run, rgbs, truth


def _click(viewer, layer, y, x, button=Qt.MouseButton.LeftButton, wait=True, keys=None):
    """A real Shift+click on the canvas where data pixel (y, x) of ``layer`` is shown;
    then (``wait``) until its edit, computed in a worker, is applied."""
    from qtpy.QtWidgets import QApplication

    canvas = viewer.window._qt_viewer.canvas
    lead = tuple(viewer.dims.point[: layer.ndim - 2])  # the plane shown
    wy, wx = layer.data_to_world((*lead, y, x))[-2:]
    px, py = (canvas.view.transform * canvas.view.scene.transform).map([wx, wy])[:2]
    QTest.mouseClick(canvas.native, button, keys or SHIFT, QPoint(round(px), round(py)))
    if wait:
        widget = _WIDGETS[viewer]
        deadline = 60_000
        while widget.edits.editing and deadline > 0:
            QTest.qWait(20)
            deadline -= 20
        QApplication.processEvents()
        assert not widget.edits.editing


def _centre(mask):
    ys, xs = np.nonzero(mask)
    order = np.argsort((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return int(ys[order[0]]), int(xs[order[0]])


def test_click_adds_removes_and_undo_restores(teach, qtbot):
    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    assert layer is not None and len(np.unique(layer.data)) == 3  # two objects kept
    image = viewer.layers["cells"]
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    y, x = _centre(truth[0] == missed[0])
    before = layer.data.copy()
    run_columns = list(layer.features.columns)
    _click(viewer, image, y, x)
    label = int(layer.data[y, x])
    assert label == 3  # the next free id
    added = layer.data == label
    iou = (added & (truth[0] == missed[0])).sum() / (added | (truth[0] == missed[0])).sum()
    assert iou > 0.7  # SAM's mask of that object, not a blob around the click
    np.testing.assert_array_equal(layer.data[~added], before[~added])  # nothing else
    prompts = viewer.layers["prompts: object"]
    assert len(prompts.data) == 1 and viewer.layers.selection.active is layer
    assert "object 3" in widget.edits.examples.value  # two kept + one clicked
    assert layer.features["index"].tolist() == [1, 2, 3]
    row = layer.features.set_index("index").loc[3]
    assert row["area"] == added.sum() and np.isfinite(row["score"])  # its CLIP score
    assert list(layer.features.columns) == run_columns  # a run's columns, intensities too
    intensity = next(c for c in run_columns if c.startswith("mean_intensity"))
    assert row[intensity] == pytest.approx(image.data[added][:, 0].mean())
    table = widget.results.table  # every object in the table, none left hidden
    shown = [r for r in range(table.rowCount()) if not table.isRowHidden(r)]
    assert len(shown) == len(np.unique(layer.data)) - 1
    after_add = layer.data.copy()
    # Shift+right-click on object 1: exactly its pixels go; remembered as "not this".
    y1, x1 = _centre(before == 1)
    _click(viewer, image, y1, x1, Qt.MouseButton.RightButton)
    np.testing.assert_array_equal(layer.data != after_add, after_add == 1)
    assert "not these: 1" in widget.edits.examples.value and len(prompts.data) == 2
    # Shift+U: the removal is undone, bit for bit, and its example leaves the concept;
    # Ctrl+Z on the layer undoes the add, and its example leaves too.
    concept = widget.session.teaching.editor.concept
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_U, SHIFT)
    np.testing.assert_array_equal(layer.data, after_add)
    assert len(prompts.data) == 1
    assert concept.counts() == {"object": 3, None: 0}
    assert "not these: 0" in widget.edits.examples.value
    viewer.layers.selection.active = layer
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_Z, CTRL)
    np.testing.assert_array_equal(layer.data, before)
    assert concept.counts() == {"object": 2, None: 0}  # napari's undo took it back
    assert "object 2" in widget.edits.examples.value
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_Z, CTRL | SHIFT)
    np.testing.assert_array_equal(layer.data, after_add)  # and Ctrl+Shift+Z redoes it
    assert concept.counts() == {"object": 3, None: 0}  # with its example


def test_a_click_during_a_run_is_ignored(teach, qtbot):
    """An edit while a run is going changes nothing and is not queued: the run's
    output is what the layer holds after it."""
    viewer, widget, run, _, truth = teach
    run()
    widget.top_k.value = 3
    widget.run()  # a second run; a click meanwhile edits nothing
    assert widget.busy
    y, x = _centre(truth[0] == np.unique(truth[0])[-1])
    _click(viewer, viewer.layers["cells"], y, x, wait=False)
    assert not widget.edits.editing  # not queued
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    layer = widget.session.last.layer
    assert len(np.unique(layer.data)) == 4 and not widget.edits.editing
    assert widget.session.teaching.editor is None  # no click reached the engine


def test_a_background_click_adds_nothing_and_the_gui_stays_free(teach, qtbot):
    """SAM's mask of the background covers most of the image: nothing is added, in one
    line. While a click's edit is computed the GUI thread keeps serving its timers."""
    from qtpy.QtCore import QTimer
    from scipy import ndimage

    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    before = layer.data.copy()
    image = viewer.layers["cells"]
    far = ndimage.distance_transform_edt((truth[0] == 0) & (before == 0))
    far[:16], far[-16:], far[:, :16], far[:, -16:] = 0, 0, 0, 0  # not at the border
    y, x = np.unravel_index(np.argmax(far), far.shape)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(widget.edits.editing))
    timer.start(5)
    _click(viewer, image, y, x, wait=False)
    assert widget.edits.editing  # queued or computing: in a worker, not here
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    timer.stop()
    assert any(ticks)  # the timer fired while the edit was being computed
    np.testing.assert_array_equal(layer.data, before)
    assert "nothing was added" in widget.status.value


def _job(seconds: float):
    """A job of the edits' queue that takes ``seconds`` in the worker."""
    import time

    def work():
        time.sleep(seconds)
        yield
        return seconds

    return work


def test_a_busy_bar_only_for_edits_that_take_long(teach, qtbot):
    """A job answered within BUSY_AFTER_MS shows no busy bar and leaves the status as
    it was (a flashing bar and text only repainted the dock while SAM decoded); one
    that takes longer says what it does with a moving bar, reset when it ends."""
    from napari_slip._napari.edit_controls import BUSY_AFTER_MS

    _, widget, _, _, _ = teach
    bar = widget.progress.native
    widget.status.value = "Added object 3."
    for seconds, busy in ((0.01, False), (4 * BUSY_AFTER_MS / 1000, True)):
        done = []
        widget.edits.submit(_job(seconds), done.append, "Adding the object…")
        seen = []
        while not done:
            seen.append((bar.maximum(), widget.status.value))
            qtbot.wait(10)
        qtbot.waitUntil(lambda: not widget.edits.editing, timeout=10_000)
        busy_seen = [status for maximum, status in seen if maximum == 0]
        assert bool(busy_seen) is busy, seen
        if busy:
            assert set(busy_seen) == {"Adding the object…"}
            assert seen[0] == (1, "Added object 3.")  # not at once
        else:
            assert {status for _, status in seen} == {"Added object 3."}
        assert bar.maximum() == 1 and done == [seconds]


def test_a_saved_concept_finds_objects_in_another_image(teach, qtbot):
    viewer, widget, run, rgbs, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    clicks = 0
    for v in np.unique(truth[0])[1:]:
        y, x = _centre(truth[0] == v)
        if not layer.data[y, x]:  # a click teaches: later objects may need none
            _click(viewer, image, y, x)
            clicks += 1
    centres = [_centre(truth[0] == v) for v in np.unique(truth[0])[1:]]
    assert all(layer.data[c] > 0 for c in centres) and clicks >= 1
    path = widget.teaching.save_concept(concept_dir() / "cells.concept")
    saved = Concept.load(path)
    assert saved.classes == ["object"] and saved.counts()["object"] == 2 + clicks
    # Listed beside the prompt, and used by Run on another image.
    widget.teaching.concept.reset_choices()
    assert str(path) in [c for c in widget.teaching.concept.choices if c]
    widget.teaching.concept.value = str(path)
    # A concept's classes decide: no mode, no phrases; the mode comes back without it.
    assert not widget.mode.visible and widget.mode.value == "distractors"
    viewer.add_image(rgbs[1], name="more cells", rgb=True)
    widget.image.value = viewer.layers["more cells"]
    widget.prompt.value = "text typed before the concept"
    assert widget.threshold.unit == "class probability"  # the slider's unit follows
    run()
    out = widget.session.last.layer
    assert out is not None and out.data.shape == rgbs[1].shape[:2]
    # Named after the concept, never after text left in the prompt field.
    assert out.name.startswith(saved.name) and "typed" not in out.name
    assert widget.results.histogram.unit == "class probability"
    probabilities = widget.results.rows["score"].to_numpy(float)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert "class" in out.features and set(out.features["class"]) == {"object"}
    found = {int(v) for v in np.unique(truth[1][out.data > 0])} - {0}
    assert len(found) >= 0.6 * (len(np.unique(truth[1])) - 1)
    # From the console: the concept where a prompt goes (the widget's models; SAM's
    # options are the call's own, as the widget's fixture settings here).
    params = SamProposalParams(**{**FIXTURE_AMG, "points_per_side": 8})
    layer = napari_slip.segment_in_viewer(viewer, saved, image="more cells", sam_params=params)
    assert layer is not None and set(layer.features["class"]) == {"object"}
    np.testing.assert_array_equal(layer.data > 0, out.data > 0)
    widget.teaching.concept.value = None
    assert widget.mode.visible and widget.mode.value == "topk"


def test_clicks_never_rewrite_a_users_layer_and_off_image_is_one_line(teach, qtbot):
    viewer, widget, run, _, truth = teach
    mine = viewer.add_labels(np.zeros(truth[0].shape, dtype=np.int32), name="mine")
    widget.output.value = mine
    run()
    before = mine.data.copy()
    y, x = _centre(truth[0] == np.unique(truth[0])[1])
    _click(viewer, viewer.layers["cells"], y, x)
    np.testing.assert_array_equal(mine.data, before)
    assert "New Labels layer" in widget.status.value
    widget.output.value = widget.output.choices[0]
    run()
    status = widget.status.value
    _click(viewer, viewer.layers["cells"], -40, -40)
    assert "outside the image" in widget.status.value and status != widget.status.value


def test_find_more_previews_then_applies_in_one_undo_step(teach, qtbot):
    """Find more like these shows an outline of what the taught concept would change;
    the labels change only on Apply, and one Ctrl+Z takes the whole suggestion back;
    Discard leaves everything as it was."""
    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    # One missed object clicked: the others missed are left for the suggestion.
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    assert len(missed) >= 2
    _click(viewer, image, *_centre(truth[0] == missed[0]))
    taught = layer.data.copy()
    controls = widget.suggest
    assert controls.more.visible and not controls.apply_more.visible
    controls.more.native.click()
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    suggestion, _ = widget.session.suggestions.suggestion
    assert suggestion.added  # objects like the examples: the missed ones
    added = np.zeros_like(taught)
    added[suggestion.edit.index] = suggestion.edit.after
    found = {int(v) for v in np.unique(truth[0][added > 0])} - {0}
    assert set(missed[1:]) <= found
    preview = widget.session.suggestions.preview
    assert preview in viewer.layers and preview.name.startswith("suggestion: Adds")
    np.testing.assert_array_equal(layer.data, taught)  # a preview only
    assert controls.apply_more.visible and not controls.more.visible
    assert suggestion.message in widget.status.value
    expected = taught.copy()
    expected[suggestion.edit.index] = suggestion.edit.after
    controls.apply_more.native.click()
    assert preview not in viewer.layers and controls.more.visible
    np.testing.assert_array_equal(layer.data, expected)
    viewer.layers.selection.active = layer
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_Z, CTRL)
    np.testing.assert_array_equal(layer.data, taught)  # one undo step
    controls.more.native.click()
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    controls.discard_more.native.click()
    assert widget.session.suggestions.preview is None
    np.testing.assert_array_equal(layer.data, taught)


def test_a_click_on_a_linked_stack_adds_a_3d_object(teach, qtbot):
    """On a z-stack linked into 3D objects, a Shift+click on the plane shown adds the
    whole nucleus: carried to the planes it continues into, nothing else changed."""
    from napari_slip.testing.scenes import nuclei_stack

    viewer, widget, run, _, _ = teach
    image, truth = nuclei_stack(3, depth=8)
    depth = {k: (truth == k).any(axis=(1, 2)).sum() for k in range(1, truth.max() + 1)}
    target = max(depth, key=lambda k: (depth[k], (truth == k).sum()))
    viewer.add_image(image, name="stack")
    viewer.add_labels(np.where(truth == target, 0, truth), name="sections")
    widget.image.value = viewer.layers["stack"]
    widget.proposals.value = viewer.layers["sections"]
    widget.scope.value = "all slices"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = widget.session.last.layer
    assert layer.data.ndim == 3 and widget.session.last.result.linked is not None
    before = layer.data.copy()
    inside = truth == target
    z = int(np.argmax(inside.sum(axis=(1, 2))))
    viewer.dims.set_point(0, z)
    _click(viewer, viewer.layers["stack"], *_centre(inside[z]))
    new = layer.data != before
    label = int(layer.data[new][0])
    assert np.array_equal(new, layer.data == label)  # one new object, nothing else
    planes = set(np.nonzero(new.any(axis=(1, 2)))[0].tolist())
    assert z in planes and len(planes) >= 2
    iou = (new & inside).sum() / (new | inside).sum()
    assert iou >= 0.7
    assert label in layer.features["index"].tolist()


def test_alt_clicks_refine_the_picked_object_and_keep_its_id(teach, qtbot):
    """After an add, the new object is the picked label; Alt+click (a point inside)
    and Alt+right-click (outside) decode it again with its earlier point: it keeps
    its id and no other object changes."""
    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    inside = truth[0] == missed[0]
    _click(viewer, image, *_centre(inside))
    label = int(layer.selected_label)
    assert label == 3 and (layer.data == 3).any()
    others = layer.data.copy()
    ys, xs = np.nonzero(inside)
    outside = (int(ys.min()) - 4, int(np.median(xs)))
    _click(viewer, image, *outside, Qt.MouseButton.RightButton, keys=ALT)
    assert widget.status.value == "Refined object 3."
    assert widget.session.teaching.editor.prompts[3]["points"][-1][2] is False
    for k in (1, 2):
        np.testing.assert_array_equal(layer.data == k, others == k)
    iou = ((layer.data == 3) & inside).sum() / ((layer.data == 3) | inside).sum()
    assert iou > 0.7


def test_the_console_call_is_the_widgets_session(teach, qtbot):
    """With the dock open, segment_in_viewer runs on the widget's own session: its
    Advanced settings, its last result (the panel shows it), and edit_in_viewer edits
    that result as a click does (one object, one undo step)."""
    viewer, widget, run, _, truth = teach
    run()
    by_widget = widget.session.last.layer.data.copy()
    layer = napari_slip.segment_in_viewer(viewer, "object", image="cells", mode="topk", top_k=2)
    assert widget.session.last.layer is layer
    np.testing.assert_array_equal(layer.data, by_widget)  # the widget's settings: same
    assert widget.results.table.rowCount() == 2
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    y, x = _centre(truth[0] == missed[0])
    before = layer.data.copy()
    result = napari_slip.edit_in_viewer(viewer, "add", layer.data_to_world((y, x)))
    added = layer.data != before
    assert added.any() and np.array_equal(added, layer.data == 3)
    assert result.table["id"].tolist() == [1, 2, 3]
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_ctrl_clicks_merge_into_the_picked_object_and_split_one(teach, qtbot):
    """Ctrl+Shift+click merges the object under the cursor into the picked one; two
    Ctrl+clicks inside one object split it there; the others never change."""
    viewer, widget, run, _, _ = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    before = layer.data.copy()
    layer.selected_label = 1
    _click(viewer, image, *_centre(before == 2), keys=CTRL | SHIFT)
    merged = layer.data.copy()
    assert not (merged == 2).any()
    np.testing.assert_array_equal(merged == 1, (before == 1) | (before == 2))
    assert widget.status.value == "Merged object 2 into 1."
    # Split it again between its two parts' centres: the part of the second point
    # gets the next id, the rest of the image is untouched.
    _click(viewer, image, *_centre(before == 1), keys=CTRL)
    assert "second point" in widget.status.value and np.array_equal(layer.data, merged)
    _click(viewer, image, *_centre(before == 2), keys=CTRL)
    new = layer.data == 3
    assert new.any() and np.array_equal((layer.data == 1) | new, merged == 1)
    assert ((new & (before == 2)).sum() / new.sum()) > 0.9
    np.testing.assert_array_equal(layer.data[merged != 1], merged[merged != 1])


def test_clicks_teach_the_named_class_and_ask_me_answers_teach(teach, qtbot):
    """The dock's class field: Shift+clicks teach that class (a concept of two classes
    built in the dock). Ask me centres the least sure candidate; N remembers it as not
    this (no pixel changes), Y adds it; Escape stops and gives the keys back."""
    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    widget.edits.teach_class.value = "round"
    _click(viewer, image, *_centre(truth[0] == missed[0]))
    concept = widget.session.teaching.editor.concept
    assert concept.classes == ["object", "round"]
    assert concept.counts()["round"] == 1 and concept.counts()["object"] == 2
    widget.suggest.ask_button.native.click()
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    assert widget.suggest.questions and "Is this round?" in widget.status.value
    first = widget.suggest.questions[0]
    assert widget.session.suggestions.preview is not None
    before = layer.data.copy()
    canvas = viewer.window._qt_viewer.canvas.native
    QTest.keyClick(canvas, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    np.testing.assert_array_equal(layer.data, before)
    assert concept.counts()[None] == 1
    if widget.suggest.questions:
        second = widget.suggest.questions[0]
        QTest.keyClick(canvas, Qt.Key.Key_Y)
        qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
        added = layer.data != before
        np.testing.assert_array_equal(added, second.mask & (before == 0))
        assert concept.counts()["round"] == 2
    assert first is not None
    QTest.keyClick(canvas, Qt.Key.Key_Escape)
    assert not widget.suggest.questions and widget.session.suggestions.preview is None
    assert "Y" not in [str(k) for k in viewer.keymap]  # the key given back


def _drag(viewer, layer, start, end, keys=SHIFT):
    """A real Shift+drag on the canvas from data pixel ``start`` to ``end`` of
    ``layer``: press, moves, release (Qt events), then until its edit is applied."""
    from qtpy.QtCore import QEvent, QPointF
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    canvas = viewer.window._qt_viewer.canvas
    transform = canvas.view.transform * canvas.view.scene.transform
    points = []
    for t in np.linspace(0, 1, 6):
        y, x = (s + t * (e - s) for s, e in zip(start, end, strict=True))
        wy, wx = layer.data_to_world((y, x))
        points.append(QPointF(*transform.map([wx, wy])[:2]))
    left = Qt.MouseButton.LeftButton
    QTest.mousePress(canvas.native, left, keys, points[0].toPoint())
    for p in points[1:]:
        move = QMouseEvent(
            QEvent.Type.MouseMove,
            p,
            canvas.native.mapToGlobal(p),
            Qt.MouseButton.NoButton,
            left,
            keys,
        )
        QApplication.sendEvent(canvas.native, move)
    QTest.mouseRelease(canvas.native, left, keys, points[-1].toPoint())
    widget = _WIDGETS[viewer]
    while widget.edits.editing:
        QTest.qWait(20)


def test_a_shift_drag_adds_the_object_in_the_box(teach, qtbot):
    """A Shift+drag is a box prompt, not a click: SAM's object in the box (the fixture
    SAM never learnt boxes, so what may change is judged: background pixels inside the
    box's reach only, one new id) or a refusal in one line; the camera does not pan."""
    from napari_slip._napari.layers import camera_of

    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    ys, xs = np.nonzero(truth[0] == missed[0])
    before = layer.data.copy()
    centre = tuple(camera_of(viewer).center)
    _drag(viewer, image, (ys.min() - 3, xs.min() - 3), (ys.max() + 3, xs.max() + 3))
    assert tuple(camera_of(viewer).center) == centre
    box = widget.session.teaching.editor.prompts
    changed = layer.data != before
    if changed.any():  # an object: one new id on background pixels, from this box
        label = int(layer.data[changed][0])
        assert np.array_equal(changed, layer.data == label) and not before[changed].any()
        drawn = np.array(box[label]["box"])
        expected = np.array([ys.min() - 3, xs.min() - 3, ys.max() + 3, xs.max() + 3])
        assert np.abs(drawn - expected - 0.5).max() <= 1.5  # the box drawn, pixel centres
    else:  # the box's answer refused in one line (not a click's), nothing changed
        assert "SAM's mask in this box covers" in widget.status.value


def test_a_click_after_the_image_changed_is_refused_in_one_line(teach, qtbot):
    viewer, widget, run, rgbs, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    before = layer.data.copy()
    image.data = rgbs[1]  # another image in the same layer
    missed = [v for v in np.unique(truth[0])[1:] if not before[truth[0] == v].any()]
    _click(viewer, image, *_centre(truth[0] == missed[0]))
    assert "changed since it was segmented" in widget.status.value
    np.testing.assert_array_equal(layer.data, before)
    for _ in range(40):  # a burst of clicks: queued at most 32, none lost or crashing
        _click(viewer, image, 5, 5, wait=False)
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    np.testing.assert_array_equal(layer.data, before)


def test_naparis_eraser_and_the_table_follows(teach, qtbot):
    """A click with napari's own eraser on an object: the table's area (and every
    measurement) follows the pixels, measured in the worker."""
    viewer, widget, run, _, _ = teach
    run()
    layer = widget.session.last.layer
    before = layer.data.copy()
    area = layer.features.set_index("index").loc[1, "area"]
    viewer.layers.selection.active = layer
    layer.mode = "erase"
    layer.brush_size = 8
    _click(viewer, layer, *_centre(before == 1), keys=Qt.KeyboardModifier.NoModifier)
    qtbot.waitUntil(lambda: not widget.edits.editing, timeout=60_000)
    erased = int((before == 1).sum() - (layer.data == 1).sum())
    assert erased > 0
    row = layer.features.set_index("index").loc[1]
    assert row["area"] == area - erased == (layer.data == 1).sum()
    assert widget.session.last.result.table.set_index("id").loc[1, "area"] == row["area"]
    # A re-selection now would replace the erasing: refused in one line, nothing lost.
    erased_labels = layer.data.copy()
    widget.top_k.value = 3
    assert "edited by hand" in widget.status.value
    np.testing.assert_array_equal(layer.data, erased_labels)


def test_an_alt_drag_refines_the_picked_object_with_a_box(teach, qtbot):
    """Alt+drag around the picked object: SAM's point+box prompt redraws it in place
    (its id kept, no other object changes), or its answer is refused in one line (the
    fixture SAM never learnt boxes; what may change is judged)."""
    viewer, widget, run, _, truth = teach
    run()
    layer = widget.session.last.layer
    image = viewer.layers["cells"]
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    _click(viewer, image, *_centre(truth[0] == missed[0]))
    assert int(layer.selected_label) == 3
    before = layer.data.copy()
    ys, xs = np.nonzero(truth[0] == missed[0])
    _drag(viewer, image, (ys.min() - 2, xs.min() - 2), (ys.max() + 2, xs.max() + 2), keys=ALT)
    for k in (1, 2):
        np.testing.assert_array_equal(layer.data == k, before == k)
    if widget.status.value == "Refined object 3.":
        box = widget.session.teaching.editor.prompts[3]["box"]
        expected = np.array([ys.min() - 2, xs.min() - 2, ys.max() + 2, xs.max() + 2])
        assert np.abs(np.array(box) - expected - 0.5).max() <= 1.5
        assert (layer.data == 3).any()
    else:
        assert "SAM's mask with this box covers" in widget.status.value
        np.testing.assert_array_equal(layer.data, before)


def test_the_prompts_of_one_image_are_hidden_over_the_next(teach, qtbot):
    viewer, widget, run, rgbs, truth = teach
    run()
    image = viewer.layers["cells"]
    layer = widget.session.last.layer
    missed = [v for v in np.unique(truth[0])[1:] if not layer.data[truth[0] == v].any()]
    _click(viewer, image, *_centre(truth[0] == missed[0]))
    prompts = viewer.layers["prompts: object"]
    assert prompts.visible and len(prompts.data) == 1
    run()  # the same image again: its clicks stay shown
    assert prompts.visible
    viewer.add_image(rgbs[1], name="other", rgb=True)
    widget.image.value = viewer.layers["other"]
    run()
    assert not prompts.visible and prompts in viewer.layers  # hidden, not deleted
    layer = widget.session.last.layer
    other = viewer.layers["other"]
    missed = [v for v in np.unique(truth[1])[1:] if not layer.data[truth[1] == v].any()]
    _click(viewer, other, *_centre(truth[1] == missed[0]))
    new = [p for p in viewer.layers if p.name.startswith("prompts") and p is not prompts]
    assert len(new) == 1 and new[0].visible and len(new[0].data) == 1
