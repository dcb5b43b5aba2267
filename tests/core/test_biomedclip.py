"""BiomedCLIP by name, without downloads: its architecture at a tiny width in the
files its hub repository and its BERT's hold, served from 127.0.0.1 and loaded through
the real path (the tokenizer from local files)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import napari_slip
from napari_slip.core.errors import InputError, WeightsUnavailableError
from napari_slip.core.models import hubclip
from napari_slip.core.models.registry import load_clip_model
from napari_slip.testing import blobs_image
from napari_slip.testing.tiny import write_tiny_biomedclip

from ..floats import assert_close

BMC = hubclip.HUB_CLIPS["biomedclip"]


@pytest.fixture(scope="module")
def tiny_biomedclip(tmp_path_factory):
    return write_tiny_biomedclip(tmp_path_factory.mktemp("biomedclip"))


def _serve(handler, folder):
    for url, path in BMC.files(folder):
        handler.files[url.removeprefix(hubclip.HUB)] = path.read_bytes()


def test_biomedclip_downloads_every_file_and_loads_offline_after(
    server,
    tiny_biomedclip,
    isolated_cache,
    monkeypatch,
):
    handler, base = server
    monkeypatch.setattr(hubclip, "HUB", "https://huggingface.co")
    _serve(handler, tiny_biomedclip)
    monkeypatch.setattr(hubclip, "HUB", base)
    loaded = load_clip_model("biomedclip")
    folder = isolated_cache / "clip" / "biomedclip"
    assert loaded.path == folder / "open_clip_pytorch_model.bin"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "open_clip_config.json",
        "open_clip_pytorch_model.bin",
        "text/config.json",
        "text/vocab.txt",
    ]
    clip = loaded.clip
    texts = clip.encode_texts(["a micrograph of a mitotic nucleus.", "a cell membrane"])
    assert texts.shape == (2, 512)
    assert_close(np.linalg.norm(texts, axis=1), np.ones(2), terms=512)
    assert not np.allclose(texts[0], texts[1])
    tokens = clip.tokenizer(["mitotic nucleus"])
    assert tokens.shape == (1, 256)  # BiomedCLIP's context length
    ids = tokens[0].tolist()
    assert ids[:4] == [2, 11, 9, 3]  # [CLS] mitotic nucleus [SEP], from vocab.txt
    # Offline now: the cache is enough (hf-hub: name too).
    monkeypatch.setattr(hubclip, "HUB", "http://127.0.0.1:9")
    again = load_clip_model(f"hf-hub:{BMC.repo}")
    again_texts = again.clip.encode_texts(["a cell membrane"])
    assert_close(again_texts[0], texts[1], terms=512, depth=4)


def test_biomedclip_segments_and_maps_through_the_api(
    server,
    tiny_biomedclip,
    isolated_cache,
    monkeypatch,
    tiny_sam_path,
):
    handler, base = server
    monkeypatch.setattr(hubclip, "HUB", "https://huggingface.co")
    _serve(handler, tiny_biomedclip)
    monkeypatch.setattr(hubclip, "HUB", base)
    image, labels = blobs_image()
    result = napari_slip.segment(
        image,
        "nucleus",
        clip="biomedclip",
        sam=str(tiny_sam_path),
        labels=labels,
        mode="threshold",
        threshold=-1,
        relevance=True,
    )
    assert result.n_objects == len(np.unique(labels)) - 1
    assert result.provenance["clip"]["spec"] == "biomedclip"
    assert result.relevance.shape == image.shape[:2]  # the timm tower's training-free map
    assert np.isfinite(result.relevance).all()


def test_offline_names_every_file_its_url_and_where_to_put_it(isolated_cache, monkeypatch):
    monkeypatch.setattr(hubclip, "HUB", "http://127.0.0.1:9")
    with pytest.raises(WeightsUnavailableError) as info:
        load_clip_model("biomedclip")
    text = str(info.value)
    assert "\n" not in text and "4 file(s)" in text
    folder = isolated_cache / "clip" / "biomedclip"
    for url, path in BMC.files(folder):
        assert url in text and str(path) in text
    assert not any(p.is_file() for p in folder.rglob("*")) if folder.exists() else True


def test_without_transformers_the_extra_is_named(tiny_biomedclip, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(InputError, match=r"napari-slip\[biomed\]"):
        hubclip.load_hub_clip("biomedclip", tiny_biomedclip)


def test_without_transformers_nothing_is_downloaded_first(isolated_cache, monkeypatch):
    """Not 800 MB of downloads, then the missing extra: the extra first (a download
    tried first would fail here with an offline error, not this one)."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(InputError, match=r"napari-slip\[biomed\]"):
        hubclip.resolve_hub_clip("biomedclip")
    assert not (isolated_cache / "clip" / "biomedclip").exists()


def test_biomedclip_is_listed_with_its_urls_and_paths(isolated_cache):
    from napari_slip.core.models.listing import list_models

    rows = {r.name: r for r in list_models()}
    row = rows["biomedclip"]
    assert not row.cached and row.path == str(isolated_cache / "clip" / "biomedclip")
    assert BMC.repo in row.description and "napari-slip[biomed]" in row.description


def test_cli_takes_biomedclip_and_the_map(
    server, tiny_biomedclip, isolated_cache, monkeypatch, tmp_path, capsys
):
    import tifffile

    from napari_slip.cli import main

    handler, base = server
    monkeypatch.setattr(hubclip, "HUB", "https://huggingface.co")
    _serve(handler, tiny_biomedclip)
    monkeypatch.setattr(hubclip, "HUB", base)
    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "props.tif", labels)
    maps = {}
    for method in ("naclip", "maskclip"):
        out = tmp_path / f"{method}.tif"
        code = main(
            [
                "segment",
                str(tmp_path / "img.tif"),
                "-p",
                "nucleus",
                "--clip",
                "biomedclip",
                "--proposals-from",
                str(tmp_path / "props.tif"),
                "-o",
                str(tmp_path / f"labels_{method}.tif"),
                "--relevance-out",
                str(out),
                "--map",
                method,
                "-q",
            ]
        )
        assert code == 0, capsys.readouterr().err
        maps[method] = tifffile.imread(out)
    assert maps["naclip"].shape == image.shape[:2]
    assert not np.allclose(maps["naclip"], maps["maskclip"])
