"""Downloads against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib

import pytest

from napari_slip.core.errors import ChecksumError, WeightsUnavailableError
from napari_slip.core.models import registry as models
from napari_slip.core.models.download import download, file_sha256

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_verifies_reports_progress_and_caches(server, tmp_path):
    handler, base = server
    handler.files["/w.pth"] = PAYLOAD
    seen = []
    dest = tmp_path / "w.pth"
    out = download(
        f"{base}/w.pth",
        dest,
        hashlib.sha256(PAYLOAD).hexdigest(),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) >= 1
    assert _leftovers(tmp_path) == ["w.pth"]
    # The second call finds the verified file and asks the server nothing.
    download(f"{base}/w.pth", dest, hashlib.sha256(PAYLOAD).hexdigest())
    assert handler.hits == ["/w.pth"]
    assert file_sha256(dest) == hashlib.sha256(PAYLOAD).hexdigest()


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    handler, base = server
    handler.files["/w.pth"] = PAYLOAD
    with pytest.raises(ChecksumError, match="expected 0000"):
        download(f"{base}/w.pth", tmp_path / "w.pth", "0" * 64)
    assert _leftovers(tmp_path) == []


def test_server_etag_is_used_as_checksum(server, tmp_path):
    handler, base = server
    handler.files["/hf.bin"] = PAYLOAD
    handler.etags["/hf.bin"] = "f" * 64  # what the hub would send for another file
    with pytest.raises(ChecksumError):
        download(f"{base}/hf.bin", tmp_path / "hf.bin")
    handler.etags["/hf.bin"] = hashlib.sha256(PAYLOAD).hexdigest()
    assert download(f"{base}/hf.bin", tmp_path / "hf.bin").read_bytes() == PAYLOAD


def test_hub_checksum_is_taken_from_the_redirect(server, tmp_path):
    handler, base = server
    handler.files["/cdn/blob"] = PAYLOAD
    handler.redirects["/repo/resolve/main/w.safetensors"] = "/cdn/blob"
    url = f"{base}/repo/resolve/main/w.safetensors"
    handler.etags["/repo/resolve/main/w.safetensors"] = "e" * 64  # not PAYLOAD's hash
    with pytest.raises(ChecksumError, match="expected eeee"):
        download(url, tmp_path / "w.safetensors")
    handler.etags["/repo/resolve/main/w.safetensors"] = hashlib.sha256(PAYLOAD).hexdigest()
    assert download(url, tmp_path / "w.safetensors").read_bytes() == PAYLOAD
    assert handler.hits[-2:] == ["/repo/resolve/main/w.safetensors", "/cdn/blob"]


def test_interrupted_transfer_leaves_no_complete_looking_file(server, tmp_path):
    handler, base = server
    handler.files["/w.pth"] = PAYLOAD
    handler.truncated.add("/w.pth")
    with pytest.raises(WeightsUnavailableError, match=r"broke off|stopped at"):
        download(f"{base}/w.pth", tmp_path / "w.pth", hashlib.sha256(PAYLOAD).hexdigest())
    assert _leftovers(tmp_path) == []


def test_stale_cached_file_is_replaced(server, tmp_path):
    handler, base = server
    handler.files["/w.pth"] = PAYLOAD
    dest = tmp_path / "w.pth"
    dest.write_bytes(b"half a file")
    download(f"{base}/w.pth", dest, hashlib.sha256(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD


def test_offline_error_names_url_and_where_to_put_the_file(tmp_path):
    dest = tmp_path / "sam" / "w.pth"
    url = "http://127.0.0.1:9/w.pth"  # nothing listens on the discard port
    with pytest.raises(WeightsUnavailableError) as info:
        download(url, dest, "0" * 64, what="SAM vit_b")
    message = str(info.value)
    assert url in message and str(dest) in message and "\n" not in message
    assert "pass a local file: sam='/path/to/" in message  # Python: the keyword argument
    widget = info.value.for_surface("widget")
    assert "Choose a file…" in widget and url not in widget and len(widget) < len(message)
    assert "--sam PATH" in info.value.for_surface("cli")
    assert not dest.exists()


def test_named_sam_downloads_into_cache_and_loads(
    server, tiny_sam_path, isolated_cache, monkeypatch
):
    handler, base = server
    data = tiny_sam_path.read_bytes()
    handler.files["/sam_tiny_abc.pth"] = data
    entry = models.SamWeights(
        "vit_b", f"{base}/sam_tiny_abc.pth", hashlib.sha256(data).hexdigest(), 1, "tiny"
    )
    monkeypatch.setitem(models.SAM_MODELS, "vit_b", entry)
    loaded = models.load_sam_model("vit_b")
    assert loaded.path == isolated_cache / "sam" / "sam_tiny_abc.pth"
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.config.img_size == 256
    from napari_slip.core.models.listing import list_models

    rows = {r.name: r for r in list_models()}
    assert rows["vit_b"].cached and rows["vit_b"].path == str(loaded.path)
    assert not rows["vit_l"].cached


def _micro_sam_file(tiny_sam_path, tmp_path, wrapped: bool):
    """A tiny SAM in micro-sam's layouts: its bioimage.io export (SAM's own state dict)
    or its trainer's checkpoint (``model_state`` with ``sam.`` prefixes, a decoder)."""
    import io

    import torch

    state = torch.load(tiny_sam_path, map_location="cpu", weights_only=True)
    if wrapped:
        state = {
            "model_state": {f"sam.{k}": v for k, v in state.items()},
            "decoder_state": {"head.weight": torch.zeros(2, 2)},
        }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("wrapped", [False, True])
