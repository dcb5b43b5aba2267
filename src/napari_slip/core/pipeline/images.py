"""Turning scientific images into the 8-bit RGB that SAM and CLIP see.

Handles 2D grayscale, RGB, RGBA and multichannel images (up to three chosen channels
mapped to R, G, B) in uint8, uint16, other integers and floats. Intensities are
stretched per channel between percentiles (default) or explicit contrast limits
(napari passes its own). The exact normalisation is recorded for provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

DEFAULT_PERCENTILES = (1.0, 99.8)


@dataclass
class PreparedImage:
    """An image ready for the models.

    Attributes
    ----------
    rgb
        (H, W, 3) uint8.
    normalisation
        How intensities were mapped: method, per-channel limits, channels used.
    """

    rgb: np.ndarray
    normalisation: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    def read(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        """The RGB pixels of a region (every ``step``-th pixel)."""
        return self.rgb[y0:y1:step, x0:x1:step]

    @property
    def mean_rgb(self) -> np.ndarray:
        """The image's mean colour (uint8 RGB)."""
        return self.rgb.reshape(-1, 3).mean(0).round().astype(np.uint8)


def _describe_shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def prepare_image(
    image: np.ndarray,
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channels: tuple[int, ...] | list[int] | None = None,
    contrast_limits: tuple[float, float] | list | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> PreparedImage:
    """Map an image to (H, W, 3) uint8 RGB.

    Parameters
    ----------
    image
        2D (grayscale), (H, W, 3) RGB, (H, W, 4) RGBA, or a multichannel image whose
        channel axis is ``channel_axis``.
    rgb
        Whether a trailing axis of 3 or 4 is colour. ``None`` guesses: yes if the last
        axis is 3 or 4 long and no ``channel_axis`` is given.
    channel_axis
        The channel axis of a multichannel image (e.g. 0 for (C, H, W)).
    channels
        Up to three channel indices to show as R, G, B (default: the first three; one
        channel is shown as gray).
    contrast_limits
        ``(low, high)`` applied to every channel, or one pair per chosen channel.
        Overrides ``percentiles``.
    percentiles
        Per-channel low/high percentiles used when no contrast limits are given.
        uint8 colour images are used as they are unless limits are given.

    Raises
    ------
    InputError
        For shapes that are not a 2D image (with the shape in the message).
    """
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"Images must be numeric; got dtype {arr.dtype}.")
    if arr.ndim == 0 or arr.size == 0:
        raise InputError(f"The image is empty (shape {_describe_shape(arr.shape)}).")

    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise InputError(f"channel_axis must be an axis number; got {channel_axis!r}.")
        if arr.ndim == 3 and not -3 <= channel_axis < 3:
            raise InputError(
                f"channel_axis={channel_axis} does not exist: the image has 3 axes "
                f"(shape {_describe_shape(arr.shape)}); use 0, 1 or 2."
            )
        if arr.ndim != 3:
            raise InputError(
                f"channel_axis={channel_axis} needs a 3D (channels + 2D) image; got shape "
                f"{_describe_shape(arr.shape)}. Pass a single 2D plane of z-stacks or time series."
            )
        arr = np.moveaxis(arr, channel_axis, -1)
        kind = "multichannel"
    elif arr.ndim == 2:
        arr = arr[..., None]
        kind = "grayscale"
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4) and rgb is not False:
        if arr.shape[-1] == 4:
            arr = arr[..., :3]  # alpha carries no object information for SAM/CLIP
        kind = "rgb"
    else:
        raise InputError(
            f"Cannot segment an image of shape {_describe_shape(arr.shape)}: expected 2D (H, W), "
            "RGB/RGBA (H, W, 3|4), or a multichannel image with channel_axis set. "
            "For z-stacks or time series, segment one 2D plane at a time."
        )
    if min(arr.shape[:2]) < 2:
        raise InputError(f"The image is too small to segment: shape {_describe_shape(arr.shape)}.")

    n_channels = arr.shape[-1]
    if channels is None:
        chosen = list(range(min(3, n_channels))) if kind != "grayscale" else [0]
    else:
        chosen = [int(c) for c in channels]
        if not 1 <= len(chosen) <= 3:
            raise InputError(f"Choose one to three channels to map to RGB; got {len(chosen)}.")
        bad = [c for c in chosen if not -n_channels <= c < n_channels]
        if bad:
            raise InputError(
                f"Channel {bad[0]} does not exist: the image has {n_channels} channels "
                f"(shape {_describe_shape(np.asarray(image).shape)})."
            )
    planes = arr[..., chosen]

    if contrast_limits is not None:
        limits = np.asarray(contrast_limits, dtype=np.float64)
        if limits.shape == (2,):
            limits = np.tile(limits, (len(chosen), 1))
        if limits.shape != (len(chosen), 2):
            raise InputError(
                "contrast_limits must be (low, high) or one pair per channel; "
                f"got {contrast_limits!r}."
            )
        if not np.isfinite(limits).all() or (limits[:, 0] >= limits[:, 1]).any():
            raise InputError(
                f"contrast_limits must be finite with low < high; got {contrast_limits!r} "
                "(the models would see a blank image)."
            )
        method = "contrast_limits"
    elif kind == "rgb" and arr.dtype == np.uint8:
        limits = np.tile([0.0, 255.0], (len(chosen), 1))
        method = "none (uint8 RGB)"
    else:
        lo, hi = percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(
                f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles!r}."
            )
        limits = np.empty((len(chosen), 2))
        for i in range(len(chosen)):
            plane = planes[..., i]
            finite = (
                plane[np.isfinite(plane)] if np.issubdtype(plane.dtype, np.floating) else plane
            )
            if finite.size == 0:
                limits[i] = (0.0, 1.0)
            else:
                limits[i] = np.percentile(finite, (lo, hi))
        method = f"percentiles {lo}-{hi}"

    return PreparedImage(
        rgb=_to_uint8(planes, limits),
        normalisation={
            "kind": kind,
            "dtype": str(np.asarray(image).dtype),
            "method": method,
            "channels": chosen,
            "limits": limits.round(6).tolist(),
        },
    )


