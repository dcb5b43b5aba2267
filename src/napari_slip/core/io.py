"""Reading and writing images and label files for the command line and the datasets."""

from __future__ import annotations

import os
import re
import secrets
import weakref
from pathlib import Path

import numpy as np

from .errors import InputError
from .runtime.atomic import TEMP_PREFIX, readable, remove, staging_path

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


def write_stack_labels_to(
    target: Path,
    labels: np.ndarray,
    suffix: str,
    axes: str,
    scale: dict | None = None,
    unit: str | None = None,
) -> None:
    """A stack's labels with their axes (and pixel sizes): an OME-TIFF, or an OME-Zarr
    (NGFF 0.4) group with one level, chunked by plane."""
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    scale = dict(scale or {})
    ome_unit = {"um": "micrometer", "nm": "nanometer", "mm": "millimeter", "m": "meter"}
    if suffix in _TIFF:
        import tifffile

        meta: dict = {"axes": axes}
        for a in "ZYX":
            if a in scale and a in axes:
                meta[f"PhysicalSize{a}"] = scale[a]
                meta[f"PhysicalSize{a}Unit"] = "µm" if unit in (None, "um") else unit
        if "T" in scale and "T" in axes:
            meta["TimeIncrement"] = scale["T"]
        tifffile.imwrite(target, labels.astype(dtype), ome=True, metadata=meta, compression="zlib")
    elif suffix == ".zarr":
        import zarr

        group = zarr.open_group(str(target), mode="w", zarr_format=2)
        chunks = tuple(
            1 if a in "TZ" else min(1024, n) for a, n in zip(axes, labels.shape, strict=True)
        )
        array = group.create_array(
            "0", shape=labels.shape, dtype=dtype, chunks=chunks, fill_value=0
        )
        array[...] = labels.astype(dtype)
        kinds = {"T": "time", "Z": "space", "Y": "space", "X": "space"}
        axes_meta = []
        for a in axes:
            entry = {"name": a.lower(), "type": kinds[a]}
            if kinds[a] == "space" and unit in ome_unit:
                entry["unit"] = ome_unit[unit]
            axes_meta.append(entry)
        transform = [{"type": "scale", "scale": [float(scale.get(a, 1.0)) for a in axes]}]
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": "labels",
                "axes": axes_meta,
                "datasets": [{"path": "0", "coordinateTransformations": transform}],
            }
        ]
    else:
        raise InputError(
            f"A stack's labels are written as .tif (OME-TIFF) or .zarr (OME-Zarr), not "
            f"{suffix!r} ({target})."
        )


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
        Files and folders the run reads: an output may never be one of them, hold one
        (a folder output replaces its contents) or lie inside an input store.
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
        seen: dict[Path, tuple[str, Path]] = {}
        sources = [(p, p.resolve()) for p in self.inputs if p.exists() or p.is_symlink()]
        for name, path in self.paths.items():
            what = flags.get(name, name)
            if len(path.name.encode()) > 255:
                raise InputError(
                    f"{what} {path}: the file name is {len(path.name.encode())} bytes long; "
                    "file systems allow 255. Choose a shorter name."
                )
            if path.is_dir() and not is_store(path):
                raise InputError(f"{what} {path} is a folder; give a file name.")
            resolved = path.resolve()
            for source, real in sources:
                if resolved == real:
                    raise InputError(
                        f"{what} {path} is also an input: refusing to write over it. "
                        "Choose another output name."
                    )
                if _within(real, resolved):
                    raise InputError(
                        f"{what} {path} holds the input {source}: writing it would delete "
                        "the input. Choose another output name."
                    )
                if is_store(real) and _within(resolved, real):
                    raise InputError(
                        f"{what} {path} lies inside the input {source}: refusing to write "
                        "into an input. Choose another output name."
                    )
            for other, (other_what, other_path) in seen.items():
                if resolved == other:
                    raise InputError(f"{what} and {other_what} are the same file ({path}).")
                if _within(resolved, other) or _within(other, resolved):
                    inner, outer = (
                        (what, other_what) if _within(resolved, other) else (other_what, what)
                    )
                    raise InputError(
                        f"{inner} lies inside {outer} ({path} and {other_path}): give each "
                        "output its own place."
                    )
            seen[resolved] = (what, path)
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
        """Write every output through ``writers[name](temporary_path)``, then put all in
        place together.

        Each output is staged beside its final place (a zarr store as a whole folder);
        only when every one is complete are the old versions moved aside and the new
        ones moved in. Any failure (or Ctrl-C) before that leaves every output as it
        was; a failure while moving them in puts the old versions back. The exception
        propagates (an ``OSError`` as an :class:`InputError` saying what happened).
        """
        temps: dict[str, Path] = {}
        try:
            for name, path in self.paths.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                temps[name] = staging_path(path)
                writers[name](temps[name])
                readable(temps[name])
            _swap_in({path: temps[name] for name, path in self.paths.items()})
            temps.clear()
        except OSError as exc:
            names = ", ".join(str(p) for p in self.paths.values())
            raise InputError(
                f"Could not write {names} ({exc.strerror or exc}); nothing was written."
            ) from None
        finally:
            for tmp in temps.values():
                remove(tmp)
        return list(self.paths.values())


def _swap_in(staged: dict[Path, Path]) -> None:
    """Move every staged output to its place, old versions aside first; on failure
    undo what was done, or say exactly what could not be undone."""
    moved_aside: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for path, tmp in staged.items():
            if path.exists() or path.is_symlink():
                name = f"{TEMP_PREFIX}{path.name[:40]}.{secrets.token_hex(4)}.old"
                backup = path.with_name(name)
                os.replace(path, backup)
                moved_aside[path] = backup
            os.replace(tmp, path)
            placed.append(path)
    except BaseException as exc:
        lost = []
        for path in placed:
            remove(path)
        for path, backup in moved_aside.items():
            try:
                os.replace(backup, path)
            except OSError:
                lost.append(f"{path} (its old version is at {backup})")
        if lost:
            raise InputError(
                f"Writing the outputs failed ({exc}) after replacing {', '.join(lost)}; "
                "move the old version back by hand."
            ) from None
        raise
    for backup in moved_aside.values():
        remove(backup)


#: Our own temporaries only: a user's hidden ``.notes.20241201.part`` is theirs.
_STALE = re.compile(r"^" + re.escape(TEMP_PREFIX) + r".+\.[a-z0-9_]{8}\.part$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders an interrupted run left under ``folder``
    (``.slip-NAME.XXXXXXXX.part``, which napari-slip writes and renames when
    complete). Files of any other name are never touched.

    Returns what was removed. Old versions kept aside while outputs are swapped in
    (``.old``) are never removed: after a crash at that moment they are the only copy.
    """
    removed = []
    for root, dirs, files in os.walk(folder):
        for name in [*files, *dirs]:
            if _STALE.match(name):
                target = Path(root) / name
                remove(target)
                removed.append(target)
        dirs[:] = [d for d in dirs if not _STALE.match(d) and not d.lower().endswith(".zarr")]
    return removed


def _within(inner: Path, outer: Path) -> bool:
    """Whether resolved ``inner`` lies inside resolved ``outer`` (not equal to it)."""
    return outer in inner.parents


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a folder ending in .zarr)."""
    return Path(path).suffix.lower() == ".zarr"
