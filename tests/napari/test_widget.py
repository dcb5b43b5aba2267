"""The dock widget in a real napari viewer, with real threads and checkpoint files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip._napari.sample_data import make_nuclei_stack
from napari_slip.core.models.clip import build_clip, save_clip_checkpoint
from napari_slip.core.models.download import checkpoint_dir
from napari_slip.testing import TINY_CLIP, blobs_image

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(slip):
    """The widget with a sparse grid and SAM's filters off (random weights keep masks)."""
    viewer, widget, run = slip
    widget.points_per_side.value = 4
    widget.pred_iou_thresh.value = 0.0
    widget.stability_score_thresh.value = 0.0
    widget.min_area.value = 20
    return viewer, widget, run


def _blobs(viewer):
    image, labels = blobs_image()
    viewer.add_image(image, name="blobs")
    viewer.add_labels(labels, name="truth")
    return labels


def test_run_writes_a_labels_layer_with_ids_features_and_provenance(setup):
    viewer, widget, run = setup
    truth = _blobs(viewer)
    assert "Enter runs" in widget.prompt.tooltip  # the placeholder, whole, on hover
    _labels_proposals_every_object(widget, viewer)
    run()
    layer = viewer.layers[-1]
    assert layer.name == "cell (blobs)" and type(layer).__name__ == "Labels"
    features = layer.features
    assert features["index"].tolist() == [1, 2, 3, 4]
    assert {"id", "score", "prompt", "area"} <= set(features.columns)
    assert features["prompt"].eq("cell").all()
    for row in features.itertuples():
        assert np.array_equal(layer.data == row.id, truth == row.source_id)
        assert row.area == int((layer.data == row.id).sum())
    provenance = layer.metadata["napari_slip"][-1]
    assert provenance["proposals"]["source"] == "labels"
    assert provenance["normalisation"]["method"] == "contrast_limits"
    assert "4 object(s)" in widget.status.value
    assert widget.progress.native.format() == "selection %p%"  # the bar names the stage


def _top_two_cells_with_sam(setup):
    """Run "cell" with SAM's proposals, the top 2 kept, on the blobs; checks the layer's
    ids against its features and returns it."""
    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    widget.top_k.value = 2
    run()
    layer = viewer.layers[-1]
    assert layer.name == "cell (blobs)"
    assert 1 <= len(layer.features) <= 2
    assert sorted(np.unique(layer.data[layer.data > 0])) == layer.features["id"].tolist()
    return layer


def test_run_with_sam_proposals(setup):
    layer = _top_two_cells_with_sam(setup)
    assert layer.metadata["napari_slip"][-1]["sam"]["architecture"]["img_size"] == 256


def test_run_with_a_light_sam_file(setup, tmp_path):
    """A light encoder's SAM (EfficientViT-SAM, in its official layout) from a file
    chosen in the widget; the named light models are offered beside SAM's own."""
    from napari_slip.testing.tiny import write_tiny_efficientvit_sam

    _, widget, _ = setup
    names = list(widget.sam.choices)
    assert {"vit_b", "vit_t", "efficientvit_l0", "efficientvit_xl1"} <= set(names)
    assert "EfficientViT-SAM-L0" in widget.sam.tooltip
    path = write_tiny_efficientvit_sam(tmp_path / "efficientvit_sam_l0.pt")
    widget.add_sam_file(path)
    assert widget.sam.value == str(path)
    layer = _top_two_cells_with_sam(setup)
    architecture = layer.metadata["napari_slip"][-1]["sam"]["architecture"]
    assert architecture["encoder"] == "efficientvit"
    assert architecture["efficientvit"]["input_size"] == 512


def test_cancel_writes_nothing(setup, qtbot):
    viewer, widget, _ = setup
    image, _ = make_nuclei_stack(shape=(6, 96, 96), n=5)
    viewer.add_image(image, name="stack")
    widget.image.value = viewer.layers["stack"]
    widget.scope.value = "all slices"
    widget.prompt.value = "nucleus"
    n_layers = len(viewer.layers)
    from napari_slip._napari.job import engine

    seg = widget.session.segmenter = engine(None, widget.request()).load()
    encoded = []
    seg.sam.model.image_encoder.register_forward_hook(lambda *a: encoded.append(1))
    widget.run()
    assert widget.busy
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert len(viewer.layers) == n_layers
    assert "Cancelled" in widget.status.value and widget.run_button.enabled
    assert len(encoded) < 6  # the worker stopped: not every slice was encoded


