"""Every wait of a batch is bounded and spoken: a scheduler address that is not one, a
port that accepts and never answers, a real scheduler with no workers, and more local
workers than images or cores. Servers and schedulers run on 127.0.0.1 only, bounded in
time, and are shut down by the test that started them."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
import tifffile

import napari_slip
from napari_slip.cli import main
from napari_slip.core.batch_cluster import check_scheduler, check_workers
from napari_slip.core.errors import InputError
from napari_slip.testing import blobs_image


@pytest.fixture
def one_image(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", blobs_image()[0])
    return tmp_path / "a.tif"


@pytest.fixture
def models(tiny_sam_path, tiny_clip_path):
    return {"sam": str(tiny_sam_path), "clip": str(tiny_clip_path), "device": "cpu"}


@pytest.fixture
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("not an address", "is not a Dask scheduler address: give tcp://HOST:PORT"),
        ("http://127.0.0.1:8787", "is a web address \\(the Dask dashboard\\?\\)"),
        ("tcp://127.0.0.1:99999", "is not a Dask scheduler address"),
        ("tcp://127.0.0.1", "is not a Dask scheduler address"),
    ],
)
def test_a_bad_scheduler_address_is_one_line_before_any_work(
    address, message, one_image, models, tmp_path, capsys
):
    with pytest.raises(InputError, match=message):
        napari_slip.batch(one_image, tmp_path / "out", "cell", scheduler=address, **models)
    assert not (tmp_path / "out").exists()
    code = main(
        [
            "batch",
            str(one_image),
            "-p",
            "cell",
            "-o",
            str(tmp_path / "out"),
            "--scheduler",
            address,
            "-q",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize("address", ["tcp://node12:8786", "127.0.0.1:8786", "tls://[::1]:8786"])
def test_scheduler_addresses_that_are_fine(address):
    assert check_scheduler(address) == address


def test_a_port_that_never_answers_is_given_up_on_in_time(
    silent_server, one_image, models, tmp_path
):
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        napari_slip.batch(
            one_image,
            tmp_path / "out",
            "cell",
            scheduler=silent_server,
            connect_timeout=2,
            **models,
        )
    took = time.monotonic() - start
    message = str(info.value)
    assert f"Could not reach the Dask scheduler at {silent_server} within 2 s" in message
    assert "\n" not in message
    assert took < 30  # bounded: the old code waited for ever here
    assert not list((tmp_path / "out").glob("*.tif"))  # nothing written


def test_a_scheduler_with_no_workers_is_waited_for_aloud_then_given_up(
    one_image, models, tmp_path
):
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None)
    events = []
    try:
        start = time.monotonic()
        with pytest.raises(InputError, match=r"No worker joined the Dask scheduler at .* 3 s"):
            napari_slip.batch(
                one_image,
                tmp_path / "out",
                "cell",
                scheduler=cluster.scheduler_address,
                worker_timeout=3,
                progress=events.append,
                **models,
            )
        took = time.monotonic() - start
    finally:
        cluster.close()
    waits = [e.message for e in events if e.message.startswith("waiting for workers")]
    assert waits and waits[0].startswith("waiting for workers (0 connected")
    assert 3 <= took < 30
    assert not list((tmp_path / "out").glob("*.tif"))


def test_local_workers_are_capped_by_images_and_cores(one_image, models, tmp_path, capsys):
    with pytest.raises(InputError, match=r"10000 workers on .* cores would each get a sliver"):
        napari_slip.batch(one_image, tmp_path / "out", "cell", workers=10000, **models)
    assert check_workers(8, 3, cores=4) == (3, "")  # never more workers than images
    workers, warning = check_workers(5, 10, cores=2)
    assert workers == 5 and warning.startswith("5 workers on 2 cores")
    with pytest.raises(InputError, match="at least 1"):
        check_workers(0, 3)
    # One image and two workers asked for: it runs in this process, no cluster.
    summary = napari_slip.batch(
        one_image, tmp_path / "out", "cell", workers=2, mode="topk", **models
    )
    assert summary.workers == 1 and summary.done == ["a.tif"]


def test_batch_cli_says_when_workers_outnumber_cores(tmp_path, tiny_sam_path, tiny_clip_path):
    import os

    cores = os.cpu_count() or 1
    images, _ = blobs_image()
    for i in range(cores + 1):
        tifffile.imwrite(tmp_path / f"img{i}.tif", images)
    from napari_slip.core.batches import iter_batch, make_config

    config = make_config(
        "cell", str(tiny_sam_path), str(tiny_clip_path), "cpu", mode="topk", threshold=-1.0
    )
    gen = iter_batch(tmp_path, tmp_path / "out", config, workers=cores + 1)
    first = [next(gen), next(gen)]
    gen.close()  # cancel before any cluster starts
    assert any(f"{cores + 1} workers on {cores} cores" in e.message for e in first)
