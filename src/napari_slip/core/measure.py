"""The measurements a scientist reports per object: size (pixels, voxels, and physical
units where pixel sizes are known), centroid, extent, and the mean and maximum intensity
of every channel of the original image (not the 8-bit image the models see).

Read block by block (planes of a stack, bands of rows of a plane), so a label image in a
zarr store is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .object_rows import RowCache, digest, objects_of

#: Pixels read at once (a band of rows of one plane), unless the arrays are chunked.
BAND_PIXELS = 2**16


def _band_rows(shape: tuple[int, ...], *arrays) -> int:
    for array in arrays:
        chunks = getattr(array, "chunks", None)
        if chunks is not None and all(isinstance(c, int) for c in chunks):
            return max(1, int(chunks[len(shape) - 2]))  # whole chunks: each read once
    return max(1, BAND_PIXELS // max(1, shape[-1]))


def _blocks(shape: tuple[int, ...], rows: int):
    """Slices of ``shape``: one plane of the leading axes, a band of its rows."""
    import itertools

    for lead in itertools.product(*(range(n) for n in shape[:-2])):
        for y in range(0, shape[-2], rows):
            yield (*(slice(i, i + 1) for i in lead), slice(y, min(shape[-2], y + rows)))


def size_column(letters: str, unit: str | None) -> str:
    """The physical size column's name: ``area_um2`` in a plane, ``volume_um3`` with Z."""
    n = sum(a in letters for a in "ZYX")
    name = "volume" if n == 3 else "area"
    return f"{name}_{unit}{n}" if unit else f"{name}_physical"


def intensity_columns(n_channels: int) -> list[str]:
    if n_channels == 1:
        return ["mean_intensity", "max_intensity"]
    cols = []
    for c in range(n_channels):
        cols += [f"mean_intensity_c{c}", f"max_intensity_c{c}"]
    return cols