def test_existing_labels_are_preserved_and_undo_restores_them(setup):
    viewer, widget, run = setup
    truth = _blobs(viewer)
    existing = np.zeros_like(truth)
    existing[20:30, 20:30] = 5  # overlaps object 1
    existing[0:3, 0:3] = 9
    target = viewer.add_labels(existing.copy(), name="mine")
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = viewer.layers["truth"]
    widget.output.value = target
    widget.prompt.value = "cell"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    n_layers = len(viewer.layers)
    run()
    assert len(viewer.layers) == n_layers  # written into "mine", no new layer
    data = target.data
    kept = existing > 0
    assert np.array_equal(data[kept], existing[kept])  # nothing of the user's was overwritten
    new_ids = np.unique(data[(data > 0) & ~kept])
    assert new_ids.min() > 9 and len(new_ids) == 4
    assert sorted(target.features["index"]) == new_ids.tolist()
    target.undo()
    assert np.array_equal(target.data, existing)

    widget.replace_existing.value = True
    run()
    assert target.data[25, 25] != 5 and target.data[25, 25] > 9  # replaced where asked
    assert target.data[1, 1] == 9  # no object there: untouched


def test_all_slices_of_a_stack_get_unique_ids(setup):
    viewer, widget, run = setup
    image, truth = make_nuclei_stack(shape=(4, 96, 96), n=6)
    viewer.add_image(image, name="stack", scale=(3, 1, 1))
    viewer.add_labels(truth, name="truth", scale=(3, 1, 1))
    widget.image.value = viewer.layers["stack"]
    widget.proposals.value = viewer.layers["truth"]
    widget.scope.value = "all slices, per plane"
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    features = layer.features
    assert features["id"].is_unique and len(features) == sum(
        len(np.unique(truth[z])) - 1 for z in range(4)
    )
    for row in features.itertuples():
        assert np.array_equal(layer.data[row.axis0] == row.id, truth[row.axis0] == row.source_id)

    # Current slice only: just plane 2 is written.
    viewer.dims.set_current_step(0, 2)
    widget.scope.value = "current slice"
    widget.show_relevance.value = True
    run()
    layer = viewer.layers[-1]
    assert layer.data[[0, 1, 3]].max() == 0 and layer.data[2].max() > 0
    assert set(layer.features["axis0"]) == {2}
    # The relevance layer is a volume aligned with the stack: plane 2 has its map.
    relevance = viewer.layers["relevance: nucleus (stack)"]
    assert relevance.data.shape == image.shape
    np.testing.assert_array_equal(relevance.scale, viewer.layers["stack"].scale)
    assert relevance.data[[0, 1, 3]].max() == 0 and np.ptp(relevance.data[2]) > 0
    plane2 = relevance.data[2].copy()
    # Another slice adds its map to the same layer; plane 2's stays.
    viewer.dims.set_current_step(0, 0)
    run()
    assert sum(x.name.startswith("relevance:") for x in viewer.layers) == 1
    assert relevance.data[[1, 3]].max() == 0 and np.ptp(relevance.data[0]) > 0
    np.testing.assert_array_equal(relevance.data[2], plane2)
    lo, hi = relevance.contrast_limits  # CLIP's cosines: stretched over both planes
    assert lo <= min(relevance.data[0].min(), plane2.min()) and hi >= plane2.max()


