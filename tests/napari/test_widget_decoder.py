"""The trained decoder in napari: picked in the segment widget, guided and relevance
proposals, the relevance layer on its 0-1 scale, training from Labels layers in the
Fine-tune widget, and the console call."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_slip.core.models.decoder import load_decoder
from napari_slip.core.models.download import checkpoint_dir
from napari_slip.core.training.decoder import class_masks
from napari_slip.testing.trained_sam import FIXTURE_AMG, match_objects

pytestmark = pytest.mark.gui


def _widget(make_napari_viewer, trained_sam_path, decoder_fixture):
    from napari_slip._napari.widget import SlipWidget

    viewer = make_napari_viewer()
    widget = SlipWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.add_sam_file(trained_sam_path)
    widget.add_clip_file(decoder_fixture.clip)
    widget.device.value = "cpu"
    widget.points_per_side.value = FIXTURE_AMG["points_per_side"]
    widget.pred_iou_thresh.value = FIXTURE_AMG["pred_iou_thresh"]
    widget.stability_score_thresh.value = FIXTURE_AMG["stability_score_thresh"]
    return viewer, widget


def test_guided_proposals_with_a_picked_decoder(
    make_napari_viewer, trained_sam_path, decoder_fixture, held_out, qtbot
):
    viewer, widget = _widget(make_napari_viewer, trained_sam_path, decoder_fixture)
    item = held_out[0]
    truth = class_masks(item)
    name = max(truth, key=lambda n: truth[n].sum())
    viewer.add_image(item.image, name="shapes")
    assert widget.decoder.native.isHidden()  # SAM's grid and no relevance: no decoder row
    widget.proposals.value = "guided"
    assert not widget.decoder.native.isHidden()
    widget.add_decoder_file(decoder_fixture.decoder)
    assert widget.decoder.value == str(decoder_fixture.decoder)
    assert "classes: circle" in widget.decoder.tooltip
    widget.show_relevance.value = True
    widget.prompt.value = name
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0  # every guided candidate: judge the proposals
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    assert f"object(s) matching {name!r}" in widget.status.value, widget.status.value
    labels = viewer.layers[-1]
    provenance = labels.metadata["napari_slip"][-1]
    assert provenance["proposals"]["source"] == "guided"
    assert provenance["decoder"]["sha256"] == load_decoder(decoder_fixture.decoder).sha256
    relevance = viewer.layers[f"relevance: {name} (shapes)"]
    assert tuple(relevance.contrast_limits) == (0.0, 1.0)  # a probability, not stretched
    assert relevance.data[truth[name]].mean() > relevance.data[~truth[name]].mean()
    chosen = labels.data > 0
    assert np.logical_and(chosen, truth[name]).sum() > 0.5 * truth[name].sum()
    decoded = widget.session.segmenter.stats["sam_decoded_points"]
    assert 0 < decoded < 16 * 16  # fewer points than the full grid of this SAM


def test_relevance_regions_and_the_weight_reselect_instantly(
    make_napari_viewer, trained_sam_path, decoder_fixture, held_out, qtbot
):
    viewer, widget = _widget(make_napari_viewer, trained_sam_path, decoder_fixture)
    item = held_out[1]
    truth = class_masks(item)
    name = max(truth, key=lambda n: truth[n].sum())
    viewer.add_image(item.image, name="shapes")
    viewer.add_labels(item.labels, name="objects")
    widget.add_decoder_file(decoder_fixture.decoder)
    widget.proposals.value = viewer.layers["objects"]  # controlled masks
    widget.relevance_weight.value = 0.5
    widget.prompt.value = name
    widget.mode.value = "best"
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    layer = viewer.layers[-1]
    stats = dict(widget.session.segmenter.stats)
    widget.relevance_weight.value = 1.0  # re-selection: no image or model work
    assert widget.session.last.request.options["relevance_weight"] == 1.0
    assert widget.session.segmenter.stats["relevance_windows"] == stats["relevance_windows"]
    kept = layer.data > 0
    assert item.classes[int(np.bincount(item.labels[kept]).argmax())] == name

    widget.proposals.value = "relevance"
    widget.relevance_weight.value = 0.0
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    widget.run()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
    regions = viewer.layers[-1]
    assert regions is not layer
    assert regions.metadata["napari_slip"][-1]["proposals"]["source"] == "relevance"
    assert np.logical_and(regions.data > 0, truth[name]).sum() > 0.3 * truth[name].sum()


def test_decoders_in_the_checkpoint_folder_are_listed(
    make_napari_viewer, trained_sam_path, decoder_fixture
):
    checkpoint_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(decoder_fixture.decoder, checkpoint_dir() / "my-decoder.safetensors")
    _viewer, widget = _widget(make_napari_viewer, trained_sam_path, decoder_fixture)
    values = [c[1] if isinstance(c, tuple) else c for c in widget.decoder.choices]
    assert str(checkpoint_dir() / "my-decoder.safetensors") in values
    clips = [c[1] if isinstance(c, tuple) else c for c in widget.clip.choices]
    assert not any(str(v).endswith("my-decoder.safetensors") for v in clips)


def test_finetune_widget_trains_a_decoder_from_labels_layers(
    make_napari_viewer, trained_sam_path, decoder_fixture, held_out, qtbot
):
    from napari_slip._napari.choices import offer
    from napari_slip._napari.finetune_widget import FinetuneWidget

    viewer, widget = _widget(make_napari_viewer, trained_sam_path, decoder_fixture)
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    stack = np.stack([held_out[i].image for i in range(3)])  # a 3-plane RGB stack
    # labels unique across planes (100 per plane), as a user would paint them
    labels = np.stack(
        [np.where(held_out[i].labels, held_out[i].labels + 100 * i, 0) for i in range(3)]
    )
    mapping = {
        label + 100 * i: cls for i in range(3) for label, cls in held_out[i].classes.items()
    }
    viewer.add_image(stack, name="stack", rgb=True)
    viewer.add_labels(labels, name="objects")
    finetune.image.value = viewer.layers["stack"]
    finetune.labels.value = viewer.layers["objects"]
    finetune.classes.value = "; ".join(
        f"{cls}: {', '.join(str(k) for k in sorted(k for k, c in mapping.items() if c == cls))}"
        for cls in sorted(set(mapping.values()))
    )
    offer(finetune.base, finetune._clip_files, decoder_fixture.clip)
    finetune.target.value = "decoder"
    assert finetune.train.native.isHidden() and finetune.epochs.value == 40
    finetune.epochs.value = 2
    finetune.name.value = "shapes decoder"
    assert not finetune.paraphrases.native.isHidden()
    finetune.paraphrases.value = "circle: round blob, disc"
    items = finetune.dataset_images()
    assert len(items) == 3 and items[0].image.dtype == np.uint8
    finetune.run()
    qtbot.waitUntil(lambda: not finetune.busy, timeout=120_000)
    path = checkpoint_dir() / "shapes_decoder.safetensors"
    assert path.is_file(), finetune.status.value
    assert "It is now in the Decoder list" in finetune.status.value
    meta = load_decoder(path).metadata
    assert meta["training"]["data"] == "napari layers" and meta["training"]["epochs"] == 2
    assert meta["paraphrases"] == {"circle": ["round blob", "disc"]}
    assert set(meta["class_names"]) == set(mapping.values())
    values = [c[1] if isinstance(c, tuple) else c for c in widget.decoder.choices]
    assert str(path) in values  # the segment widget rescanned


def test_console_call_with_guided_proposals_and_a_decoder(
    make_napari_viewer, trained_sam_path, decoder_fixture, held_out
):
    from napari_slip import segment_in_viewer
    from napari_slip.core.params import SamProposalParams

    viewer = make_napari_viewer()
    item = held_out[2]
    truth = class_masks(item)
    # A ring's hole is an object to SAM too, painted over it: judge a solid class.
    name = max((n for n in truth if n != "ring"), key=lambda n: truth[n].sum())
    viewer.add_image(item.image, name="shapes")
    layer = segment_in_viewer(
        viewer,
        name,
        sam=str(trained_sam_path),
        clip=str(decoder_fixture.clip),
        decoder=decoder_fixture.decoder,
        proposals="guided",
        relevance=True,
        mode="threshold",
        threshold=-1.0,
        sam_params=SamProposalParams(**FIXTURE_AMG),
        device="cpu",
    )
    assert layer is not None
    assert layer.metadata["napari_slip"][-1]["proposals"]["source"] == "guided"
    assert tuple(viewer.layers[f"relevance: {name} (shapes)"].contrast_limits) == (0.0, 1.0)
    targets = np.where(truth[name], item.labels, 0)
    masks = [layer.data == i for i in np.unique(layer.data) if i]
    found, n_targets, _ = match_objects(targets, masks)
    assert found >= 1 and n_targets >= 1


def test_the_widget_runs_with_biomedclip(slip, server, tmp_path, monkeypatch):
    """Chosen in the CLIP list, BiomedCLIP loads (from a local stand-in for the hub)
    and segments in the worker."""
    from napari_slip.core.models import hubclip
    from napari_slip.testing import blobs_image
    from napari_slip.testing.tiny import write_tiny_biomedclip

    handler, base = server
    folder = write_tiny_biomedclip(tmp_path / "bmc")
    for url, path in hubclip.HUB_CLIPS["biomedclip"].files(folder):
        handler.files[url.removeprefix(hubclip.HUB)] = path.read_bytes()
    monkeypatch.setattr(hubclip, "HUB", base)
    viewer, widget, run = slip
    image, labels = blobs_image()
    viewer.add_image(image, name="blobs")
    viewer.add_labels(labels, name="truth")
    widget.image.value = viewer.layers["blobs"]
    widget.proposals.value = viewer.layers["truth"]
    widget.clip.value = "biomedclip"
    widget.prompt.value = "nucleus"
    widget.mode.value = "threshold"
    widget.threshold.value = -1.0
    run()
    layer = viewer.layers[-1]
    assert len(layer.features) == len(np.unique(labels)) - 1, widget.status.value
    assert layer.metadata["napari_slip"][-1]["clip"]["spec"] == "biomedclip"


def test_a_decoder_for_another_clip_switches_to_the_clip_it_was_trained_on(
    make_napari_viewer, trained_sam_path, decoder_fixture, tiny_clip_path
):
    from napari_slip.core.models.decoder import read_decoder_metadata

    _, widget = _widget(make_napari_viewer, trained_sam_path, decoder_fixture)
    widget.add_clip_file(tiny_clip_path)  # another CLIP chosen
    assert widget.clip.value == str(tiny_clip_path)
    trained_on = read_decoder_metadata(str(decoder_fixture.decoder))["clip_spec"]
    widget.add_decoder_file(decoder_fixture.decoder)
    assert widget.clip.value == trained_on
    assert widget.status.value.startswith("CLIP switched to")
    widget.prompt.value = "circle"
    config = widget.request().config()  # the pair is accepted as a whole
    assert config.models.clip == trained_on and config.models.decoder == str(
        decoder_fixture.decoder
    )
