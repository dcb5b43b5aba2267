"""The precision measurement kept per machine (``autotune.json`` in the cache folder):
read once per version of the file, bounded and checked before it is trusted, written
atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import InputError
from ..runtime.atomic import atomic_write_text
from ..runtime.json_files import read_json_or_none
from ..runtime.machine import thread_options
from ..runtime.perf import STAGES, cpu_info

#: Bumped when the probes change (old measurements are then measured again).
PROBE_VERSION = 2
#: The largest point batch a measurement may choose (a damaged file's larger one is
#: not trusted: a batch's memory grows with it).
MAX_POINT_BATCH = 1024


def machine_key() -> str:
    """What a measurement is valid for: CPU model and flags, torch, thread counts."""
    info = cpu_info()
    counts = "/".join(map(str, thread_options()))
    cpu = f"{info['model']} | {','.join(info['flags'])}"
    return f"{cpu} | torch {torch.__version__} | threads {counts} | probes {PROBE_VERSION}"


def cache_file() -> Path:
    from .download import cache_dir

    return cache_dir() / "autotune.json"


#: A precision cache larger than this is damaged (a real one is a few kB): not read.
MAX_CACHE_BYTES = 1 << 20


def _entries() -> dict | None:
    """The cache file's entries, parsed once per version of the file (every plane of a
    stack asks); None when it is missing, too large, or damaged."""
    global _READ
    path = cache_file()
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if _READ is not None and _READ[0] == key:
        return _READ[1]
    entries = read_json_or_none(path, max_bytes=MAX_CACHE_BYTES)
    _READ = (key, entries)
    return entries


_READ: tuple | None = None


def load_measurement() -> dict | None:
    """This machine's cached measurement (``table``, ``fidelity``, ``choice``, ...), or
    None when there is none for the machine as it is now."""
    entries = _entries()
    entry = entries.get(machine_key()) if isinstance(entries, dict) else None
    choice = entry.get("choice") if isinstance(entry, dict) else None
    if not isinstance(choice, dict) or set(choice) != set(STAGES):
        return None
    for pick in choice.values():  # a damaged cache measures again; it never breaks a run
        if not isinstance(pick, dict) or pick.get("precision") not in ("fp32", "bf16", "int8"):
            return None
        threads = pick.get("threads")  # never more threads than this process may use
        if type(threads) is not int or not 1 <= threads <= max(thread_options()):
            return None
    batch = choice["decoder"].get("point_batch")
    if batch is not None and (type(batch) is not int or not 1 <= batch <= MAX_POINT_BATCH):
        return None
    return entry


def save_measurement(entry: dict) -> None:
    """Keep ``entry`` for this machine (other machines' entries stay)."""
    path = cache_file()
    entries = dict(_entries() or {})
    entries[machine_key()] = entry
    try:
        atomic_write_text(path, json.dumps(entries, indent=1))  # never a half-written cache
    except OSError as exc:
        raise InputError(
            f"Could not keep the precision measurement in {path} ({exc.strerror or exc}): "
            "set NAPARI_SLIP_CACHE to a folder you can write."
        ) from None


def check_writable() -> None:
    """Raise before a measurement that could not be kept (seconds of work for nothing).

    Raises
    ------
    InputError
        If the cache folder cannot be written: set NAPARI_SLIP_CACHE elsewhere.
    """
    if not writable():
        raise InputError(
            f"Could not keep a precision measurement in {cache_file().parent} (it cannot "
            "be written): set NAPARI_SLIP_CACHE to a folder you can write."
        )


def writable() -> bool:
    """Whether a measurement could be kept (the cache folder is, or can be, written):
    a measurement that would be thrown away is not started in the background."""
    folder = cache_file().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


__all__ = [
    "MAX_CACHE_BYTES",
    "PROBE_VERSION",
    "cache_file",
    "check_writable",
    "load_measurement",
    "machine_key",
    "save_measurement",
    "writable",
]
