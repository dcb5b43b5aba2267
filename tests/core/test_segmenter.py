"""The Segmenter: caching, results, provenance, and nothing-found answers."""

from __future__ import annotations

import numpy as np
import pytest

import napari_slip
from napari_slip.core.crops import make_crops
from napari_slip.core.errors import InputError
from napari_slip.core.proposals import proposals_from_labels
from napari_slip.core.segmenter import Segmenter
from napari_slip.testing import blobs_image


@pytest.fixture
def segmenter(tiny_sam_path, tiny_clip_path, fast_sam_params):
    return Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", sam_params=fast_sam_params)


def _count_forwards(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_second_prompt_and_new_settings_do_no_image_work(segmenter):
    image, _ = blobs_image()
    first = segmenter.segment(image, "nucleus", mode="topk", top_k=2)
    sam_calls = _count_forwards(segmenter.sam.model.image_encoder)
    decoder_calls = _count_forwards(segmenter.sam.model.mask_decoder.transformer)
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
    assert result.table["score"].iloc[0] == pytest.approx(sims[best], abs=1e-5)
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
    seg = Segmenter("/no/such/sam.pth", str(tiny_clip_path), "cpu")
    image, labels = blobs_image()
    result = seg.segment(image, "cell", labels=labels, mode="topk", top_k=2)
    assert result.n_objects == 2 and seg._sam is None
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
    fresh = Segmenter("/x.pth", "/y.safetensors", "cpu")
    with pytest.raises(InputError, match="No image"):
        fresh.segment(None, "cell")


def test_one_call_api_reuses_loaded_models(tiny_sam_path, tiny_clip_path):
    image, labels = blobs_image()
    kwargs = {"sam": str(tiny_sam_path), "clip": str(tiny_clip_path), "device": "cpu"}
    first = napari_slip.segment(image, "cell", labels=labels, mode="topk", top_k=4, **kwargs)
    second = napari_slip.segment(image, "cell", labels=labels, mode="topk", top_k=4, **kwargs)
    assert first.n_objects == 4
    assert np.array_equal(first.labels, second.labels)
    seg = next(iter(napari_slip.core.segmenter._SEGMENTERS.values()))
    assert seg.stats["clip_crop_embeddings"] == 4  # embedded once for both calls


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


def test_cache_queries_do_no_image_work(segmenter):
    from napari_slip.core.progress import drain_cached

    image, _ = blobs_image()
    other = image[::-1].copy()
    assert drain_cached(segmenter.iter_segment(image, "cell")) is None  # would load SAM
    assert segmenter._sam is None and segmenter._clip is None
    segmenter.segment(image, "cell", mode="topk", top_k=2)
    assert segmenter.is_cached(image) and not segmenter.is_cached(other)
    encoder_calls = _count_forwards(segmenter.sam.model.image_encoder)
    stats = dict(segmenter.stats)
    again = drain_cached(segmenter.iter_segment(image, "nucleus", mode="topk", top_k=2))
    assert again is not None and again.table["prompt"].eq("nucleus").all()
    assert segmenter.stats["clip_crop_embeddings"] == stats["clip_crop_embeddings"]
    assert segmenter.stats["text_encodings"] == stats["text_encodings"] + 1
    assert drain_cached(segmenter.iter_segment(other, "cell")) is None
    assert encoder_calls == []  # the uncached image was refused before its encoder ran
