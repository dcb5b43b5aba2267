"""Weights on disk: the cache folder, verified downloads, and file hashes.

Downloads are written to a temporary file beside the target and renamed only after
the SHA-256 matched, so an interrupted transfer never leaves a file that looks
complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import ChecksumError, WeightsUnavailableError
from ..runtime.atomic import atomic_write_text, staging_path
from ..runtime.json_files import read_json_or_none

#: Environment variable that overrides the cache folder.
CACHE_ENV = "NAPARI_SLIP_CACHE"
_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

ProgressCallback = Callable[[int, int], None]


def cache_dir() -> Path:
    """The folder where weights and fine-tuned checkpoints are kept.

    ``$NAPARI_SLIP_CACHE`` if set, else the platform's user cache folder
    (e.g. ``~/.cache/napari-slip`` on Linux).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-slip", appauthor=False))


def checkpoint_dir() -> Path:
    """The folder scanned for fine-tuned CLIP checkpoints (inside the cache folder)."""
    return cache_dir() / "checkpoints"


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _xxh128():
    import xxhash

    return xxhash.xxh128()


def file_xxh128(path: str | os.PathLike) -> str:
    """xxh128 of a file (micro-sam's checksums), read in chunks."""
    digest = _xxh128()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_index() -> Path:
    return cache_dir() / "hashes.json"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file, remembered by path, size and modification time.

    Hashing a 2.5 GB checkpoint takes seconds; provenance needs the hash on every
    load, so it is kept in ``hashes.json`` in the cache folder.
    """
    key = _hash_key(Path(path))
    known = _read_hash_index().get(key)
    if known:
        return known
    digest = sha256_of(path)
    _remember_hash(Path(path), digest)
    return digest


def _hash_key(path: Path) -> str:
    path = path.resolve()
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def _read_hash_index() -> dict[str, str]:
    """The memo of file hashes; anything unreadable or malformed counts as empty."""
    index = read_json_or_none(_hash_index())
    if index is None:
        return {}
    return {k: v for k, v in index.items() if isinstance(v, str) and _HEX64.match(v)}


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` + ``.lock`` between processes (POSIX; elsewhere the
    atomic replace alone, where a concurrent writer can at worst lose a memo entry)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115
    except OSError:
        yield
        return
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows
            pass
        yield
    finally:
        handle.close()  # releases the lock


def _remember_hash(path: Path, digest: str) -> None:
    try:
        with _locked(_hash_index()):  # read-modify-write: one process at a time
            index = _read_hash_index()
            index[_hash_key(path)] = digest
            atomic_write_text(_hash_index(), json.dumps(index, indent=0))
    except OSError:
        pass  # a read-only cache only costs us the memo


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
    what: str = "weights",
    xxh128: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is already there.

    Parameters
    ----------
    url
        Where to fetch from.
    dest
        The final path. The transfer goes to a ``.part`` file beside it that is renamed
        only after the checksum matched.
    sha256
        Expected SHA-256 (hex). If None and the server sends a 64-hex ``X-Linked-Etag``
        (the Hugging Face hub does, for large files, on the response that redirects to
        its CDN), that is used. A plain ``ETag`` is not a content hash and is ignored.
    progress
        Called as ``progress(bytes_done, bytes_total)``; total is 0 if unknown.
    timeout
        Socket timeout in seconds.
    what
        What is being downloaded, for messages.
    xxh128
        Expected xxh128 (hex), for publishers that give that instead (micro-sam).

    Raises
    ------
    WeightsUnavailableError
        The server cannot be reached or answers with an error; the message names the
        URL and where to put the file by hand.
    ChecksumError
        The downloaded bytes do not match the expected SHA-256 (nothing is kept).
    """
    dest = Path(dest)
    # A cached copy with the wrong hash is stale or corrupt: fetch it again.
    if (
        dest.is_file()
        and (sha256 is None or file_sha256(dest) == sha256.lower())
        and (xxh128 is None or file_xxh128(dest) == xxh128.lower())
    ):
        return dest
    try:
        return _fetch(url, dest, sha256, progress, timeout, what, xxh128)
    except WeightsUnavailableError as exc:
        if not dest.is_file():
            raise
        # "Put the file at X" would be wrong: X is there, but incomplete or corrupt.
        message = (
            f"The {what} file at {dest} is incomplete or corrupt (its checksum differs), and "
            f"a fresh copy could not be downloaded from {url}. Delete it and try again "
            "online, or replace it with a complete copy."
        )
        raise WeightsUnavailableError(
            message, surfaces={k: message for k in exc.surfaces}
        ) from None


def _fetch(url, dest: Path, sha256, progress, timeout, what, xxh128=None) -> Path:
    """Download ``url`` into ``dest`` through a verified temporary file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "napari-slip"})
    redirects = _LinkedEtagRedirects()
    try:
        response = urllib.request.build_opener(redirects).open(request, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsUnavailableError.offline(what, url, dest, reason) from None
    linked = redirects.linked_sha256 or _linked_sha256(response.headers)
    expected = (sha256 or linked or "").lower() or None
    total = int(response.headers.get("Content-Length") or 0)
    tmp = staging_path(dest)  # ours by name: a batch's clean-up may remove it
    digest = hashlib.sha256()
    quick = _xxh128() if xxh128 else None
    done = 0
    try:
        with response, open(tmp, "wb") as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, urllib.error.URLError) as exc:
                    raise WeightsUnavailableError(
                        f"The download of {what} from {url} broke off after {done} bytes "
                        f"({exc}). Try again, or put the file at {dest} by hand."
                    ) from None
                if not block:
                    break
                out.write(block)
                digest.update(block)
                if quick is not None:
                    quick.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        if total and done != total:
            raise WeightsUnavailableError(
                f"The download of {what} from {url} stopped at {done} of {total} bytes. "
                f"Try again, or put the file at {dest} by hand."
            )
        actual = digest.hexdigest()
        if expected and actual != expected:
            raise ChecksumError(
                f"The {what} downloaded from {url} has SHA-256 {actual}, expected {expected}; "
                "the file was discarded. Try again; if it persists, the server's file changed."
            )
        if quick is not None and quick.hexdigest() != xxh128.lower():
            raise ChecksumError(
                f"The {what} downloaded from {url} has xxh128 {quick.hexdigest()}, expected "
                f"{xxh128.lower()}; the file was discarded. Try again; if it persists, the "
                "server's file changed."
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    _remember_hash(dest, actual)
    return dest


def _linked_sha256(headers) -> str | None:
    value = (headers.get("X-Linked-Etag") or "").strip().strip('"').lower()
    return value if _HEX64.match(value) else None


class _LinkedEtagRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, remembering a hub's ``X-Linked-Etag`` on the way."""

    linked_sha256: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.linked_sha256 = self.linked_sha256 or _linked_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)