def measure(
    labels,
    image=None,
    letters: str = "YX",
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
) -> pd.DataFrame:
    """One row per id of ``labels`` (ids > 0 present in it), indexed by id.

    Parameters
    ----------
    labels
        Integer label array (numpy, or zarr/dask read block by block) whose axes are
        ``letters`` (e.g. ``"YX"``, ``"ZYX"``).
    image
        The original image: the labels' shape, plus a trailing channel (or RGB) axis for
        several channels. None: no intensity columns.
    letters
        The labels' axes, one letter each.
    scale, unit
        Pixel sizes per axis letter and their unit: physical size columns where every
        spatial axis has one.

    Returns
    -------
    pandas.DataFrame
        ``area`` (pixels, or voxels with a Z axis), the physical size where known,
        ``centroid_<axis>`` (pixels), ``bbox_<axis>0/1`` (exclusive ends), ``n_planes``
        with a Z axis, and ``mean_intensity``/``max_intensity`` (``_c<i>`` per channel).
    """
    from scipy import ndimage

    shape = tuple(int(s) for s in labels.shape)
    letters = letters.upper()
    if len(letters) != len(shape):
        raise ValueError(f"letters {letters!r} do not match labels of shape {shape}")
    n_ch = 0
    if image is not None:
        extra = len(image.shape) - len(shape)
        n_ch = 1 if extra == 0 else int(image.shape[-1])
    top = 0
    sizes = np.zeros(1, dtype=np.int64)
    sums = [np.zeros(1) for _ in shape]
    lo = [np.zeros(1, dtype=np.int64) for _ in shape]
    hi = [np.zeros(1, dtype=np.int64) for _ in shape]
    isum = [np.zeros(1) for _ in range(n_ch)]
    imax = [np.zeros(1) for _ in range(n_ch)]

    def grow(n):
        nonlocal sizes, top
        if n <= top:
            return
        pad = n - top

        def ext(a, fill):
            return np.concatenate([a, np.full(pad, fill, dtype=a.dtype)])

        sizes = ext(sizes, 0)
        for k in range(len(shape)):
            sums[k] = ext(sums[k], 0)
            lo[k] = ext(lo[k], np.iinfo(np.int64).max)
            hi[k] = ext(hi[k], -1)
        for c in range(n_ch):
            isum[c] = ext(isum[c], 0)
            imax[c] = ext(imax[c], -np.inf)
        top = n

    slots = _Slots() if _sparse_ids(labels) else None
    for block in _blocks(shape, _band_rows(shape, labels, image)):
        lab = np.asarray(labels[block]).astype(np.int64, copy=False)
        if not lab.any():
            continue
        if slots is not None:  # ids up to 2^63: one slot per id present, not per id
            lab = slots.of(lab)
        starts = [sl.start for sl in block] + [0]
        grow(int(lab.max()))
        flat = lab.ravel()
        counts = np.bincount(flat, minlength=top + 1)
        sizes += counts
        present = np.flatnonzero(counts[1:]) + 1
        boxes = ndimage.find_objects(lab, max_label=top)
        for i in present:
            box = boxes[i - 1]
            for k, sl in enumerate(box):
                lo[k][i] = min(lo[k][i], sl.start + starts[k])
                hi[k][i] = max(hi[k][i], sl.stop + starts[k])
        # Only the objects' pixels are read (a few objects on a big image: little work).
        where = np.flatnonzero(flat)
        owner = flat[where]
        position = np.unravel_index(where, lab.shape)
        for k in range(len(shape)):
            coords = position[k].astype(np.float64) + starts[k]
            sums[k] += np.bincount(owner, weights=coords, minlength=top + 1)
        if n_ch:
            values = np.asarray(image[block]).reshape(lab.size, n_ch)[where]
            values = values.astype(np.float64, copy=False)
            for c in range(n_ch):
                v = values[:, c]
                isum[c] += np.bincount(owner, weights=v, minlength=top + 1)
                np.maximum.at(imax[c], owner, v)  # no sort (ndimage's sorts)
    ids = np.flatnonzero(sizes[1:]) + 1
    if slots is not None:  # rows in the order of the labels' own ids
        ids = ids[np.argsort(slots.ids[ids - 1], kind="stable")]
    data: dict[str, np.ndarray] = {"area": sizes[ids]}
    scale = dict(scale or {})
    spatial = [a for a in letters if a in "ZYX"]
    if spatial and all(a in scale for a in spatial):
        factor = float(np.prod([scale[a] for a in spatial]))
        data[size_column(letters, unit)] = sizes[ids] * factor
    for k, a in enumerate(letters):
        data[f"centroid_{a.lower()}"] = sums[k][ids] / sizes[ids]
    for k, a in enumerate(letters):
        data[f"bbox_{a.lower()}0"] = lo[k][ids]
        data[f"bbox_{a.lower()}1"] = hi[k][ids]
    if "Z" in letters:
        k = letters.index("Z")
        data["n_planes"] = hi[k][ids] - lo[k][ids]
    names = intensity_columns(n_ch) if n_ch else []
    for c in range(n_ch):
        data[names[2 * c]] = isum[c][ids] / sizes[ids]
        data[names[2 * c + 1]] = imax[c][ids]
    index = ids if slots is None else slots.ids[ids - 1]
    return pd.DataFrame(data, index=pd.Index(index, name="id"))


def with_measurements(
    table: pd.DataFrame,
    labels,
    image=None,
    letters: str = "YX",
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
) -> pd.DataFrame:
    """``table`` (one row per id) joined with :func:`measure`'s columns and, for labels
    in memory, the shape columns (:func:`~.shape.shape_table`); its own columns that
    the measurement also has (``area``, the bbox) are replaced by the measured values,
    so the table's areas are what the labels carry."""
    if not len(table):
        return table
    in_memory = isinstance(labels, np.ndarray) and letters.upper() in ("YX", "ZYX")
    objects = list(objects_of(labels)) if in_memory else None  # listed once, for both
    if in_memory and (image is None or isinstance(image, np.ndarray)):
        measured = kept_measure(labels, image, letters, scale, unit, objects)
    else:  # a lazy image is read band by band, never an object's box at once
        measured = measure(labels, image, letters, scale, unit)
    if in_memory:
        from .shape import shape_table  # perimeter, solidity...; surface, sphericity...

        measured = measured.join(shape_table(labels, letters, scale, unit, objects))
    out = table.drop(columns=[c for c in measured.columns if c in table.columns])
    out = out.join(measured, on="id")
    first = [c for c in table.columns if c in out.columns or c in measured.columns]
    rest = [c for c in out.columns if c not in first]
    return out[first + rest].reset_index(drop=True)


