"""Every model a run needs is resolved before any model work (all missing ones in one
message with URLs and paths); an official open_clip weight file is accepted with its
architecture named (``MODEL:TAG=PATH``); ``napari-slip models`` shows URL and path."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.cli import main
from napari_slip.core.errors import CheckpointError, InputError, WeightsUnavailableError
from napari_slip.core.models import registry
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.testing import blobs_image

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def offline(monkeypatch, isolated_cache):
    """SAM vit_b and CLIP ViT-B-32 named, both unreachable."""
    sam = registry.SAM_MODELS["vit_b"]
    monkeypatch.setitem(
        registry.SAM_MODELS,
        "vit_b",
        registry.SamWeights(
            "vit_b", f"{DEAD}/sam_vit_b_01ec64.pth", sam.sha256, 358, sam.description
        ),
    )
    real = registry._clip_source

    def source(spec):
        name, pcfg, _, folder = real(spec)
        return name, pcfg, [f"{DEAD}/open_clip_model.safetensors"], folder

    monkeypatch.setattr(registry, "_clip_source", source)
    return isolated_cache


def test_every_missing_model_is_reported_together_before_any_work(offline):
    image, _ = blobs_image()
    seg = Segmenter("vit_b", "ViT-B-32:laion2b_s34b_b79k", "cpu")
    with pytest.raises(WeightsUnavailableError) as info:
        seg.segment(image, "cell")
    message = str(info.value)
    assert message.startswith("2 models are missing.") and "\n" not in message
    assert f"{DEAD}/sam_vit_b_01ec64.pth" in message
    assert str(offline / "sam" / "sam_vit_b_01ec64.pth") in message
    clip_path = offline / "clip" / "ViT-B-32__laion2b_s34b_b79k" / "open_clip_model.safetensors"
    assert str(clip_path) in message
    assert "--sam PATH" in info.value.for_surface("cli")
    assert seg.stats["sam_image_encodings"] == 0 and not seg.model_set.is_loaded("sam")


def test_a_local_sam_with_a_missing_clip_stops_before_sams_work(offline, tiny_sam_path):
    image, _ = blobs_image()
    seg = Segmenter(str(tiny_sam_path), "ViT-B-32:laion2b_s34b_b79k", "cpu")
    with pytest.raises(WeightsUnavailableError, match="Could not download CLIP"):
        seg.segment(image, "cell")
    assert seg.stats["sam_image_encodings"] == 0  # not after 52 s of SAM, as before


def test_an_official_open_clip_file_is_accepted_with_its_architecture_named(official_clip):
    image, labels = blobs_image()
    with pytest.raises(CheckpointError, match=r"ViT-B-32:laion2b_s34b_b79k=.*napari-slip models"):
        Segmenter(clip=str(official_clip), device="cpu").segment(image, "cell", labels=labels)
    seg = Segmenter(clip=f"TinyTest:custom={official_clip}", device="cpu")
    result = seg.segment(image, "cell", labels=labels, mode="threshold", threshold=-1)
    assert result.n_objects == len(np.unique(labels)) - 1
    assert result.provenance["clip"]["path"] == str(official_clip)
    with pytest.raises(InputError, match="does not exist"):
        Segmenter(clip="TinyTest:custom=/nope/x.safetensors").run_config("cell")


def test_models_lists_the_url_and_exact_path_of_every_named_model(capsys, isolated_cache):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    path = isolated_cache / "clip" / "ViT-B-32__laion2b_s34b_b79k" / "open_clip_model.safetensors"
    assert str(path) in out
    assert "resolve/main/open_clip_model.safetensors" in out
    assert "--clip ViT-B-32:laion2b_s34b_b79k=PATH" in out
    assert "sam_vit_b_01ec64.pth" in out and "dl.fbaipublicfiles.com" in out
