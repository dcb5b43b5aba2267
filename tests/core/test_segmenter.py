"""The Segmenter: caching, results, provenance, and nothing-found answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import napari_slip
from napari_slip.core.errors import InputError
from napari_slip.core.models.hub import ModelHub
from napari_slip.core.pipeline.crops import make_crops
from napari_slip.core.pipeline.proposals import proposals_from_labels
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.runtime.generators import drain
from napari_slip.testing import blobs_image

from ..floats import assert_close


@pytest.fixture
def segmenter(tiny_sam_path, tiny_clip_path, fast_sam_params):
    """A segmenter with a hub of its own, so what it loads is visible."""
    return Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        hub=ModelHub(),
    )


def _count_forwards(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.fixture
def decoder_calls():
    """Forwards of any SAM decoder transformer: the model's own, or the bf16 copy that
    decodes when a CPU runs the decoder in bf16 (a global hook, removed after)."""
    import torch
    from segment_anything.modeling import TwoWayTransformer

    calls = []

    def hook(module, *_):
        if isinstance(module, TwoWayTransformer):
            calls.append(1)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield calls
    handle.remove()


def test_second_prompt_and_new_settings_do_no_image_work(segmenter, decoder_calls):
    image, _ = blobs_image()
    first = segmenter.segment(image, "nucleus", mode="topk", top_k=2)
    sam_calls = _count_forwards(segmenter.sam.model.image_encoder)
    decoder_calls.clear()  # the first prompt's decoding
    clip_image_calls = _count_forwards(segmenter.clip.clip.model.visual)
    clip_text_calls = _count_forwards(segmenter.clip.clip.model.transformer)
    second = segmenter.segment(image, "mitotic cell", mode="topk", top_k=2)
    segmenter.segment(image, "nucleus", mode="distractors", distractors="dust, debris")
    segmenter.segment(None, "nucleus", mode="threshold", threshold=-1.0)
    assert sam_calls == [] and decoder_calls == [] and clip_image_calls == []
    # Only the new phrases were encoded: "mitotic cell", "dust", "debris", "background".
    assert len(clip_text_calls) == 4
    assert (
        first.table["prompt"].eq("nucleus").all()
        and second.table["prompt"].eq("mitotic cell").all()
    )
    # A different image is embedded again.
    segmenter.segment(image[::-1].copy(), "nucleus")
    assert len(sam_calls) == 1 and len(clip_image_calls) >= 1
    assert decoder_calls  # the hook does see the decoder when there is work


def test_best_picks_the_crop_most_similar_to_the_prompt(segmenter):
    image, labels = blobs_image()
    result = segmenter.segment(image, "round cell", labels=labels)
    # Recompute the score independently from the real crops and the real text encoder.
    clip = segmenter.clip.clip
    props = proposals_from_labels(labels)
    crops = make_crops(segmenter.image.rgb, props, segmenter.crop_params)
    text = clip.encode_texts(["a photo of round cell."])[0]
    sims = clip.encode_images(crops) @ text
    best = int(np.argmax(sims))
    assert result.table["source_id"].tolist() == [props.source_ids[best]]
    assert_close(result.table["score"].iloc[:1], sims[best : best + 1], terms=32, depth=4)
    assert np.array_equal(result.labels == 1, labels == props.source_ids[best])
    assert set(np.unique(result.labels)) == {0, 1}


def test_threshold_mode_table_matches_label_image(segmenter):
    image, labels = blobs_image()
    result = segmenter.segment(image, "cell", labels=labels, mode="threshold", threshold=-1.0)
    assert result.table["id"].tolist() == [1, 2, 3, 4]
    assert result.table["score"].is_monotonic_decreasing
    for row in result.table.itertuples():
        assert row.area == int((result.labels == row.id).sum())
        assert np.array_equal(result.labels == row.id, labels == row.source_id)


def test_nothing_found_is_an_answer_not_a_forced_mask(segmenter):
    image, labels = blobs_image()
    result = segmenter.segment(image, "cell", labels=labels, mode="best", threshold=0.999)
    assert not result.found and result.labels.max() == 0 and len(result.table) == 0
    assert "Nothing found" in result.message and "0.999" in result.message


def test_label_proposals_never_load_sam(tiny_clip_path):
    seg = Segmenter("/no/such/sam.pth", str(tiny_clip_path), "cpu", hub=ModelHub())
    image, labels = blobs_image()
    result = seg.segment(image, "cell", labels=labels, mode="topk", top_k=2)
    assert result.n_objects == 2 and seg.hub.loads == {"sam": 0, "clip": 1}
    assert (
        result.provenance["sam"] is None and result.provenance["proposals"]["source"] == "labels"
    )


def test_provenance_records_models_hashes_parameters_and_normalisation(segmenter, tiny_clip_path):
    import hashlib

    image, _ = blobs_image()
    result = segmenter.segment(image, "cell", mode="topk", top_k=1, contrast_limits=(0, 4000))
    prov = result.provenance
    assert prov["clip"]["sha256"] == hashlib.sha256(tiny_clip_path.read_bytes()).hexdigest()
    assert len(prov["sam"]["sha256"]) == 64 and prov["sam"]["architecture"]["img_size"] == 256
    assert prov["proposals"]["points_per_side"] == 4
    assert prov["selection"] == {
        "mode": "topk",
        "threshold": None,
        "top_k": 1,
        "distractors": [],
        "background": None,
        "relevance_weight": 0.0,
    }
    assert prov["normalisation"]["limits"] == [[0.0, 4000.0]]
    assert prov["templates"] == ["a photo of {}."]


def test_inputs_are_checked(segmenter):
    image, _ = blobs_image()
    with pytest.raises(InputError, match="prompt is empty"):
        segmenter.segment(image, "  ")
    with pytest.raises(InputError, match="selection mode"):
        segmenter.segment(image, "cell", mode="everything")
    with pytest.raises(InputError, match=r"shape \(3, 96, 96\)"):
        segmenter.segment(np.stack([image] * 3), "cell")
    missing = Segmenter("/x.pth", "/y.safetensors", "cpu")
    with pytest.raises(InputError, match=r"CLIP checkpoint '/y\.safetensors' does not exist"):
        missing.segment(None, "cell")  # the model files first: nothing else could work
    fresh = Segmenter(segmenter.sam_spec, segmenter.clip_spec, "cpu")
    with pytest.raises(InputError, match="No image"):
        fresh.segment(None, "cell")


def test_one_call_api_reuses_loaded_models(tiny_sam_path, tiny_clip_path):
    image, labels = blobs_image(seed=4321)  # pixels no other test gives the shared segmenter
    kwargs = {"sam": str(tiny_sam_path), "clip": str(tiny_clip_path), "device": "cpu"}
    # The shared segmenter lives for the whole process: count from here.
    seg = napari_slip.core.pipeline.api.shared_segmenter(**kwargs)
    before = seg.stats["clip_crop_embeddings"]
    first = napari_slip.segment(image, "cell", labels=labels, mode="topk", top_k=4, **kwargs)
    second = napari_slip.segment(image, "cell", labels=labels, mode="topk", top_k=4, **kwargs)
    assert first.n_objects == 4
    assert np.array_equal(first.labels, second.labels)
    assert napari_slip.core.pipeline.api.shared_segmenter(**kwargs) is seg
    assert seg.stats["clip_crop_embeddings"] - before == 4  # embedded once for both calls


def test_importing_the_library_is_lazy_and_changes_nothing():
    import subprocess
    import sys

    code = (
        "import sys, napari_slip, napari_slip.core, napari_slip.cli\n"
        "heavy = ('torch', 'pandas', 'triton', 'torchvision', 'open_clip')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "import napari_slip.core.runtime.perf as perf\n"
        "print(perf._TUNED)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False"]
    version = subprocess.run(
        [sys.executable, "-m", "napari_slip.cli", "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip().startswith("napari-slip ")


def test_engine_imports_no_qt_or_napari():
    import subprocess
    import sys

    code = (
        "import sys, napari_slip, napari_slip.core, napari_slip.cli; "
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('napari','PyQt5','PyQt6','PySide2','PySide6','qtpy','magicgui','vispy')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _unless_heavy(gen):
    """The generator's result if it announces no heavy work; None (closed) if it does."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.heavy:
            gen.close()
            return None


