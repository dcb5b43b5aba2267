"""What each axis of an image is: time (T), depth (Z), channel (C), the plane (Y, X) and
colour samples (S), with pixel sizes where a file records them.

Axes come from a file's metadata where it has them (OME-TIFF, ImageJ TIFF, OME-Zarr:
:func:`read_axes`) or are given (``--axes ZYX``, ``axes="TZCYX"``). The engine works on
one layout, :func:`canonical`: the leading axes (T, then Z), the plane, and channels last.
Everything here is checked before any model work, with one line naming what is wrong.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

#: The axis letters understood, in the order the engine lays them out (C and S last).
LETTERS = "TZYXCS"
#: What each letter means, for messages.
MEANING = {
    "T": "time",
    "Z": "depth",
    "Y": "rows",
    "X": "columns",
    "C": "channels",
    "S": "colour samples (RGB)",
}
#: Examples shown when a stack's axes are unknown.
EXAMPLES = ("ZYX", "TYX", "TZYX", "CYX", "ZCYX", "TCZYX", "YXS")
#: Leading axes along which objects are the same object from one plane to the next.
LINKED = "ZT"


def describe_choices() -> str:
    return ", ".join(EXAMPLES)


def parse_axes(axes: Any, ndim: int | None = None, where: str = "axes") -> str:
    """``axes`` as upper-case letters, checked: known letters, none repeated, Y and X
    present (S only last), and as many as the array has dimensions (``ndim``)."""
    if not isinstance(axes, str) or not axes.strip():
        raise InputError(
            f"{where} must be a string of axis letters such as {describe_choices()}; got {axes!r}."
        )
    letters = axes.strip().upper()
    unknown = sorted({a for a in letters if a not in LETTERS})
    if unknown:
        raise InputError(
            f"{where}={axes!r}: unknown axis letter(s) {', '.join(unknown)}; use T (time), "
            "Z (depth), C (channels), Y, X and S (RGB samples), e.g. "
            f"{describe_choices()}."
        )
    repeated = sorted({a for a in letters if letters.count(a) > 1})
    if repeated:
        raise InputError(f"{where}={axes!r} repeats the axis {', '.join(repeated)}.")
    if "Y" not in letters or "X" not in letters:
        raise InputError(f"{where}={axes!r} needs both Y and X (the plane's rows and columns).")
    if "S" in letters and not letters.endswith("S"):
        raise InputError(f"{where}={axes!r}: S (RGB samples) must be the last axis.")
    if "S" in letters and "C" in letters:
        raise InputError(f"{where}={axes!r} has both C and S; give one colour axis.")
    if ndim is not None and len(letters) != ndim:
        raise InputError(
            f"{where}={axes!r} names {len(letters)} axes, but the image has {ndim} "
            f"dimension(s); give one letter per dimension."
        )
    return letters


def guess_axes(shape: Sequence[int], rgb: bool | None = None) -> str | None:
    """Axes of an array given without them, where that is not a guess: YX for 2D, YXS
    for a trailing 3 or 4 (unless ``rgb`` is False). None otherwise."""
    shape = tuple(shape)
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[-1] in (3, 4) and rgb is not False:
        return "YXS"
    return None


def need_axes(shape: Sequence[int]) -> InputError:
    """The one line for an array with more than a plane and no axes."""
    return InputError(
        f"An image of shape {tuple(int(s) for s in shape)} has more than one plane: say "
        f"what its axes are, e.g. axes='ZYX' (Python) or --axes ZYX (command line); "
        f"choices: {describe_choices()} (T time, Z depth, C channels, S RGB samples)."
    )


@dataclass(frozen=True)
class ImageAxes:
    """An image's axes and, where known, its pixel sizes.

    Attributes
    ----------
    letters
        One letter per array dimension (see :data:`LETTERS`).
    scale
        Size of one step along an axis (``{"Z": 2.0, "Y": 0.5, "X": 0.5}``), in ``unit``
        for Z, Y and X and seconds (or the file's time unit) for T.
    unit
        The spatial unit (``"um"``, ``"nm"``...), or None.
    """

    letters: str
    scale: Mapping[str, float] = field(default_factory=dict)
    unit: str | None = None

    def __post_init__(self) -> None:
        letters = parse_axes(self.letters)
        object.__setattr__(self, "letters", letters)
        object.__setattr__(self, "scale", check_scale(self.scale, letters))
        if self.unit is not None:
            object.__setattr__(self, "unit", normalise_unit(self.unit))

    @property
    def lead(self) -> str:
        """The leading (non-plane, non-colour) axes in the engine's order (T before Z)."""
        return "".join(a for a in "TZ" if a in self.letters)

    @property
    def colour(self) -> str | None:
        return next((a for a in "CS" if a in self.letters), None)

    @property
    def label_letters(self) -> str:
        """The axes of the labels (the image's, without colour), in the engine's order."""
        return self.lead + "YX"


#: The largest pixel size taken (in any unit): a product of three stays finite.
MAX_PIXEL_SIZE = 1e9


def check_scale(scale: Any, letters: str) -> dict[str, float]:
    """Pixel sizes as ``{letter: size}``: a mapping, or a sequence with one size per
    axis of ``letters`` other than C and S. Each must be a finite number above 0."""
    if scale is None:
        return {}
    spatial = [a for a in letters if a not in "CS"]
    if isinstance(scale, Mapping):
        items = {str(k).upper(): v for k, v in scale.items()}
    elif isinstance(scale, Sequence) and not isinstance(scale, str):
        if len(scale) != len(spatial):
            raise InputError(
                f"pixel_size has {len(scale)} value(s), one per axis of {''.join(spatial)} "
                f"is needed ({len(spatial)})."
            )
        items = dict(zip(spatial, scale, strict=True))
    else:
        raise InputError(
            f"pixel_size must be a mapping such as {{'Z': 2, 'Y': 0.5}}; got {scale!r}."
        )
    out = {}
    for letter, value in items.items():
        if letter not in spatial:
            raise InputError(
                f"pixel_size gives axis {letter!r}, which the image's axes {letters} do not "
                "have (or is a colour axis)."
            )
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if not number or not math.isfinite(float(value)) or float(value) <= 0:
            raise InputError(
                f"The pixel size along {letter} is {value!r}: it must be a number above 0 "
                "(fix the file's metadata or give pixel_size / --pixel-size)."
            )
        if float(value) > MAX_PIXEL_SIZE:  # volumes would overflow to inf
            raise InputError(
                f"The pixel size along {letter} is {value!r}: at most {MAX_PIXEL_SIZE:g} "
                "(a pixel size in the image's unit; fix the file's metadata or give "
                "pixel_size / --pixel-size)."
            )
        out[letter] = float(value)
    return out


_UNITS = {
    "µm": "um",
    "μm": "um",
    "um": "um",
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
    "\\u00b5m": "um",
    "nm": "nm",
    "nanometer": "nm",
    "nanometre": "nm",
    "mm": "mm",
    "millimeter": "mm",
    "millimetre": "mm",
    "m": "m",
    "meter": "m",
    "metre": "m",
}


def normalise_unit(unit: Any) -> str | None:
    """A unit name as the short ascii form used in column names (``um``, ``nm``...)."""
    if unit is None:
        return None
    text = str(unit).strip()
    if not text or text.lower() in ("pixel", "pixels", "px"):
        return None
    short = _UNITS.get(text, _UNITS.get(text.lower()))
    if short:
        return short
    cleaned = "".join(ch for ch in text if ch.isascii() and ch.isalnum())
    return cleaned or None


def canonical(image: Any, axes: ImageAxes) -> tuple[Any, bool]:
    """``image`` laid out as the engine works on it: T, Z, then Y, X, then the colour
    axis; and whether it has a colour axis. A numpy array is reordered as a view; a lazy
    array (zarr, dask) stays lazy."""
    letters = axes.letters
    target = axes.lead + "YX" + (axes.colour or "")
    if letters == target:
        return image, axes.colour is not None
    order = [letters.index(a) for a in target]
    if isinstance(image, np.ndarray):
        return np.transpose(image, order), axes.colour is not None
    import dask.array as da

    return da.transpose(da.from_array(image, chunks=_plane_chunks(image)), order), (
        axes.colour is not None
    )


def _plane_chunks(image) -> tuple:
    chunks = getattr(image, "chunks", None)
    if chunks is not None and all(isinstance(c, int) for c in chunks):
        return tuple(chunks)
    return "auto"


def check_planes(shape: Sequence[int], axes: ImageAxes) -> None:
    """Refuse a stack whose planes are too small to segment, before any model work."""
    dims = dict(zip(axes.letters, (int(s) for s in shape), strict=True))
    if any(v == 0 for v in dims.values()):
        raise InputError(f"The image is empty (shape {tuple(int(s) for s in shape)}).")
    if axes.lead and min(dims["Y"], dims["X"]) < 2:  # a plane's own checks come later
        n = math.prod(dims[a] for a in axes.lead) if axes.lead else 1
        raise InputError(
            f"Each plane is {dims['Y']} x {dims['X']} pixel(s) ({n} plane(s)): too small to "
            f"segment. Are the axes {axes.letters!r} right?"
        )


def read_axes(path: str | os.PathLike, replaced: str = "") -> ImageAxes | None:
    """The axes and pixel sizes a file records (OME-TIFF, ImageJ TIFF, OME-Zarr), or None
    where it records none this module understands. The sizes along ``replaced`` (the
    letters the user gives sizes for) are not read: a wrong one there is replaced, not
    refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff") and path.is_file():
            return _tiff_axes(path, replaced)
        if suffix == ".zarr" and path.is_dir():
            return _zarr_axes(path, replaced)
    except InputError:
        raise
    except Exception:  # unreadable metadata is no metadata: the image itself is read later
        return None
    return None


def _tiff_axes(path: Path, replaced: str = "") -> ImageAxes | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not (tif.is_ome or tif.is_imagej):
            # A plain TIFF records no axes: tifffile's letters are its guesses (three or
            # four planes become planar RGB samples, "SYX"); the image's own shape
            # decides, as for any file without axes.
            return None
        series = tif.series[0]
        letters = series.axes.upper()
        if any(a not in LETTERS for a in letters):
            return None
        scale: dict[str, float] = {}
        unit = None
        if tif.is_ome and tif.ome_metadata:
            scale, unit = _ome_xml_scale(tif.ome_metadata)
        elif tif.is_imagej:
            meta = tif.imagej_metadata or {}
            unit = meta.get("unit")
            page = series.pages[0] if series.pages else tif.pages[0]
            for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
                res = page.tags.get(tag)
                if res is not None:
                    num, den = res.value
                    if num and den and (num / den) != 1:
                        scale[letter] = den / num
            if meta.get("spacing") and "Z" in letters:
                scale["Z"] = float(meta["spacing"])
            if meta.get("finterval") and "T" in letters:
                scale["T"] = float(meta["finterval"])
            if not scale:
                unit = None
        scale = {k: v for k, v in scale.items() if k in letters and k not in replaced}
        return ImageAxes(letters, scale, unit)


def _ome_xml_scale(xml: str) -> tuple[dict[str, float], str | None]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}, None
    scale, unit = {}, None
    for letter in "XYZ":
        value = pixels.get(f"PhysicalSize{letter}")
        if value is not None:
            scale[letter] = float(value)
            unit = unit or pixels.get(f"PhysicalSize{letter}Unit", "µm")
    if pixels.get("TimeIncrement") is not None:
        scale["T"] = float(pixels.get("TimeIncrement"))
    return scale, unit


def _zarr_axes(path: Path, replaced: str = "") -> ImageAxes | None:
    import zarr

    node = zarr.open(str(path), mode="r")
    attrs = dict(node.attrs)
    meta = attrs.get("ome", attrs)
    multiscales = meta.get("multiscales")
    if not multiscales:
        return None
    first = multiscales[0]
    names = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", [])]
    letters = "".join(str(n).upper() for n in names)
    if not letters:
        return None
    if (
        not letters
        or any(len(str(n)) != 1 for n in names)
        or any(a not in LETTERS for a in letters)
    ):
        return None
    scale, unit = {}, None
    datasets = first.get("datasets") or []
    for transform in (datasets[0].get("coordinateTransformations") or []) if datasets else []:
        if transform.get("type") == "scale":
            for letter, value in zip(letters, transform.get("scale", []), strict=False):
                if letter not in "CS" and value != 1 and letter not in replaced:
                    scale[letter] = value
    for a in first.get("axes", []):
        if isinstance(a, dict) and a.get("type") == "space" and a.get("unit"):
            unit = a["unit"]
    return ImageAxes(letters, scale, unit if scale else None)


def _with_channel(shape: tuple[int, ...], channel_axis: Any) -> str:
    """YX with C at ``channel_axis`` of a 3D image (the old ``channel_axis=`` option)."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise InputError(f"channel_axis must be an axis number; got {channel_axis!r}.")
    if len(shape) != 3:
        raise InputError(
            f"channel_axis={channel_axis} needs a 3D (channels + 2D) image; got shape "
            f"{shape}. For a stack, give its axes instead, e.g. axes='ZCYX'."
        )
    if not -3 <= channel_axis < 3:
        raise InputError(
            f"channel_axis={channel_axis} does not exist: the image has 3 axes (shape "
            f"{shape}); use 0, 1 or 2."
        )
    letters = ["Y", "X"]
    letters.insert(int(channel_axis) % 3, "C")
    return "".join(letters)


def _given_letters(pixel_size: Any) -> str:
    """The axes ``pixel_size`` gives sizes for (every one for a sequence)."""
    if pixel_size is None:
        return ""
    if isinstance(pixel_size, Mapping):
        return "".join(str(k).upper() for k in pixel_size)
    return "TZYX"


def resolve_axes(
    shape: Sequence[int],
    axes: str | ImageAxes | None = None,
    *,
    path: str | os.PathLike | None = None,
    pixel_size: Any = None,
    rgb: bool | None = None,
    channel_axis: int | None = None,
) -> ImageAxes:
    """An image's axes: those given, else its file's, else the obvious ones of a plane
    (YX, YXS, or a channel axis given); a stack without any is refused with the choices.
    ``pixel_size`` replaces the file's pixel sizes where given (micrometres, unless the
    file names another unit)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise InputError(
            f"The image has {len(shape)} axis (shape {shape}): an image to segment needs "
            "rows and columns (at least 2 axes)."
        )
    found = (
        read_axes(path, _given_letters(pixel_size)) if path is not None and axes is None else None
    )
    if isinstance(axes, ImageAxes):
        result = axes
    elif axes is not None:
        result = ImageAxes(parse_axes(axes, len(shape)))
    elif found is not None and len(found.letters) == len(shape):
        result = found
    elif channel_axis is not None:
        result = ImageAxes(_with_channel(shape, channel_axis))
    else:
        guessed = guess_axes(shape, rgb)
        if guessed is None:
            raise need_axes(shape)
        result = ImageAxes(guessed)
    parse_axes(result.letters, len(shape))
    if pixel_size is not None:  # given sizes are in micrometres unless the file says
        scale = {**result.scale, **check_scale(pixel_size, result.letters)}
        result = ImageAxes(result.letters, scale, result.unit or "um")
    check_planes(shape, result)
    return result


__all__ = [
    "EXAMPLES",
    "LETTERS",
    "LINKED",
    "ImageAxes",
    "canonical",
    "check_planes",
    "check_scale",
    "guess_axes",
    "need_axes",
    "normalise_unit",
    "parse_axes",
    "read_axes",
    "resolve_axes",
]