def test_micro_sam_models_download_hash_checked_by_xxh128_and_load(
    server, tiny_sam_path, tmp_path, isolated_cache, monkeypatch, wrapped
):
    import dataclasses

    import xxhash

    handler, base = server
    data = _micro_sam_file(tiny_sam_path, tmp_path, wrapped)
    handler.files["/diplomatic-bug/1.2/files/vit_b.pt"] = data
    handler.files["/noisy-ox/1.2/files/vit_b.pt"] = data[:-1] + bytes([data[-1] ^ 1])
    for name, folder in (("vit_b_lm", "diplomatic-bug"), ("vit_b_em_organelles", "noisy-ox")):
        entry = models.SAM_MODELS[name]
        url = f"{base}/{folder}/1.2/files/vit_b.pt"
        published = xxhash.xxh128(data).hexdigest()  # the LM file's; EM's bytes differ
        monkeypatch.setitem(
            models.SAM_MODELS, name, dataclasses.replace(entry, url=url, xxh128=published)
        )
    loaded = models.load_sam_model("vit_b_lm")
    # Both publish "vit_b.pt": each keeps its own name in the cache.
    assert loaded.path == isolated_cache / "sam" / "micro_sam_vit_b_lm.pt"
    assert loaded.config.img_size == 256
    with pytest.raises(ChecksumError, match="xxh128"):
        models.load_sam_model("vit_b_em_organelles")
    assert _leftovers(isolated_cache / "sam") == ["micro_sam_vit_b_lm.pt"]
    # A cached copy that no longer matches is fetched again.
    loaded.path.write_bytes(b"damaged")
    handler.hits.clear()
    assert models.load_sam_model("vit_b_lm").config.img_size == 256
    assert handler.hits == ["/diplomatic-bug/1.2/files/vit_b.pt"]


def test_micro_sam_entries_are_the_published_ones():
    lm, em = models.SAM_MODELS["vit_b_lm"], models.SAM_MODELS["vit_b_em_organelles"]
    base = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/"
    assert lm.url == base + "diplomatic-bug/1.2/files/vit_b.pt"
    assert lm.xxh128 == "fe9252a29f3f4ea53c15a06de471e186"
    assert em.url == base + "noisy-ox/1.2/files/vit_b.pt"
    assert em.xxh128 == "f3bf2ed83d691456bae2c3f9a05fb438"
    assert lm.microscopy and em.microscopy and not models.SAM_MODELS["vit_b"].microscopy