def test_cache_queries_do_no_image_work(segmenter):

    image, _ = blobs_image()
    other = image[::-1].copy()
    assert _unless_heavy(segmenter.iter_segment(image, "cell")) is None  # would load SAM
    assert segmenter.hub.loads == {"sam": 0, "clip": 0}
    segmenter.segment(image, "cell", mode="topk", top_k=2)
    encoder_calls = _count_forwards(segmenter.sam.model.image_encoder)
    stats = dict(segmenter.stats)
    again = _unless_heavy(segmenter.iter_segment(image, "nucleus", mode="topk", top_k=2))
    assert again is not None and again.table["prompt"].eq("nucleus").all()
    assert segmenter.stats["clip_crop_embeddings"] == stats["clip_crop_embeddings"]
    assert segmenter.stats["text_encodings"] == stats["text_encodings"] + 1
    assert _unless_heavy(segmenter.iter_segment(other, "cell")) is None
    assert encoder_calls == []  # the uncached image was refused before its encoder ran


def test_drain_cached_is_deprecated_and_still_answers(segmenter):
    from napari_slip.core.runtime.generators import drain_cached

    image, _ = blobs_image()
    with pytest.warns(DeprecationWarning, match="drain_cached"):
        assert drain_cached(segmenter.iter_segment(image, "cell")) is None


