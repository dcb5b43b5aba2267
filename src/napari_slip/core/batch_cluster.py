"""Where a batch runs when it is not this process: a local Dask cluster of worker
processes, or a running scheduler, with every wait bounded and spoken.

- A scheduler address is checked before anything connects (``tcp://host:8786``; a
  dashboard's ``http://`` address is named as such).
- Connecting has a deadline of our own: a port that accepts and never answers (a
  wrong port, a proxy) is one line after ``connect_timeout`` seconds, not a hang.
- A scheduler with no workers yet (a SLURM cluster whose jobs are queued) is waited
  for with a progress line every few seconds, and given up after ``worker_timeout``.
- A local cluster never has more workers than images, nor more than four per core.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Generator

from .errors import InputError
from .runtime.progress import Progress

#: Seconds a scheduler has to answer.
CONNECT_TIMEOUT = 20.0
#: Seconds to wait for the first worker of a running scheduler.
WORKER_TIMEOUT = 600.0
#: Local workers per core at most (more only thrash and exhaust file descriptors).
MAX_WORKERS_PER_CORE = 4

_ADDRESS = re.compile(r"^(?:(tcp|tls)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})/?$")


def default_workers() -> int:
    """Worker processes for this machine: one per 2 cores and 4 GB of memory, at least 1."""
    cores = os.cpu_count() or 1
    try:
        import psutil

        memory_gb = psutil.virtual_memory().total / 2**30
    except ImportError:  # pragma: no cover - psutil comes with distributed
        memory_gb = 4.0 * cores
    return max(1, min(cores // 2, int(memory_gb // 4)))


def check_scheduler(address: str) -> str:
    """A Dask scheduler address as given, or one line saying what is wrong with it."""
    if not isinstance(address, str):
        raise InputError(f"The scheduler address must be text; got {type(address).__name__}.")
    text = address.strip()
    if text.lower().startswith(("http://", "https://")):
        raise InputError(
            f"{address!r} is a web address (the Dask dashboard?): give the scheduler's, "
            "e.g. tcp://host:8786."
        )
    match = _ADDRESS.match(text)
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise InputError(
            f"{address!r} is not a Dask scheduler address: give tcp://HOST:PORT, e.g. "
            "tcp://node12:8786."
        )
    return text


def check_given_workers(workers) -> None:
    """A worker count the user gave (None: the default) is a whole number >= 1."""
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise InputError(
            f"workers (--workers) must be a whole number of at least 1 (leave it out for "
            f"one per 2 cores and 4 GB of memory); got {workers!r}."
        )


def check_workers(workers: int, n_images: int, cores: int | None = None) -> tuple[int, str]:
    """Local workers for ``n_images`` images (at most one per image), and a warning
    ("" for none) when there are more than cores."""
    cores = cores or os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a whole number of at least 1; got {workers!r}.")
    if workers > MAX_WORKERS_PER_CORE * cores:
        raise InputError(
            f"{workers} workers on {cores} cores would each get a sliver of a core and "
            f"could exhaust the machine; use at most {MAX_WORKERS_PER_CORE * cores} (one "
            "per core is fastest), or a cluster (--scheduler)."
        )
    workers = max(1, min(workers, n_images))
    warning = (
        f"{workers} workers on {cores} cores: each gets less than a core (slower than {cores})"
        if workers > cores
        else ""
    )
    return workers, warning


def connect(scheduler: str, timeout: float = CONNECT_TIMEOUT):
    """A client of the scheduler at ``scheduler``, or one line within ``timeout`` s."""
    from distributed import Client

    found: dict = {}

    def attempt() -> None:
        try:
            found["client"] = Client(scheduler, timeout=f"{timeout}s")
        except BaseException as exc:  # reported below, in the caller's thread
            found["error"] = exc

    thread = threading.Thread(target=attempt, name="napari-slip-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if "client" in found:
        return found["client"]
    reason = found.get("error")
    detail = f" ({type(reason).__name__}: {reason})" if reason else " (nothing answered)"
    raise InputError(
        f"Could not reach the Dask scheduler at {scheduler} within {timeout:.0f} s{detail}: "
        "check the address and port, and that the scheduler is running."
    )


def iter_wait_for_workers(
    client, scheduler: str, timeout: float, done: int, total: int, every: float = 5.0
) -> Generator[Progress, None, int]:
    """Wait until the scheduler has a worker, saying so every ``every`` seconds."""
    start, said = time.monotonic(), None
    while True:
        n = len(client.scheduler_info().get("workers", {}))
        if n:
            return n
        waited = time.monotonic() - start
        if waited >= timeout:
            raise InputError(
                f"No worker joined the Dask scheduler at {scheduler} within {timeout:.0f} s: "
                f"start workers (dask worker {scheduler}), or wait longer "
                "(--worker-timeout SECONDS)."
            )
        if said is None or waited - said >= every:
            said = waited
            yield Progress(
                "batch", done, total, f"waiting for workers (0 connected, {waited:.0f} s)"
            )
        time.sleep(min(0.25, max(0.0, timeout - waited)))


@contextlib.contextmanager
def client_for(scheduler: str | None, workers: int, connect_timeout: float = CONNECT_TIMEOUT):
    """A Dask client: on ``scheduler``, or on a LocalCluster this context shuts down."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency
        raise InputError(
            "Batches on several workers need Dask distributed: pip install distributed"
        ) from None
    if scheduler:
        client = connect(scheduler, connect_timeout)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=0,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


__all__ = [
    "CONNECT_TIMEOUT",
    "WORKER_TIMEOUT",
    "check_given_workers",
    "check_scheduler",
    "check_workers",
    "client_for",
    "connect",
    "default_workers",
    "iter_wait_for_workers",
]
