"""Reading and writing images and label files for the command line and the datasets."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from .errors import InputError

_TIFF = (".tif", ".tiff")
_PIL = (".png", ".jpg", ".jpeg", ".bmp")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a tif/tiff, png or jpg image as a numpy array.

    Raises
    ------
    InputError
        If the file is missing, of an unsupported type, or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file {path} does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix in _TIFF:
            import tifffile

            data = np.asarray(tifffile.imread(path))
            if data.size == 0:
                raise InputError(f"{path} holds no image data (a damaged or empty file?).")
            return data
        if suffix in _PIL:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("P", "CMYK", "YCbCr", "LA"):
                    im = im.convert(
                        "RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"
                    )
                return np.asarray(im)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"Could not read {path} ({type(exc).__name__}: {exc}).") from None
    raise InputError(f"Unsupported image type {suffix!r} for {path}: use .tif, .png or .jpg.")


def open_image(path: str | os.PathLike, lazy: bool = False):
    """Open an image file; with ``lazy``, as an array read region by region.

    ``.zarr`` stores (an array, or a multiscale group whose level ``0`` is used) are
    always lazy unless ``lazy`` is False; tif/OME-TIFF files are lazy through
    tifffile's zarr view. Other formats are read whole (:func:`read_image`).

    Raises
    ------
    InputError
        If the file is missing or unreadable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        if not path.is_dir():
            raise InputError(f"Image store {path} does not exist.")
        try:
            import zarr

            node = zarr.open(str(path), mode="r")
            if not hasattr(node, "shape"):  # a group: OME-Zarr multiscales keep level 0
                node = node["0"]
            return node if lazy else np.asarray(node)
        except Exception as exc:
            raise InputError(f"Could not read {path} ({type(exc).__name__}: {exc}).") from None
    if lazy and suffix in _TIFF and path.is_file():
        try:
            import tifffile
            import zarr

            store = tifffile.imread(path, aszarr=True)
            node = zarr.open(store, mode="r")
            node = node if hasattr(node, "shape") else node["0"]
            weakref.finalize(node, store.close)  # the file closes with the array
            return node
        except Exception:
            pass  # fall back to reading it whole, with read_image's messages
    return read_image(path)


def _write_labels_to(target: Path, labels: np.ndarray, suffix: str) -> None:
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    if suffix in _TIFF:
        import tifffile

        tifffile.imwrite(target, labels.astype(dtype), compression="zlib")
    elif suffix == ".png":
        if dtype != np.uint16:
            raise InputError(f"{labels.max()} labels do not fit a png; write a .tif instead.")
        from PIL import Image

        Image.fromarray(labels.astype(np.uint16)).save(target, format="PNG")
    else:
        raise InputError(f"Labels can be written as .tif or .png, not {suffix!r} ({target}).")


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write a label image as tif (uint16 when ids fit, else uint32) or png (uint16 max),
    atomically (a temporary file beside it, renamed when complete)."""
    path = Path(path)
    outputs = Outputs({"labels": path}, overwrite=True)
    outputs.write({"labels": lambda tmp: _write_labels_to(tmp, labels, path.suffix.lower())})
    return path


def create_zarr_labels(path: str | os.PathLike, shape: tuple[int, int], chunk: int = 1024):
    """A new zarr array of zeros (int32, square chunks) at ``path``, for labels."""
    import zarr

    return zarr.open_array(
        str(path),
        mode="w",
        shape=tuple(int(s) for s in shape),
        chunks=(min(chunk, int(shape[0])), min(chunk, int(shape[1]))),
        dtype="int32",
        fill_value=0,
    )


class Outputs:
    """The files one run writes: checked before any work, written together or not at all.

    Parameters
    ----------
    paths
        Name -> output path (None entries are skipped).
    inputs
        Files the run reads: an output may never be one of them.
    overwrite
        Whether an existing output may be replaced.
    """

    def __init__(
        self,
        paths: dict[str, str | os.PathLike | None],
        inputs: list[str | os.PathLike | None] | tuple = (),
        overwrite: bool = False,
    ) -> None:
        self.paths = {k: Path(v).expanduser() for k, v in paths.items() if v is not None}
        self.inputs = [Path(p).expanduser() for p in inputs if p is not None]
        self.overwrite = overwrite

    def check(self, flags: dict[str, str] | None = None) -> None:
        """Refuse, before any work, outputs that would lose data or cannot be written.

        ``flags`` names each output as the user gave it (``--output``), for messages.
        """
        flags = flags or {}
        seen: dict[Path, str] = {}
        for name, path in self.paths.items():
            what = flags.get(name, name)
            resolved = path.resolve()
            for source in self.inputs:
                if source.exists() and resolved == source.resolve():
                    raise InputError(
                        f"{what} {path} is also an input: refusing to write over it. "
                        "Choose another output name."
                    )
            if resolved in seen:
                raise InputError(f"{what} and {seen[resolved]} are the same file ({path}).")
            seen[resolved] = what
            if path.is_dir() and not is_store(path):
                raise InputError(f"{what} {path} is a folder; give a file name.")
            if path.exists() and not self.overwrite:
                raise InputError(
                    f"{what} {path} exists already; pass --overwrite to replace it, or "
                    "choose another name."
                )
            parent = path.parent
            existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
            if existing is not None and not existing.is_dir():
                raise InputError(f"{what} {path}: {existing} is a file, not a folder.")
            if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
                raise InputError(f"{what} {path}: the folder {existing} is not writable.")

    def write(self, writers: dict[str, object]) -> list[Path]:
        """Write every output through ``writers[name](temporary_path)``, then rename all.

        Any failure (or Ctrl-C) removes every temporary file and leaves every output as
        it was; the exception propagates.
        """
        temps: dict[str, Path] = {}
        try:
            for name, path in self.paths.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                if is_store(path):  # a zarr store is a folder: staged as one
                    tmp = tempfile.mkdtemp(
                        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
                    )
                else:
                    fd, tmp = tempfile.mkstemp(
                        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
                    )
                    os.close(fd)
                temps[name] = Path(tmp)
                writers[name](temps[name])
            for name, path in self.paths.items():
                _replace(temps.pop(name), path)
        except OSError as exc:
            names = ", ".join(str(p) for p in self.paths.values())
            raise InputError(
                f"Could not write {names} ({exc.strerror or exc}); nothing was written."
            ) from None
        finally:
            for tmp in temps.values():
                _remove(tmp)
        return list(self.paths.values())


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a folder ending in .zarr)."""
    return Path(path).suffix.lower() == ".zarr"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; a folder (zarr store) replaces the old one whole."""
    if tmp.is_dir() and path.exists():
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)
