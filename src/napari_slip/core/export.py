"""Objects as the tools microscopists use read them: QuPath's GeoJSON (one polygon
feature per object and plane, with its measurements and class) and ImageJ ROIs (a
``.zip`` of ``.roi`` files, Fiji's ROI Manager opens it).

Outlines follow the pixels' edges (a mask's contour at level 0.5, in the pixel-corner
coordinates QuPath and ImageJ use: pixel ``(row, col)`` covers ``[col, col+1) x [row,
row+1)``), so a polygon's area is within a pixel's width along its edge of the mask's
pixel count. Holes are interior rings; an object in several pieces a MultiPolygon.
Every file is written atomically (:class:`~napari_slip.core.io.Outputs`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

#: What :func:`export_objects` writes, by the file's suffix.
EXPORT_SUFFIXES = {".csv": "table", ".geojson": "geojson", ".json": "geojson", ".zip": "roi"}

Ring = list[tuple[float, float]]


def outlines(mask: np.ndarray) -> list[tuple[Ring, list[Ring]]]:
    """The polygons of a 2D boolean mask: ``(exterior, holes)`` per piece, as ``(x, y)``
    points in pixel-corner coordinates, closed (first point repeated last)."""
    from skimage.measure import find_contours, points_in_poly

    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    rings = []
    for contour in find_contours(padded, 0.5):
        if len(contour) < 4:
            continue
        # (row, col) of the padded array -> (x, y) corners of the original pixels.
        xy = np.column_stack([contour[:, 1] - 0.5, contour[:, 0] - 0.5])
        rings.append(xy)
    rings.sort(key=lambda r: -abs(_area(r)))
    pieces: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for ring in rings:
        inside = [p for p in pieces if points_in_poly(ring[:1], p[0])[0]]
        # Inside a piece and not inside one of its holes: a hole; else a new piece
        # (an island in a hole is a piece of its own).
        host = inside[-1] if inside else None
        if host is not None and not any(points_in_poly(ring[:1], h)[0] for h in host[1]):
            host[1].append(ring)
        else:
            pieces.append((ring, []))
    return [(_closed(ext), [_closed(h) for h in holes]) for ext, holes in pieces]


def _area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _closed(ring: np.ndarray) -> Ring:
    points = [(round(float(x), 3), round(float(y), 3)) for x, y in ring]
    if points[0] != points[-1]:
        points.append(points[0])
    return points


def _planes(labels: np.ndarray, axes: str) -> Iterator[tuple[dict, np.ndarray]]:
    """Each 2D plane of ``labels`` with where it is (``{"z": 3, "t": 0}``)."""
    lead = axes[:-2] if axes and len(axes) == labels.ndim else "Z" * (labels.ndim - 2)
    if labels.ndim == 2:
        yield {}, labels
        return
    for index in np.ndindex(*labels.shape[:-2]):
        yield {a.lower(): int(i) for a, i in zip(lead, index, strict=True)}, labels[index]


def _boxes(plane: np.ndarray) -> dict[int, tuple[slice, slice]]:
    """Each label's box (labels numbered in order first: ids may be huge)."""
    from scipy import ndimage

    ids, order = np.unique(plane, return_inverse=True)
    shift = 0 if ids[0] == 0 else 1  # find_objects counts from 1: 0 is background
    boxes = ndimage.find_objects(order.reshape(plane.shape) + shift)
    out = {}
    for value, box in enumerate(boxes, start=1):
        label = int(ids[value - shift])
        if box is not None and label:
            out[label] = box
    return out


def _objects(labels: np.ndarray, axes: str):
    """``(where, label, mask crop, (y0, x0))`` of every object in every plane."""
    for where, plane in _planes(np.asarray(labels), axes):
        plane = np.asarray(plane)
        if not plane.any():
            continue
        for label, (ys, xs) in _boxes(plane).items():
            crop = plane[ys, xs] == label
            if crop.any():
                yield where, label, crop, (ys.start, xs.start)


def _shifted(ring: Ring, y0: int, x0: int) -> Ring:
    return [(x + x0, y + y0) for x, y in ring]


def _numbers(row: pd.Series | None) -> dict:
    """A table row's numeric measurements, as JSON numbers."""
    if row is None:
        return {}
    out = {}
    for name, value in row.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            continue
        value = float(value)
        if math.isfinite(value):
            out[str(name)] = value
    return out


def _class_of(row: pd.Series | None, default: str) -> str:
    if row is not None and isinstance(row.get("class"), str) and row.get("class"):
        return str(row["class"])
    if row is not None and isinstance(row.get("prompt"), str) and row.get("prompt"):
        return str(row["prompt"])
    return default


def _colour(name: str) -> list[int]:
    """A stable colour per class name (QuPath shows classes in their colour)."""
    import zlib

    h = zlib.crc32(name.encode())
    return [64 + (h & 0xBF), 64 + ((h >> 8) & 0xBF), 64 + ((h >> 16) & 0xBF)]


def _rows_by_id(table: pd.DataFrame | None) -> dict[int, pd.Series]:
    if table is None or not len(table) or "id" not in table:
        return {}
    return {int(r["id"]): r for _, r in table.iterrows()}


