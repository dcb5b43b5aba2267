"""Shared fixtures: tiny random SAM and CLIP models saved as real checkpoint files.

No test touches the network: weights are built in-process, written with the same
formats users have (SAM .pth state dicts, our CLIP safetensors), and loaded back
through the real loaders.
"""

from __future__ import annotations

import http.server
import threading
import typing

import pytest

from napari_slip.testing import write_tiny_clip, write_tiny_sam

#: The session's own cache folder (see :func:`pytest_configure`).
_SESSION_CACHE = pytest.StashKey[str]()


def pytest_configure(config):
    """The whole session, fixtures of every scope included, uses a cache folder of its
    own and ``auto``'s flag table: never the user's cache (a module's segmenter made
    before the per-test folder below once read a precision measured on this machine,
    and tests wrote its hash cache)."""
    import os
    import tempfile

    folder = tempfile.mkdtemp(prefix="napari-slip-tests-")
    config.stash[_SESSION_CACHE] = folder
    os.environ["NAPARI_SLIP_CACHE"] = folder
    os.environ["NAPARI_SLIP_AUTOTUNE"] = "0"


def pytest_unconfigure(config):
    import shutil

    folder = config.stash.get(_SESSION_CACHE, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache folder, and ``auto`` its flag table: no
    background measuring of precisions (tests of it turn it on)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(folder))
    monkeypatch.setenv("NAPARI_SLIP_AUTOTUNE", "0")
    return folder


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Every test starts with an empty model hub and no shared segmenters, so what a
    test counts (loads, encodings) never depends on the tests before it or the CPU."""
    from napari_slip.core import batch_worker
    from napari_slip.core.models import autotune
    from napari_slip.core.models.hub import default_hub
    from napari_slip.core.pipeline import api

    def reset():
        hub = default_hub()
        hub.clear()
        hub.loads.update({"sam": 0, "clip": 0})
        api._SHARED.clear()
        batch_worker._WORKER_SEGMENTERS.clear()
        autotune._PENDING, autotune._BACKGROUND = False, True  # as a new process has them

    reset()
    yield
    reset()


@pytest.fixture(scope="session")
def tiny_sam_path(tmp_path_factory):
    return write_tiny_sam(tmp_path_factory.mktemp("weights") / "tiny_sam.pth")


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("weights") / "tiny_clip.safetensors")


@pytest.fixture
def fast_sam_params():
    """A sparse grid with SAM's quality filters off, so random weights yield masks."""
    from napari_slip.core.params import SamProposalParams

    return SamProposalParams(
        points_per_side=4,
        points_per_batch=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area=20,
    )


@pytest.fixture(scope="session")
def trained_sam_path():
    """The small SAM trained on synthetic scenes (tests/data, made by
    ``python -m napari_slip.testing.trained_sam``): real masks, unlike random weights."""
    from napari_slip.testing.trained_sam import FIXTURE_PATH

    assert FIXTURE_PATH.is_file(), f"{FIXTURE_PATH} is missing: run the script that makes it"
    return FIXTURE_PATH


@pytest.fixture(scope="session")
def decoder_fixture(tmp_path_factory):
    """A tiny CLIP, the synthetic dataset and a decoder trained on them (seconds)."""
    from napari_slip.testing.decoder import write_decoder_fixture

    return write_decoder_fixture(tmp_path_factory.mktemp("decoder"))


@pytest.fixture(scope="session")
def held_out(tmp_path_factory):
    """Six held-out images of the synthetic domain (another seed than the training's)."""
    from napari_slip.core.training.datasets import read_dataset_folder
    from napari_slip.core.training.synthetic import make_synthetic_dataset

    folder = tmp_path_factory.mktemp("held")
    return read_dataset_folder(make_synthetic_dataset(folder, n_images=6, size=128, seed=99))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: typing.ClassVar[dict[str, bytes]] = {}
    truncated: typing.ClassVar[set[str]] = set()
    etags: typing.ClassVar[dict[str, str]] = {}
    redirects: typing.ClassVar[dict[str, str]] = {}
    hits: typing.ClassVar[list[str]] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path in self.redirects:  # like the Hugging Face hub: 302 to a CDN
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            if self.path in self.etags:
                self.send_header("X-Linked-Etag", f'"{self.etags[self.path]}"')
            self.send_header("ETag", '"not-a-content-hash"')
            self.end_headers()
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.path in self.etags:
            self.send_header("X-Linked-Etag", f'"{self.etags[self.path]}"')
        self.end_headers()
        if self.path in self.truncated:
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)  # the transfer breaks off mid-file
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1 standing in for download servers and the hub:
    ``(handler, base URL)``; put bytes in ``handler.files[path]``. Shut down after."""
    _Handler.files, _Handler.truncated, _Handler.etags, _Handler.hits = {}, set(), {}, []
    _Handler.redirects = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield _Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def official_clip(tmp_path, monkeypatch):
    """A CLIP weight file as open_clip's hub publishes it (a plain state dict, no
    napari-slip metadata) of an architecture open_clip knows (a tiny one, registered)."""
    import copy

    import open_clip
    from safetensors.torch import save_file

    from napari_slip.core.models import registry
    from napari_slip.core.models.clip import build_clip
    from napari_slip.testing.tiny import TINY_CLIP

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "TinyTest", copy.deepcopy(TINY_CLIP))
    real = registry._clip_source

    def source(spec):
        if spec.startswith("TinyTest:"):
            return (
                "TinyTest",
                {},
                ["http://127.0.0.1:9/open_clip_model.safetensors"],
                tmp_path / "cache",
            )
        return real(spec)

    monkeypatch.setattr(registry, "_clip_source", source)
    model = build_clip(copy.deepcopy(TINY_CLIP))
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