def _count(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_selection_changes_reselect_instantly_without_image_work(setup, qtbot):
    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    widget.top_k.value = 2
    run()
    layer = viewer.layers[-1]
    seg = widget.session.segmenter
    sam_calls = _count(seg.sam.model.image_encoder)
    decoder_calls = _count(seg.sam.model.mask_decoder.transformer)
    clip_calls = _count(seg.clip.clip.model.visual)
    widget.top_k.value = 1  # applied synchronously, no worker
    assert not widget.busy and len(layer.features) == 1
    widget.mode.value = "threshold"
    widget.threshold.value = 1.0  # nothing can pass
    assert layer.data.max() == 0 and "Nothing found" in widget.status.value
    widget.threshold.value = -1.0  # everything passes
    assert len(layer.features) >= 1
    # A new prompt (Enter) on the same image: a new layer, straight from the cache.
    n_layers = len(viewer.layers)
    widget.prompt.value = "nucleus"
    widget.prompt.native.returnPressed.emit()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)  # a worker, quick: cached
    assert len(viewer.layers) == n_layers + 1
    assert viewer.layers[-1].features["prompt"].eq("nucleus").all()
    assert sam_calls == [] and decoder_calls == [] and clip_calls == []


def test_finetuned_checkpoints_show_up_with_what_they_learned(setup, tmp_path):
    _, widget, _ = setup
    model = build_clip(TINY_CLIP)
    save_clip_checkpoint(
        model,
        TINY_CLIP,
        checkpoint_dir() / "my_cells.safetensors",
        {
            "base_model": "ViT-B-32:laion2b_s34b_b79k",
            "class_names": ["mitotic nucleus", "interphase nucleus"],
        },
    )
    save_clip_checkpoint(
        model,
        TINY_CLIP,
        tmp_path / "elsewhere.safetensors",
        {"base_model": "tiny", "class_names": ["mitochondrion"]},
    )
    widget.rescan()  # the "Rescan checkpoints" button
    combo = widget.clip.native  # the labels the user sees, keyed by the value they select
    labels = {str(combo.itemData(i)): combo.itemText(i) for i in range(combo.count())}
    path = str(checkpoint_dir() / "my_cells.safetensors")
    assert labels[path] == "my_cells"  # short in the list; what it learned in the tooltip
    widget.clip.value = path
    assert "mitotic nucleus" in widget.clip.tooltip
    assert "ViT-B-32:laion2b_s34b_b79k" in widget.clip.tooltip
    widget.add_checkpoint_folder(tmp_path)
    choices = [str(v) for v in widget.clip.choices]
    assert str(tmp_path / "elsewhere.safetensors") in choices


def test_errors_are_one_line_notifications_and_write_nothing(setup, tmp_path):
    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = ""
    n_layers = len(viewer.layers)
    widget.run()
    assert "Type what to segment" in widget.status.value
    bad = tmp_path / "not_clip.safetensors"
    bad.write_bytes(b"garbage")
    widget.add_clip_file(bad)
    widget.prompt.value = "cell"
    run()
    assert widget.status.value.startswith("Error: ") and "\n" not in widget.status.value
    assert "not a readable safetensors" in widget.status.value
    assert len(viewer.layers) == n_layers


def test_console_call_does_what_the_button_does(make_napari_viewer, tiny_sam_path, tiny_clip_path):
    import napari_slip
    from napari_slip.core.errors import InputError

    viewer = make_napari_viewer()
    truth = _blobs(viewer)
    layer = napari_slip.segment_in_viewer(
        viewer,
        "cell",
        image="blobs",
        proposals="truth",
        mode="topk",
        top_k=3,
        sam=str(tiny_sam_path),
        clip=str(tiny_clip_path),
        device="cpu",
    )
    assert layer is viewer.layers[-1] and len(layer.features) == 3
    for row in layer.features.itertuples():
        assert np.array_equal(layer.data == row.id, truth == row.source_id)
    again = napari_slip.segment_in_viewer(
        viewer,
        "cell",
        image=viewer.layers["blobs"],
        proposals="truth",
        output="truth",
        mode="best",
        sam=str(tiny_sam_path),
        clip=str(tiny_clip_path),
        device="cpu",
    )
    assert again is viewer.layers["truth"]
    with pytest.raises(InputError, match="No layer named 'nope'"):
        napari_slip.segment_in_viewer(viewer, "cell", image="nope")