def test_unknown_options_are_refused_with_the_known_ones(segmenter):
    image, labels = blobs_image()
    with pytest.raises(InputError, match=r"proposals must be one of .*pass it as labels="):
        napari_slip.segment(image, "x", proposals=labels)
    with pytest.raises(InputError, match=r"proposals must be one of sam, labels, relevance"):
        segmenter.segment(image, "x", proposals="grid")
    with pytest.raises(InputError, match=r"proposals='labels' needs the label image"):
        segmenter.segment(image, "x", proposals="labels")
    with pytest.raises(InputError, match=r"makes its own candidates"):
        segmenter.segment(image, "x", proposals="relevance", labels=labels)
    with pytest.raises(InputError, match=r"unknown option 'topk'.*known options: .*top_k"):
        segmenter.segment(image, "x", topk=3)
    with pytest.raises(InputError, match="threshold must be between -1 and 1"):
        segmenter.segment(image, "x", labels=labels, threshold=5)
    with pytest.raises(InputError, match="top_k must be a whole number"):
        segmenter.segment(image, "x", labels=labels, mode="topk", top_k=-1)


def test_models_come_from_one_hub_and_switching_precision_keeps_caches(
    tiny_sam_path, tiny_clip_path, fast_sam_params
):
    hub = ModelHub()
    image, _ = blobs_image()
    a = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        hub=hub,
        sam_params=fast_sam_params,
        precision="fp32",
    )
    b = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        hub=hub,
        sam_params=fast_sam_params,
        precision="fp32",
    )
    a.segment(image, "cell", mode="topk", top_k=2)
    b.segment(image, "cell", mode="topk", top_k=2)
    assert hub.loads == {"sam": 1, "clip": 1}  # two segmenters, one copy of each model
    assert a.sam is b.sam and a.clip is b.clip
    a.set_models(precision="bf16")
    a.segment(image, "cell", mode="topk", top_k=2)
    assert hub.loads == {"sam": 1, "clip": 2}  # SAM is shared across precisions
    a.set_models(precision="fp32")
    encodings = a.stats["sam_image_encodings"]
    a.segment(image, "cell", mode="topk", top_k=2)
    assert a.stats["sam_image_encodings"] == encodings  # back to fp32: still cached
    assert hub.loads == {"sam": 1, "clip": 2}


def test_candidates_separate_from_selection(segmenter):
    from napari_slip.core.pipeline.sources import LabelSource

    image, labels = blobs_image()
    candidates = drain(segmenter.iter_candidates(image, LabelSource(labels)))
    assert len(candidates) == 4 and candidates.embeddings.shape[0] == 4
    best = segmenter.select(candidates, "cell")
    top = segmenter.select(candidates, "cell", mode="topk", top_k=3)
    direct = segmenter.segment(image, "cell", labels=labels, mode="topk", top_k=3)
    assert best.n_objects == 1 and top.n_objects == 3
    assert top.table["source_id"].tolist() == direct.table["source_id"].tolist()
    assert top.table["source_id"].iloc[0] == best.table["source_id"].iloc[0]
    assert segmenter.stats["clip_crop_embeddings"] == 4  # collected once


def test_heavy_work_is_announced_before_it_starts(segmenter):
    """Every model call of a run happens after an event marked heavy, and a cached
    run announces nothing heavy: the property the GUI relies on."""
    image, _ = blobs_image()
    calls = []
    gen = segmenter.iter_segment(image, "cell", mode="topk", top_k=2)
    heavy_seen, hooked = False, False
    while True:
        before = len(calls)
        try:
            event = next(gen)
        except StopIteration:
            break
        if not hooked and segmenter.hub.has_sam(segmenter.sam_spec, "cpu"):
            for module in (segmenter.sam.model.image_encoder, segmenter.sam.model.mask_decoder):
                module.register_forward_hook(lambda *a: calls.append(1))
            hooked = True
        assert len(calls) == before or heavy_seen
        heavy_seen = heavy_seen or event.heavy
    assert calls and heavy_seen
    cached_events = []
    drain(segmenter.iter_segment(image, "nucleus"), cached_events.append)
    assert cached_events and not any(e.heavy for e in cached_events)


def test_a_reselection_has_the_runs_measurement_columns(segmenter):
    """``Segmenter.select`` on a run's candidates measures as the run did: the same
    columns (intensities, physical sizes), the same values for the same objects; a
    run's candidates are its own (another run's pixel size does not leak in)."""
    image, labels = blobs_image()
    options = {"labels": labels, "mode": "topk", "top_k": 3}
    run = segmenter.segment(image, "cell", **options, pixel_size={"Y": 0.5, "X": 0.25})
    again = segmenter.select(run.candidates, "cell", mode="topk", top_k=3)
    assert list(again.table.columns) == list(run.table.columns)
    assert any(c.startswith("mean_intensity") for c in again.table.columns)
    pd.testing.assert_frame_equal(again.table, run.table)
    other = segmenter.segment(image, "cell", **options, pixel_size={"Y": 2.0, "X": 2.0})
    sizes = [c for c in run.table.columns if c.startswith("area_")]
    assert sizes, "no physical size column"
    again = segmenter.select(run.candidates, "cell", mode="topk", top_k=3)
    pd.testing.assert_frame_equal(again.table[sizes], run.table[sizes])
    assert not np.allclose(other.table[sizes].to_numpy(), run.table[sizes].to_numpy())
