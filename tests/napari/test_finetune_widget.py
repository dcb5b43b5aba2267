"""The fine-tuning dock widget with a real viewer and real training threads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from napari_slip._napari.class_names import format_classes
from napari_slip._napari.finetune_widget import FinetuneWidget, parse_classes
from napari_slip._napari.widget import SlipWidget
from napari_slip.core.errors import InputError
from napari_slip.core.models.clip import read_clip_metadata
from napari_slip.core.models.download import checkpoint_dir
from napari_slip.core.training.synthetic import synthetic_image

pytestmark = pytest.mark.gui


@pytest.fixture
def scene(make_napari_viewer, tiny_clip_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(5)
    planes = [synthetic_image(rng, 96) for _ in range(4)]
    image = np.stack([p[0] for p in planes])
    labels = np.zeros(image.shape[:3], np.int32)
    names = {}
    for z, (_, lab, cls) in enumerate(planes):
        offset = labels.max()
        labels[z] = np.where(lab > 0, lab + offset, 0)
        names.update({k + offset: v for k, v in cls.items()})
    viewer.add_image(image, name="shapes", rgb=True)
    viewer.add_labels(labels, name="objects")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._clip_files.append(str(tiny_clip_path))
    widget.base.reset_choices()
    widget.base.value = str(tiny_clip_path)
    widget.device.value = "cpu"
    widget.epochs.value = 2
    widget.lr.value = 1e-3
    spec = "; ".join(
        f"{c}: {', '.join(str(k) for k, v in names.items() if v == c)}"
        for c in sorted(set(names.values()))
    )
    return viewer, widget, spec, names


def test_finetune_from_layers_saves_a_checkpoint_the_selector_offers(scene, qtbot):
    viewer, widget, spec, names = scene
    segment_widget = SlipWidget(viewer)
    viewer.window.add_dock_widget(segment_widget)
    widget.classes.value = spec
    widget.name.value = "my shapes"
    widget.run()
    assert widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    path = checkpoint_dir() / "my_shapes.safetensors"
    assert widget.last_checkpoint == path and path.is_file(), widget.status.value
    meta = read_clip_metadata(path)
    assert meta["class_names"] == sorted(set(names.values()))
    assert meta["training"]["n_train"] + meta["training"]["n_val"] == len(names)
    assert "validation accuracy" in widget.status.value
    # The segmentation widget rescanned by itself and shows what the checkpoint learned.
    combo = segment_widget.clip.native
    labels = {str(combo.itemData(i)): combo.itemText(i) for i in range(combo.count())}
    assert str(path) in labels
    segment_widget.clip.value = str(path)  # what it learned is in the tooltip
    assert all(name in segment_widget.clip.tooltip for name in sorted(set(names.values()))[:5])


def test_classes_can_come_from_the_labels_features(scene, qtbot):
    viewer, widget, _, names = scene
    viewer.layers["objects"].features = pd.DataFrame(
        {"index": list(names), "class": list(names.values())}
    )
    assert widget.class_map() == names
    pairs = widget.pairs()
    assert len(pairs) == len(names) and sorted(set(pairs.classes)) == sorted(set(names.values()))


def test_cancel_writes_no_checkpoint(scene, qtbot):
    _, widget, spec, _ = scene
    widget.classes.value = spec
    widget.epochs.value = 50
    events = []
    show = widget._on_progress
    widget._on_progress = lambda event: (events.append(event), show(event))
    widget.run()
    qtbot.waitUntil(lambda: any(e.stage == "training" for e in events), timeout=120_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    epochs = [e.done for e in events if e.stage == "training" and e.total == 50]
    assert epochs and max(epochs) < 50  # training stopped well before its 50 epochs
    assert not checkpoint_dir().exists() or not list(checkpoint_dir().glob("*.safetensors"))
    assert "Cancelled" in widget.status.value


def test_errors_are_shown_as_one_line(scene):
    _, widget, _, _ = scene
    widget.classes.value = ""
    widget.run()
    assert "Name the class of each label" in widget.status.value
    widget.classes.value = "circle: 1-200"
    widget.run()
    assert "at least two classes" in widget.status.value and not widget.busy


def test_parse_classes():
    assert parse_classes("nucleus: 1-3, 7; mitotic nucleus: 4") == {
        1: "nucleus",
        2: "nucleus",
        3: "nucleus",
        7: "nucleus",
        4: "mitotic nucleus",
    }
    for bad, match in [
        ("nucleus 1-3", "name: labels"),
        ("a: 1; b: 1", "two classes"),
        ("a: x", "not a label"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_classes(bad)
    mapping = {1: "a", 2: "a", 3: "a", 5: "a", 4: "b", 9: "b c"}
    assert format_classes(mapping) == "a: 1-3, 5\nb: 4\nb c: 9"
    assert parse_classes(format_classes(mapping)) == mapping


def test_one_labels_layer_per_class_with_a_preview_of_the_counts(scene, qtbot):
    viewer, widget, _, names = scene
    objects = viewer.layers["objects"].data
    by_class = {}
    for label, cls in names.items():
        by_class.setdefault(cls, []).append(label)
    for cls, labels in by_class.items():
        viewer.add_labels(np.where(np.isin(objects, labels), objects, 0), name=cls)
    viewer.layers.remove("objects")
    widget.labels.reset_choices()
    widget.labels.value = "__per_layer__"
    preview = widget.preview.value
    for cls, labels in by_class.items():
        assert f"{cls}: {len(labels)}" in preview  # one object per label, per class
    pairs = widget.pairs()
    assert sorted(set(pairs.classes)) == sorted(by_class)
    assert len(pairs) == len(names)
    widget.name.value = "per layer"
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    path = checkpoint_dir() / "per_layer.safetensors"
    assert path.is_file() and read_clip_metadata(path)["class_names"] == sorted(by_class)


def test_preview_follows_the_classes_field_and_the_class_feature(scene):
    viewer, widget, spec, names = scene
    widget.classes.value = spec
    counts = pd.Series(list(names.values())).value_counts()
    for cls, n in counts.items():
        assert f"{cls}: {n}" in widget.preview.value
    widget.classes.value = ""
    assert "Name the class of each label" in widget.preview.value
    layer = viewer.layers["objects"]
    layer.features = pd.DataFrame(
        {"index": list(names), "class": ["a" if k % 2 else "b" for k in names]}
    )
    widget.update_preview()
    assert widget.preview.value == (
        f"a: {sum(k % 2 == 1 for k in names)}; b: {sum(k % 2 == 0 for k in names)}"
    )


def test_an_existing_checkpoint_is_replaced_only_when_the_user_agrees(scene, qtbot):
    _, widget, spec, _ = scene
    widget.classes.value = spec
    widget.name.value = "mine"
    target = checkpoint_dir() / "mine.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"an earlier checkpoint")
    asked = []
    widget.confirm_replace = lambda path: asked.append(path) or False
    widget.run()
    assert asked == [target] and not widget.busy
    assert target.read_bytes() == b"an earlier checkpoint"
    assert "exists; choose another name" in widget.status.value
    widget.confirm_replace = lambda path: True
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert target.read_bytes() != b"an earlier checkpoint"
    assert read_clip_metadata(target)["class_names"]
    assert not list(target.parent.glob("*.part"))


def test_crops_are_made_in_the_worker_with_the_crop_settings(scene, qtbot, monkeypatch):
    import threading

    from napari_slip._napari import finetune_widget as module

    _, widget, spec, _ = scene
    widget.classes.value = spec
    widget.name.value = "crops"
    widget.fill.value = "white"
    widget.margin.value = 0.3
    seen = []
    make = module.make_pairs

    def recorded(image_layer, plan, crops):
        seen.append((threading.current_thread() is threading.main_thread(), crops))
        return make(image_layer, plan, crops)

    monkeypatch.setattr(module, "make_pairs", recorded)
    widget.run()
    # run() returns at once; the worker may have made the crops already (never here).
    assert widget.busy or seen
    assert not any(on_gui for on_gui, _ in seen)
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert (checkpoint_dir() / "crops.safetensors").is_file(), widget.status.value
    [(on_gui, crops)] = seen
    assert not on_gui  # made in the worker, not on napari's thread
    assert (crops.fill, crops.margin) == ("white", 0.3)


def _click(viewer, layer, y, x, modifier=Qt.KeyboardModifier.NoModifier):
    """A real click on the canvas where pixel (y, x) of the shown plane of ``layer`` is."""
    canvas = viewer.window._qt_viewer.canvas
    wy, wx = layer.data_to_world((viewer.dims.current_step[0], y, x))[1:]
    px, py = (canvas.view.transform * canvas.view.scene.transform).map([wx, wy])[:2]
    point = QPoint(round(px), round(py))
    QTest.mouseClick(canvas.native, Qt.MouseButton.LeftButton, modifier, point)


def test_clicking_objects_writes_their_classes(make_napari_viewer):
    """Real clicks on napari's canvas (default window size) give objects classes in the
    Classes field, the one truth the run reads; a second click takes it off; a click in
    paint mode paints, as napari's own tool does."""
    viewer = make_napari_viewer(show=True)
    labels = np.zeros((2, 64, 64), np.int32)
    labels[0, 5:20, 5:20], labels[0, 30:50, 30:50], labels[1, 10:30, 10:30] = 1, 2, 3
    viewer.add_image(np.zeros((2, 64, 64, 3), np.uint8), name="image", rgb=True)
    layer = viewer.add_labels(labels, name="objects")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.labels.value = layer
    assert widget.image.native.toolTip() == "image"  # an elided choice, whole on hover
    assert "class" in widget.labels.native.toolTip()  # its own explanation kept
    layer.mode = "pan_zoom"
    clicks = widget.clicks
    _click(viewer, layer, 10, 10)  # not ticked: a click is napari's alone
    assert widget.classes.value == ""
    clicks.active.value = True
    _click(viewer, layer, 10, 10)
    assert "Type the class" in widget.status.value and widget.classes.value == ""
    clicks.name.value = "round"
    _click(viewer, layer, 10, 10)
    _click(viewer, layer, 40, 40)
    _click(viewer, layer, 60, 5)
    assert "background" in widget.status.value
    clicks.name.value = "square"
    _click(viewer, layer, 40, 40)  # another class: label 2 moves to it
    viewer.dims.set_current_step(0, 1)
    _click(viewer, layer, 20, 20)  # the other plane's object
    assert parse_classes(widget.classes.value) == {1: "round", 2: "square", 3: "square"}
    assert widget.classes.value == "round: 1\nsquare: 2-3"
    assert widget.preview.value == "round: 1; square: 2"
    _click(viewer, layer, 20, 20)  # again: off
    assert parse_classes(widget.classes.value) == {1: "round", 2: "square"}
    layer.mode = "paint"
    layer.selected_label = 7
    _click(viewer, layer, 60, 60)
    assert parse_classes(widget.classes.value) == {1: "round", 2: "square"}
    assert layer.data[1, 60, 60] == 7  # napari painted; the click assigned nothing
