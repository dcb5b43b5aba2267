"""Shape measurements scientists report, per object, as scikit-image computes them:
in 2D the perimeter, eccentricity and solidity; in 3D the surface area (marching
cubes), sphericity, extent and the three principal axis lengths. Physical units
where pixel sizes are known (the surface and lengths are then in the unit: ``_um2``,
``_um``), pixels otherwise.

In 2D, eccentricity and solidity are those of the pixels as they lie (scikit-image's
convex hull and moments); the perimeter is also given in the unit where the pixels
are square. An object's row depends on its pixels only, so rows are kept by the object's mask
(its box and a hash of its pixels): a re-selection or an edit measures again only
the objects it changed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .object_rows import RowCache, objects_of

#: Rows kept by mask (a re-selection's objects are mostly the same masks).
_KEPT = RowCache()


def shape_table(
    labels: np.ndarray,
    letters: str = "YX",
    scale: Mapping[str, float] | None = None,
    unit: str | None = None,
    objects: list | None = None,
) -> pd.DataFrame:
    """One row per id of ``labels`` (2D ``YX`` or 3D ``ZYX``), indexed by id (see the
    module); ``objects``: :func:`~.object_rows.objects_of` of them, if made already."""
    labels = np.asarray(labels)
    letters = letters.upper()
    spatial = "ZYX" if "Z" in letters else "YX"
    if labels.ndim != len(spatial):
        raise ValueError(f"shape_table measures YX or ZYX labels; got {letters!r}")
    scale = dict(scale or {})
    physical = all(a in scale for a in spatial)
    spacing = tuple(float(scale[a]) if physical else 1.0 for a in spatial)
    objects = list(objects_of(labels)) if objects is None else objects
    keys = [
        (spatial, spacing, physical, tuple((s.start, s.stop) for s in box), pixels)
        for _, box, _, pixels in objects
    ]

    def make(missing: list[int]) -> dict:
        if len(spatial) == 3:
            return {i: _shape_3d(objects[i][2], spacing) for i in missing}
        return {i: _shape_2d(objects[i][2], spacing, physical) for i in missing}

    rows = _KEPT.rows(keys, make)
    suffix = f"_{unit or 'physical'}" if physical else ""
    names = _names_3d(suffix) if len(spatial) == 3 else _names_2d(suffix)
    ids = [label for label, *_ in objects]
    return pd.DataFrame(rows, columns=names, index=pd.Index(ids, name="id"))


def _names_2d(suffix: str) -> list[str]:
    return ["perimeter", *([f"perimeter{suffix}"] if suffix else []), "eccentricity", "solidity"]


def _names_3d(suffix: str) -> list[str]:
    area = f"surface_area{suffix}2" if suffix else "surface_area"
    lengths = [f"{k}_axis_length{suffix}" for k in ("major", "middle", "minor")]
    return [area, "sphericity", "extent", *lengths]


def _shape_2d(mask: np.ndarray, spacing: tuple[float, ...], physical: bool) -> tuple:
    """Perimeter in pixels (and in the unit where the pixels are square: scikit-image
    measures perimeters with one spacing only; NaN otherwise), eccentricity and
    solidity of the shape as the pixels lie."""
    from skimage.measure import regionprops

    (props,) = regionprops(mask.astype(np.uint8))
    perimeter = float(props.perimeter)
    solidity = float(props.solidity) if mask.sum() > 2 else 1.0
    if not physical:
        return perimeter, float(props.eccentricity), solidity
    square = spacing[0] == spacing[1]
    scaled = perimeter * spacing[0] if square else np.nan
    return perimeter, scaled, float(props.eccentricity), solidity


def _shape_3d(mask: np.ndarray, spacing: tuple[float, ...]) -> tuple:
    from skimage.measure import marching_cubes, mesh_surface_area, regionprops

    padded = np.pad(mask, 1).astype(np.uint8)
    vertices, faces, _, _ = marching_cubes(padded, 0.5, spacing=spacing)
    area = float(mesh_surface_area(vertices, faces))
    volume = float(mask.sum()) * float(np.prod(spacing))
    sphericity = float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area else np.nan
    (props,) = regionprops(mask.astype(np.uint8), spacing=spacing)
    ev = np.sort(np.asarray(props.inertia_tensor_eigvals, dtype=float))[::-1]
    lengths = [ev[0] + ev[1] - ev[2], ev[0] + ev[2] - ev[1], ev[1] + ev[2] - ev[0]]
    lengths = [float(np.sqrt(10 * max(v, 0.0))) for v in lengths]
    return (area, sphericity, float(props.extent), *lengths)


__all__ = ["shape_table"]
