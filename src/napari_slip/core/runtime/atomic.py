"""Writing a file so that it is whole or not there, the one way every writer does it.

A writer writes to a temporary beside the target (``.slip-NAME.XXXXXXXX.part``: our
prefix, a unique random part, so two writers never collide and a clean-up can tell
our leftovers from a user's files) and renames it over the target when complete; on
any error the temporary is removed and the target is as it was. Labels and tables
(:class:`~..io.Outputs`, several files swapped in together), concepts, checkpoints,
cached embeddings, downloads and the precision cache all write this way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

#: How the temporary files of napari-slip begin (see
#: :func:`~..io.remove_stale_temporaries`).
TEMP_PREFIX = ".slip-"


def staging_path(path: str | os.PathLike, folder: bool = False) -> Path:
    """A new, empty temporary file (or folder) beside ``path``, ours by its prefix.

    Its name is short whatever the target's (a 250-character name must not fail for
    the temporary's sake): at most 40 characters of the name are kept.
    """
    path = Path(path)
    prefix = f"{TEMP_PREFIX}{path.name[:40]}."
    if folder or path.suffix.lower() == ".zarr":  # a zarr store is a folder: staged as one
        return Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".part"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary beside ``path``, then move it to ``path``
    (with the mode a new file gets); on any error nothing is left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        write(tmp)
        readable(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def remove(path: Path) -> None:
    """A file or a folder, gone (errors ignored: a clean-up)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def readable(path: Path) -> None:
    """Give a staged file the mode a new file gets under the umask (temporary files
    are created private, 0600, which colleagues and cluster jobs could not read)."""
    mask = _umask()
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


__all__ = [
    "TEMP_PREFIX",
    "atomic_write",
    "atomic_write_text",
    "readable",
    "remove",
    "staging_path",
]