def geojson(
    labels: np.ndarray, table: pd.DataFrame | None = None, axes: str = "", name: str = "object"
) -> dict:
    """QuPath-compatible GeoJSON of ``labels`` (2D, or a stack: one feature per object
    per plane, its plane in ``geometry.plane`` as QuPath writes it): a FeatureCollection
    of detections, each with its id, class (the table's ``class``, else its prompt,
    else ``name``) and the table's numeric columns as measurements."""
    rows = _rows_by_id(table)
    features = []
    for where, label, crop, (y0, x0) in _objects(labels, axes):
        pieces = outlines(crop)
        polygons = [
            [_shifted(ext, y0, x0), *(_shifted(h, y0, x0) for h in holes)] for ext, holes in pieces
        ]
        if len(polygons) == 1:
            geometry: dict = {"type": "Polygon", "coordinates": polygons[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": polygons}
        if where:
            geometry["plane"] = {"c": -1, "z": where.get("z", 0), "t": where.get("t", 0)}
        row = rows.get(int(label))
        properties = {
            "objectType": "detection",
            "name": f"{name} {label}",
            "classification": {"name": (cls := _class_of(row, name)), "color": _colour(cls)},
            "measurements": {**_numbers(row), "label": int(label)},
            **({"plane": where} if where else {}),
        }
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def imagej_rois(labels: np.ndarray, axes: str = "") -> list:
    """One ImageJ polygon ROI per object piece and plane (``roifile.ImagejRoi``), named
    by its label (``"7"``, ``"7-2"`` for a second piece), its plane in ``position`` /
    ``z_position`` / ``t_position`` (1-based, as ImageJ counts)."""
    import roifile

    rois = []
    for where, label, crop, (y0, x0) in _objects(labels, axes):
        for k, (exterior, _holes) in enumerate(outlines(crop)):
            points = np.asarray(_shifted(exterior, y0, x0)[:-1], dtype=np.float32)
            roi = roifile.ImagejRoi.frompoints(points)
            roi.roitype = roifile.ROI_TYPE.POLYGON
            roi.name = f"{label}" if k == 0 else f"{label}-{k + 1}"
            if where:
                z, t = where.get("z", 0) + 1, where.get("t", 0) + 1
                roi.z_position, roi.t_position = z, t
                roi.position = z if "z" in where else t
            rois.append(roi)
    return rois


def write_geojson(target, labels, table=None, axes: str = "", name: str = "object") -> None:
    """Write :func:`geojson` to ``target`` (not atomically: see :func:`export_objects`)."""
    Path(target).write_text(json.dumps(geojson(labels, table, axes, name)))


def write_rois(target, labels, axes: str = "") -> None:
    """Write :func:`imagej_rois` to ``target`` as the ``.zip`` Fiji's ROI Manager
    opens (not atomically: see :func:`export_objects`)."""
    import zipfile

    rois = imagej_rois(labels, axes)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, roi in enumerate(rois):  # entries unique: a label in many planes
            archive.writestr(f"{i:05d}-{roi.name}.roi", roi.tobytes())


def export_objects(
    path: str | os.PathLike,
    labels: np.ndarray,
    table: pd.DataFrame | None = None,
    axes: str = "",
    name: str = "object",
    overwrite: bool = False,
) -> Path:
    """Write the objects to ``path``, by its suffix: ``.csv`` (the table), ``.geojson``
    (QuPath, :func:`geojson`) or ``.zip`` (ImageJ ROIs, :func:`imagej_rois`),
    atomically; an existing file is replaced only with ``overwrite``."""
    from .io import Outputs

    path = Path(path)
    kind = EXPORT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"Objects are exported as .csv (the table), .geojson (QuPath) or .zip (ImageJ "
            f"ROIs), not {path.suffix or 'a file without a suffix'!r} ({path})."
        )
    writers = {
        "table": lambda tmp: (table if table is not None else pd.DataFrame()).to_csv(
            tmp, index=False
        ),
        "geojson": lambda tmp: write_geojson(tmp, labels, table, axes, name),
        "roi": lambda tmp: write_rois(tmp, labels, axes),
    }
    outputs = Outputs({kind: path}, overwrite=overwrite)
    outputs.check()
    outputs.write({kind: writers[kind]})
    return path


def table_beside(path: str | os.PathLike) -> Path:
    """Where :func:`save_labels` puts the table: ``cells.ome.tif`` -> ``cells.csv``."""
    path = Path(path)
    stem = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return path.with_name(f"{stem}.csv")


def save_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    table: pd.DataFrame | None = None,
    axes: str = "",
    scale: dict | None = None,
    unit: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Labels (2D or a stack) as an OME-TIFF (``.tif``) or an OME-Zarr (NGFF 0.4,
    ``.zarr``) with their axes and pixel sizes, and the table beside them
    (:func:`table_beside`), written together or not at all. Returns the paths."""
    from .io import Outputs, write_stack_labels_to

    path = Path(path)
    suffix = ".zarr" if path.suffix.lower() == ".zarr" else path.suffix.lower()
    if suffix not in (".tif", ".tiff", ".zarr"):
        raise InputError(
            f"Labels are saved as .tif (OME-TIFF) or .zarr (OME-Zarr), not "
            f"{path.suffix or 'a file without a suffix'!r} ({path})."
        )
    labels = np.asarray(labels)
    axes = axes if axes and len(axes) == labels.ndim else "ZYX"[-labels.ndim :]
    if labels.ndim > 4 or len(axes) != labels.ndim:
        raise InputError(f"Labels of {labels.ndim} axes cannot be saved ({path}).")
    paths = {"labels": path}
    writers = {"labels": lambda tmp: write_stack_labels_to(tmp, labels, suffix, axes, scale, unit)}
    if table is not None and len(table):
        paths["table"] = table_beside(path)
        writers["table"] = lambda tmp: table.to_csv(tmp, index=False)
    outputs = Outputs(paths, overwrite=overwrite)
    outputs.check()
    outputs.write(writers)
    return list(paths.values())


__all__ = [
    "EXPORT_SUFFIXES",
    "export_objects",
    "geojson",
    "imagej_rois",
    "outlines",
    "save_labels",
    "table_beside",
    "write_geojson",
    "write_rois",
]
