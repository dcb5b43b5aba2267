"""An image's axes known in the dock: read from its file when napari's reader drops
them, or said when they are assumed, with a one-click switch.

napari's own TIFF reader opens an ImageJ TYX or an OME CZYX file as plain arrays with
axes "-3", "-2", "-1" and a scale of 1. Where the layer's file (``layer.source.path``)
records its axes and pixel sizes (OME, ImageJ ``axes``/``spacing``/``unit``, OME-Zarr),
the layer's axes are named after it (napari's ``axis_labels``: what the dock and the
viewer read) and, where napari left its scale at 1, its pixel sizes set. Where nothing
names a leading axis, the status line says what is assumed ("axis 0 (30 planes) is
treated as Z (depth)") and one button switches it (to time, or, for 2-4 planes, to
channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.axes import read_axes

#: A leading axis of at most this many planes may be channels (offered, never chosen).
MAX_CHANNELS = 4
#: napari's names for axes no reader named.
_UNNAMED = {"-1", "-2", "-3", "-4", "-5", "-6"}


@dataclass(frozen=True)
class Assumption:
    """What the dock assumes of an image's first leading axis, and the switch."""

    line: str
    #: The button's text, and what it does: "time" (name the axis t) or "channels".
    switch: str
    action: str


def unnamed(layer) -> bool:
    """Whether no reader named the layer's axes."""
    labels = [str(a) for a in getattr(layer, "axis_labels", ())]
    return bool(labels) and all(a in _UNNAMED for a in labels)


def adopt_file_axes(layer) -> str | None:
    """Name ``layer``'s axes (and pixel sizes, where napari left them at 1) after its
    file's metadata, when napari's reader dropped them. Returns a line saying what
    was read, or None (named already, no file, or nothing recorded)."""
    if layer is None or not unnamed(layer):
        return None
    path = getattr(getattr(layer, "source", None), "path", None)
    if not path:
        return None
    try:
        axes = read_axes(path)
    except Exception:  # a file we cannot read names nothing: the assumption is said
        return None
    if axes is None or len(axes.letters) != layer.ndim or "S" in axes.letters:
        return None
    layer.axis_labels = tuple(a.lower() for a in axes.letters)
    said = f"Axes {axes.letters} read from {Path(path).name}"
    if axes.scale and np.allclose(layer.scale, 1.0):
        layer.scale = [float(axes.scale.get(a, 1.0)) for a in axes.letters]
        sizes = ", ".join(f"{a} {v:g}" for a, v in axes.scale.items() if a != "T")
        said += f" (pixel sizes {sizes} {axes.unit or ''})".replace(" )", ")")
    return said + "."


def assumption(layer) -> Assumption | None:
    """What is assumed of an unnamed image's first leading axis (None: nothing to
    say: RGB, 2D, or its axes named)."""
    if layer is None or getattr(layer, "rgb", False) or layer.ndim < 3 or not unnamed(layer):
        return None
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    planes = int(data.shape[0])
    if planes <= MAX_CHANNELS and layer.ndim == 3:
        line = f"Axis 0 ({planes} planes) is treated as Z (depth); channels?"
        return Assumption(line, "Axis 0 is read as Z: use it as channels", "channels")
    line = f"Axis 0 ({planes} planes) is treated as Z (depth); name it t for time."
    return Assumption(line, "Axis 0 is read as Z: treat it as time", "time")


def name_time(layer) -> None:
    """The switch to time: axis 0 named ``t`` (napari's axis label; the dock reads it)."""
    labels = list(layer.axis_labels)
    labels[0] = "t"
    layer.axis_labels = tuple(labels)


__all__ = ["MAX_CHANNELS", "Assumption", "adopt_file_axes", "assumption", "name_time", "unnamed"]