def _to_uint8(planes: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """(H, W, C) intensities -> (H, W, 3) uint8 with per-channel (low, high) limits."""
    out = np.empty((*planes.shape[:2], planes.shape[-1]), dtype=np.uint8)
    for i in range(planes.shape[-1]):
        low, high = float(limits[i, 0]), float(limits[i, 1])
        scale = 255.0 / (high - low) if high > low else 0.0
        plane = planes[..., i].astype(np.float32)
        np.nan_to_num(plane, copy=False, nan=low, posinf=high, neginf=low)
        out[..., i] = np.clip((plane - low) * scale, 0, 255).round().astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=-1)
    return np.ascontiguousarray(out)


#: About how many pixels a lazy image's intensity sample has (read strided).
SAMPLE_PIXELS = 4_000_000
#: About how many pixels one strip of a lazy image's content hash has.
KEY_STRIP_PIXELS = 2**22


def is_lazy(image) -> bool:
    """Whether ``image`` is an array read on demand (dask, zarr, memmap...), not numpy."""
    return (
        not isinstance(image, (np.ndarray, LazyImage))
        and hasattr(image, "shape")
        and hasattr(image, "__getitem__")
        and hasattr(image, "dtype")
    )


class LazyImage:
    """A large 2D image read region by region, never whole.

    Wraps anything sliceable with a shape and dtype: a dask array (napari's lazy
    layers), a zarr array (one multiscale level), a numpy memmap. Intensity limits
    come from a strided sample of the image (or from ``contrast_limits``), so every
    region is normalised the same way; :meth:`read` returns a region as the uint8 RGB
    the models see. The content hash is computed strip by strip (memory bounded by
    a strip, not the image).

    Parameters
    ----------
    data
        The image: 2D, RGB/RGBA (H, W, 3|4), or 3D with ``channel_axis``.
    sample_pixels
        About how many pixels the intensity sample has (default
        :data:`SAMPLE_PIXELS`).
    **normalisation
        As for :func:`prepare_image`.
    """

    def __init__(
        self,
        data,
        *,
        rgb: bool | None = None,
        channel_axis: int | None = None,
        channels=None,
        contrast_limits=None,
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        sample_pixels: int | None = None,
    ) -> None:
        if isinstance(data, LazyImage):
            data = data.data
        self.data = data
        shape = tuple(int(s) for s in data.shape)
        if channel_axis is not None and len(shape) == 3 and -3 <= channel_axis < 3:
            self._spatial = [a for a in range(3) if a != channel_axis % 3]
        else:
            self._spatial = [0, 1]
        h, w = (shape[a] for a in self._spatial) if len(shape) >= 2 else (0, 0)
        sample_pixels = SAMPLE_PIXELS if sample_pixels is None else sample_pixels
        step = max(1, int(np.ceil(np.sqrt(h * w / max(1, sample_pixels))))) if h * w else 1
        self._options = {"rgb": rgb, "channel_axis": channel_axis, "channels": channels}
        # Validates every option (and the shape) on the sample, with prepare_image's words.
        sample = prepare_image(
            np.asarray(data[self._index(0, 0, h, w, step)]),
            contrast_limits=contrast_limits,
            percentiles=percentiles,
            **self._options,
        )
        self._shape = (h, w)
        self._kind = sample.normalisation["kind"]
        self._chosen = sample.normalisation["channels"]
        self._limits = np.asarray(sample.normalisation["limits"], dtype=np.float64)
        self.normalisation = dict(sample.normalisation, sampled_every=step)
        self.mean_rgb = sample.mean_rgb
        self._key: str | None = None

    def _index(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> tuple:
        index = [slice(None)] * len(self.data.shape)
        index[self._spatial[0]] = slice(y0, y1, step)
        index[self._spatial[1]] = slice(x0, x1, step)
        return tuple(index)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def read(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        """A region as (h, w, 3) uint8 RGB, normalised like the whole image."""
        arr = np.asarray(self.data[self._index(y0, x0, y1, x1, step)])
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        axis = self._options["channel_axis"]
        if axis is not None:
            arr = np.moveaxis(arr, axis, -1)
        elif arr.ndim == 2:
            arr = arr[..., None]
        return _to_uint8(arr[..., self._chosen], self._limits)

    @property
    def rgb(self) -> np.ndarray:
        """The whole image in memory (for images small enough to hold)."""
        return self.read(0, 0, *self._shape)

    @property
    def key(self) -> str:
        """A content hash of the pixels and the normalisation, read strip by strip."""
        if self._key is None:
            import hashlib

            h = hashlib.blake2b(digest_size=16)
            h.update(repr((self.data.shape, str(self.data.dtype), self.normalisation)).encode())
            strip = max(1, KEY_STRIP_PIXELS // max(1, self._shape[1]))
            for y in range(0, self._shape[0], strip):
                part = np.ascontiguousarray(
                    np.asarray(self.data[self._index(y, 0, y + strip, self._shape[1])])
                )
                h.update(part.data)
            self._key = h.hexdigest()
        return self._key


class PlaneView:
    """One plane of a lazy nD array, still lazy: ``view[index]`` reads only that
    region of the plane (indexing a zarr array by a plane would read it whole)."""

    def __init__(self, data, plane: tuple[int, ...]) -> None:
        self.data, self.plane = data, tuple(plane)
        self.shape = tuple(data.shape[len(self.plane) :])
        self.dtype = data.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        return self.data[self.plane + index]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.asarray(self.data[self.plane])
        return out if dtype is None else out.astype(dtype, copy=False)


def plane_of(image, plane: tuple[int, ...]):
    """Plane ``plane`` of ``image``: in memory for numpy-like inputs, a lazy view of a
    lazy one (dask, zarr), so a tiled run reads it region by region."""
    if is_lazy(image):
        return image if not plane else PlaneView(image, plane)
    return np.asarray(image[plane])
