"""Reading and writing images and label files for the command line and the datasets."""

from __future__ import annotations

import os
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

            return np.asarray(tifffile.imread(path))
        if suffix in _PIL:
            from PIL import Image

            with Image.open(path) as im:
                if im.mode in ("P", "CMYK", "YCbCr", "LA"):
                    im = im.convert(
                        "RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"
                    )
                return np.asarray(im)
    except Exception as exc:
        raise InputError(f"Could not read {path} ({type(exc).__name__}: {exc}).") from None
    raise InputError(f"Unsupported image type {suffix!r} for {path}: use .tif, .png or .jpg.")


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write a label image as tif (uint16 when ids fit, else uint32) or png (uint16 max)."""
    path = Path(path)
    suffix = path.suffix.lower()
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part" + suffix)
    if suffix in _TIFF:
        import tifffile

        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")
    elif suffix == ".png":
        if dtype != np.uint16:
            raise InputError(f"{labels.max()} labels do not fit a png; write a .tif instead.")
        from PIL import Image

        Image.fromarray(labels.astype(np.uint16)).save(tmp)
    else:
        raise InputError(f"Labels can be written as .tif or .png, not {suffix!r} ({path}).")
    os.replace(tmp, path)
    return path