def test_napari_axis_labels_say_which_axis_is_channels(setup):
    """A reader's axis labels: 'c' is the channel axis (chosen, the only choice); 'z' and
    't' are planes, so no Channel axis row; unlabelled axes are each offered."""
    viewer, widget, _ = setup
    cyx = viewer.add_image(
        np.zeros((3, 40, 40), np.uint16), name="cyx", axis_labels=("c", "y", "x")
    )
    widget.image.value = cyx
    assert widget.channel_axis.choices == (0,) and widget.channel_axis.value == 0
    assert not widget.channel_axis.native.isHidden()
    zyx = viewer.add_image(
        np.zeros((5, 40, 40), np.uint16), name="zyx", axis_labels=("z", "y", "x")
    )
    widget.image.value = zyx
    assert widget.channel_axis.choices == (None,) and not widget.channel_axis.visible
    plain = viewer.add_image(np.zeros((5, 40, 40), np.uint16), name="plain")
    widget.image.value = plain
    assert widget.channel_axis.choices == (None, 0) and widget.channel_axis.value is None


def test_multichannel_layer_with_a_channel_axis(setup):
    """A (C, Z, H, W) layer: channels become colour, z stays a stack."""
    viewer, widget, run = setup
    image, truth = make_nuclei_stack(shape=(3, 96, 96), n=5)
    channels = np.stack([image, image // 2, np.zeros_like(image)])  # (C=3, Z=3, H, W)
    layer = viewer.add_image(channels, name="multi", scale=(1, 2, 0.5, 0.5))
    viewer.add_labels(truth, name="truth", scale=(2, 0.5, 0.5))
    widget.image.value = layer
    assert [v for v in widget.channel_axis.choices] == [None, 0, 1]
    widget.channel_axis.value = 0
    widget.channels.value = "0,1"
    widget.proposals.value = viewer.layers["truth"]
    widget.scope.value = "all slices, per plane"
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    assert not widget.scope.native.isHidden() and not widget.channels.native.isHidden()
    run()
    out = viewer.layers[-1]
    assert out.data.shape == truth.shape and tuple(out.scale) == (2, 0.5, 0.5)
    assert out.metadata["napari_slip"][-1]["normalisation"]["channels"] == [0, 1]
    for row in out.features.itertuples():
        assert np.array_equal(out.data[row.axis0] == row.id, truth[row.axis0] == row.source_id)

    widget.channels.value = "0,x"
    widget.run()
    assert "comma-separated numbers" in widget.status.value


def test_exact_mode_runs_sam_unchanged_in_fp32(setup):
    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.exact.value = True
    run()
    provenance = viewer.layers[-1].metadata["napari_slip"][-1]
    assert provenance["precision"] == "fp32"
    assert provenance["proposals"]["skip_covered"] is False
    assert widget.session.segmenter.stats["sam_decoded_points"] == 16  # every point of the grid
    widget.exact.value = False
    widget.skip_covered.value = True
    config = widget.request().config()
    assert config.sam_params.skip_covered and config.models.precision == "auto"


def test_channels_split_into_layers_are_combined_as_colours(setup):
    viewer, widget, run = setup
    nuclei, truth = blobs_image()
    membrane = (nuclei.max() - nuclei).astype(np.uint16)
    viewer.add_image(nuclei, name="nuclei", contrast_limits=(0, 4000))
    viewer.add_image(membrane, name="membrane", contrast_limits=(0, 3000))
    viewer.add_labels(truth, name="truth")
    widget.image.value = viewer.layers["nuclei"]
    assert [None if v is None else v.name for v in widget.green.choices] == [None, "membrane"]
    widget.green.value = viewer.layers["membrane"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "cell"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    out = viewer.layers[-1]
    norm = out.metadata["napari_slip"][-1]["normalisation"]
    assert norm["kind"] == "multichannel" and norm["channels"] == [0, 1]
    assert norm["limits"] == [[0.0, 4000.0], [0.0, 3000.0]]
    assert out.data.shape == truth.shape and len(out.features) == 4

    import napari_slip

    layer = napari_slip.segment_in_viewer(
        viewer,
        "cell",
        image="nuclei",
        colour_layers=["membrane"],
        proposals="truth",
        mode="topk",
        top_k=2,
        sam=widget.sam.value,
        clip=widget.clip.value,
        device="cpu",
    )
    assert layer.metadata["napari_slip"][-1]["normalisation"]["channels"] == [0, 1]
    from napari_slip.core.errors import InputError

    viewer.add_image(np.zeros((10, 10)), name="small")
    with pytest.raises(InputError, match="single-channel layer of the image's shape"):
        napari_slip.segment_in_viewer(
            viewer,
            "cell",
            image="nuclei",
            colour_layers=["small"],
            sam=widget.sam.value,
            clip=widget.clip.value,
        )


def test_channel_stack_reads_one_plane_at_a_time():
    from napari_slip._napari.job import ChannelStack

    reads = []

    class Recording(np.ndarray):
        def __getitem__(self, index):
            reads.append(index)
            return np.asarray(self).__getitem__(index)

    a = np.arange(2 * 3 * 4).reshape(2, 3, 4).view(Recording)
    b = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 10).view(Recording)
    stack = ChannelStack([a, b])
    assert stack.shape == (2, 3, 4, 2) and stack.ndim == 4
    plane = stack[(1,)]
    assert plane.shape == (3, 4, 2) and plane[0, 0].tolist() == [12, 120]
    assert reads == [(1,), (1,)]


def test_no_image_or_model_work_on_the_gui_thread(setup, monkeypatch, qtbot):
    """Normalising and hashing the image and every model call run in the worker;
    re-selection on the GUI thread touches neither."""
    import threading

    import napari_slip.core.pipeline.images as segmenter_module
    from napari_slip._napari.job import engine

    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    seg = widget.session.segmenter = engine(None, widget.request()).load()
    on_gui = []

    def record(*_args):
        on_gui.append(threading.current_thread() is threading.main_thread())

    sam = seg.sam.model
    for module in (sam.image_encoder, sam.mask_decoder.transformer, seg.clip.clip.model.visual):
        module.register_forward_hook(record)
    prepare = segmenter_module.prepare_image

    def recorded_prepare(*args, **kwargs):
        record()
        return prepare(*args, **kwargs)

    monkeypatch.setattr(segmenter_module, "prepare_image", recorded_prepare)
    run()
    n_work = len(on_gui)
    assert n_work >= 3 and not any(on_gui)  # image, encoder, decoder, CLIP: all in the worker
    widget.top_k.value = 1  # re-selection, synchronously on the GUI thread
    assert not widget.busy and len(viewer.layers[-1].features) == 1
    assert len(on_gui) == n_work  # ... with no image or model work


def test_exact_mode_switch_keeps_models_and_caches(setup):
    from napari_slip.core.models.hub import default_hub

    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    run()
    seg = widget.session.segmenter
    loads = dict(default_hub().loads)

    def precision():  # what the run used (its config's; the engine's defaults stay)
        return viewer.layers[-1].metadata["napari_slip"][-1]["precision"]

    precisions = {precision()}
    widget.exact.value = True
    run()
    precisions.add(precision())
    assert precision() == "fp32"
    widget.exact.value = False
    run()
    assert widget.session.segmenter is seg  # one engine: its caches survive the switch
    assert default_hub().loads["sam"] == loads["sam"]  # SAM is never loaded again
    assert default_hub().loads["clip"] - loads["clip"] == len(precisions) - 1
    # One image encoding per precision actually used; switching back costs nothing.
    assert seg.stats["sam_image_encodings"] == len(precisions)


def test_relevance_map_layer(setup):
    viewer, widget, run = setup
    truth = _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    run()
    assert not any(lay.name.startswith("relevance") for lay in viewer.layers)  # off by default
    widget.show_relevance.value = True
    run()
    layer = viewer.layers["relevance: cell (blobs)"]
    assert layer.data.shape == truth.shape and layer.data.dtype == np.float32
    assert layer.colormap.name == "inferno"
    assert layer.contrast_limits == [float(layer.data.min()), float(layer.data.max())]
    names = [lay.name for lay in viewer.layers]
    assert names.index("relevance: cell (blobs)") == names.index("blobs") + 1  # under labels
    assert viewer.layers.selection.active is viewer.layers[-1]  # the labels, not the map
    run()  # the same prompt again: the map is replaced, not added
    assert sum(lay.name.startswith("relevance") for lay in viewer.layers) == 1
    n_layers = len(viewer.layers)
    widget.prompt.value = "debris"
    run()
    other = viewer.layers["relevance: debris (blobs)"]
    assert len(viewer.layers) == n_layers + 2  # a labels layer and a map for the new prompt
    assert not np.allclose(other.data, layer.data)


def test_console_call_with_relevance_and_tiles(
    make_napari_viewer, tiny_sam_path, tiny_clip_path, fast_sam_params
):
    import napari_slip

    viewer = make_napari_viewer()
    _blobs(viewer)
    common = {
        "image": "blobs",
        "sam": str(tiny_sam_path),
        "clip": str(tiny_clip_path),
        "device": "cpu",
        "mode": "threshold",
        "threshold": -1.0,
    }
    layer = napari_slip.segment_in_viewer(
        viewer, "cell", proposals="truth", relevance=True, **common
    )
    relevance = viewer.layers["relevance: cell (blobs)"]
    assert relevance.data.shape == layer.data.shape
    assert viewer.layers.selection.active is layer
    from napari_slip.core.params import TileParams

    # The tiny SAM works at 256 px: the overlap must stay under half of it.
    tiled = napari_slip.segment_in_viewer(
        viewer,
        "cell",
        tile_params=TileParams("on", overlap=32),
        sam_params=fast_sam_params,
        **common,
    )
    provenance = tiled.metadata["napari_slip"][-1]
    assert provenance["proposals"]["source"] == "sam-tiles"


def test_labelled_fields_of_the_dataclasses_are_the_widgets_fields(slip):
    """A field with a label in core.params is a widget field, with its default, range and
    help, and is read back into the run's settings."""
    from dataclasses import fields

    from napari_slip._napari.form import SHOWN
    from napari_slip.core.params import CropParams, SamProposalParams, TileParams

    viewer, widget, _ = slip
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    for cls in SHOWN:
        for f in fields(cls):
            if f.metadata.get("label"):
                field_widget = getattr(widget, f.name)
                assert field_widget.value == cls.default(f.name)
                assert field_widget.tooltip == cls.help(f.name)
                if cls.bounds(f.name):
                    assert (field_widget.min, field_widget.max) == cls.bounds(f.name)
    widget.points_per_side.value = 7
    widget.pred_iou_thresh.value = 0.0
    widget.stability_score_thresh.value = 0.0
    widget.min_area.value = 20
    widget.overlap.value = 40
    widget.fill.value = "white"
    widget.margin.value = 0.25
    assert list(widget.input_side.choices) == [None, 768, 512, 384, 256]
    assert widget.input_side.native.currentText() == "the model's own"
    widget.input_side.value = 512
    config = widget.request().config()  # what a run gets
    assert config.sam_params == SamProposalParams(
        points_per_side=7,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area=20,
        input_side=512,
    )
    assert config.tile_params == TileParams(overlap=40)
    assert config.crop_params == CropParams(fill="white", margin=0.25)
    widget.exact.value = True  # SAM's own generator: every point, nothing shrunk
    assert widget.request().config().sam_params == SamProposalParams.exact(
        points_per_side=7, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_area=20
    )


def test_microscopy_images_get_the_microscopy_pair_suggested_not_forced(setup):
    viewer, widget, _ = setup
    from napari_slip._napari.form import MICROSCOPY_HINT
    from napari_slip.core.models.registry import SAM_MODELS

    assert {"vit_b_lm", "vit_b_em_organelles"} <= set(widget.sam.choices)
    assert "biomedclip" in widget.clip.choices
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="photo", rgb=True)
    widget.image.value = viewer.layers["photo"]
    assert widget.status.value != MICROSCOPY_HINT  # an 8-bit colour photo
    viewer.add_image(np.zeros((32, 32), np.uint16), name="cells")
    widget.image.value = viewer.layers["cells"]
    before = (widget.sam.value, widget.clip.value)
    assert widget.status.value == MICROSCOPY_HINT  # suggested ...
    assert "vit_b_lm" in MICROSCOPY_HINT and "biomedclip" in MICROSCOPY_HINT
    assert (widget.sam.value, widget.clip.value) == before  # ... not chosen
    widget.sam.value, widget.clip.value = "vit_b_lm", "biomedclip"
    assert SAM_MODELS[widget.sam.value].microscopy
    assert widget.status.value == ""  # taken: the line is free again


def test_console_call_uses_the_models_chosen_in_the_open_widget(setup):
    """What the Run button would use: the widget's SAM and CLIP (here local files; the
    defaults would need a download)."""
    import napari_slip

    viewer, widget, _ = setup
    _blobs(viewer)
    layer = napari_slip.segment_in_viewer(
        viewer, "cell", image="blobs", proposals="truth", mode="threshold", threshold=-1.0
    )
    provenance = layer.metadata["napari_slip"][-1]
    assert provenance["clip"]["spec"] == str(widget.clip.value)
    assert provenance["clip"]["spec"] != napari_slip.core.params.DEFAULT_CLIP


def test_green_and_blue_offer_only_layers_that_can_join_the_image(setup):
    viewer, widget, _ = setup
    image = viewer.add_image(np.zeros((40, 40), np.uint16), name="dapi")
    viewer.add_image(np.zeros((40, 40), np.uint16), name="membrane")
    viewer.add_image(np.zeros((20, 20), np.uint16), name="smaller")
    viewer.add_image(
        np.zeros((40, 40), np.float32),
        name="relevance: cell (dapi)",
        metadata={"napari_slip": {"relevance_of": "cell"}},
    )
    widget.image.value = image
    widget.green.reset_choices()
    names = [c for c in widget.green.choices if c is not None]
    assert [x.name for x in names] == ["membrane"]


def test_an_official_open_clip_file_chosen_in_the_widget_is_asked_its_model(
    slip, official_clip, qtbot
):
    """'Choose a file…' with a hub's plain weight file: the widget asks which model it is
    (here answered by the callback the dialog stands for) and runs with it."""
    from napari_slip._napari.choices import clip_file_spec

    viewer, widget, run = slip
    asked = []
    spec = clip_file_spec(
        str(official_clip), lambda names: asked.append(names) or "TinyTest:custom"
    )
    assert spec == f"TinyTest:custom={official_clip}" and "ViT-B-32:laion2b_s34b_b79k" in asked[0]
    assert clip_file_spec(str(official_clip), lambda names: "") == ""  # cancelled: nothing
    widget.add_clip_file(spec)
    assert widget.clip.value == spec
    assert widget.clip.native.currentText() == "open_clip_model.safetensors (TinyTest:custom)"
    _blobs(viewer)
    _labels_proposals_every_object(widget, viewer)
    run()
    assert widget.session.last.layer is not None, widget.status.value
    assert widget.session.last.result.provenance["clip"]["path"] == str(official_clip)


def _labels_proposals_every_object(widget, viewer) -> None:
    """The blobs image, its truth as the proposals, every candidate kept."""
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = viewer.layers["truth"]
    widget.prompt.value = "cell"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0


def test_one_press_of_run_builds_one_config_and_sets_nothing_on_the_engine(setup, monkeypatch):
    """The widget hands the engine the configuration it built once; the engine's own
    settings (its defaults) stay as they were made, whatever the Advanced settings."""
    from napari_slip.core.config import RunConfig

    viewer, widget, run = setup
    _blobs(viewer)
    widget.image.value = viewer.layers["blobs"]
    widget.prompt.value = "cell"
    widget.mode.value = "topk"
    run()
    seg = widget.session.segmenter
    defaults = seg.defaults()
    widget.exact.value = True  # fp32 and SAM's own filters: another model set
    widget.top_k.value = 2
    widget.max_area_share.value = 0.5  # a field made from SamProposalParams' metadata
    built = []
    check = RunConfig.__post_init__
    monkeypatch.setattr(RunConfig, "__post_init__", lambda self: (built.append(1), check(self)))
    run()
    assert len(built) == 1
    layer = viewer.layers[-1]
    record = layer.metadata["napari_slip"][-1]
    assert record["precision"] == "fp32" and record["selection"]["top_k"] == 2
    assert record["proposals"]["max_area_share"] == 0.5
    assert widget.session.last.result.config.models.precision == "fp32"
    assert seg.defaults() == defaults and widget.session.segmenter is seg