#: :func:`measure`'s rows of objects in memory, kept by their pixels and image.
_KEPT = RowCache()
#: Fewer objects than this to measure: each in its box; more: the whole image at once.
_ONE_BY_ONE = 32


def kept_measure(
    labels: np.ndarray, image=None, letters="YX", scale=None, unit=None, objects=None
):
    """:func:`measure` of labels and an image in memory, each object's row kept by its
    box, its pixels and the image under it: a re-selection or an edit measures only
    the objects it changed (in their boxes), the others come back as they were."""
    letters = letters.upper()
    options = (letters, tuple(sorted(dict(scale or {}).items())), unit)
    objects = list(objects_of(labels)) if objects is None else objects
    keys = []
    for _, box, _, pixels in objects:
        under = b"" if image is None else digest(np.asarray(image[box]))
        keys.append((*options, tuple((b.start, b.stop) for b in box), pixels, under))

    def make(missing: list[int]) -> dict:
        if len(missing) > _ONE_BY_ONE:  # many: one pass over the image
            whole = measure(labels, image, letters, scale, unit)
            return {i: whole.loc[objects[i][0]] for i in missing}
        rows = {}
        for i in missing:
            label, box, mask, _ = objects[i]
            crop = np.where(mask, label, 0)
            sub = None if image is None else np.asarray(image[box])
            row = measure(crop, sub, letters, scale, unit).loc[label].copy()
            for k, a in enumerate(letters):  # the box's coordinates back in the image's
                start = box[k].start
                row[f"centroid_{a.lower()}"] += start
                row[f"bbox_{a.lower()}0"] += start
                row[f"bbox_{a.lower()}1"] += start
            rows[i] = row
        return rows

    rows = _KEPT.rows(keys, make)
    if not rows:
        return measure(labels, image, letters, scale, unit)
    out = pd.DataFrame(rows, index=pd.Index([label for label, *_ in objects], name="id"))
    counts = [c for c in out.columns if c in ("area", "n_planes") or c.startswith("bbox_")]
    return out.astype({c: np.int64 for c in counts})  # a row's values came as floats


#: Label ids above this (and above twice the pixels) are measured through slots.
SPARSE_IDS = 1 << 22


def _sparse_ids(labels) -> bool:
    """Whether ``labels`` may hold ids so large that one slot per possible id would
    not fit in memory (a 16-bit image never does)."""
    if np.dtype(labels.dtype).itemsize <= 2:
        return False
    top = int(np.max(labels)) if isinstance(labels, np.ndarray) else _max_by_block(labels)
    return top > max(SPARSE_IDS, 2 * int(np.prod(labels.shape)))


def _max_by_block(labels) -> int:
    top = 0
    for block in _blocks(tuple(labels.shape), _band_rows(tuple(labels.shape), labels, None)):
        top = max(top, int(np.max(np.asarray(labels[block]), initial=0)))
    return top


class _Slots:
    """Label ids as slots 1..n, in the order they are first seen (``ids[slot - 1]``)."""

    def __init__(self) -> None:
        self._slot: dict[int, int] = {}
        self._ids: list[int] = []

    def of(self, lab: np.ndarray) -> np.ndarray:
        present, inverse = np.unique(lab, return_inverse=True)
        slot = np.zeros(len(present), dtype=np.int64)
        for k, value in enumerate(present.tolist()):
            if value:
                if value not in self._slot:
                    self._ids.append(value)
                    self._slot[value] = len(self._ids)
                slot[k] = self._slot[value]
        return slot[inverse].reshape(lab.shape)

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self._ids, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Measuring:
    """How a result's objects are measured: the original image (channels last; None:
    no intensities), the pixel sizes and their unit. Candidates carry it from the run
    that made them, so that every result chosen from them (a run, a re-selection)
    comes back with the same columns."""

    image: object = None
    scale: Mapping[str, float] | None = None
    unit: str | None = None

    def table(self, table: pd.DataFrame, labels) -> pd.DataFrame:
        """``table`` with the measurements of ``labels`` (2D)."""
        return with_measurements(table, labels, self.image, "YX", self.scale, self.unit)


__all__ = ["Measuring", "intensity_columns", "measure", "size_column", "with_measurements"]
