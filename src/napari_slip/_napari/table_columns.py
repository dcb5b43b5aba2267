"""The results table's columns: what scientists report, from whatever the run measured.

id and score always; a concept's class and its probability; the size in physical units
where pixel sizes are known (area in µm², volume in µm³), else in pixels; where the
object is in a stack ("z 3-9", "t 2", "z 4"); the mean intensity of each channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

SUPERSCRIPT = {"2": "\u00b2", "3": "\u00b3"}


@dataclass(frozen=True)
class Column:
    """One table column: its header, tooltip, how a row gives its value, and whether
    the value is text (sorted as text) or a number shown to ``digits``."""

    header: str
    tip: str
    value: Callable[[pd.Series], object]
    digits: int | None = None


def _size_column(rows: pd.DataFrame) -> Column:
    physical = [c for c in rows.columns if str(c).startswith(("area_", "volume_"))]
    physical = [c for c in physical if not str(c).endswith("_physical")] or physical
    if physical:
        name = str(physical[0])
        what, unit = name.split("_", 1)
        if unit != "physical":
            unit = unit[:-1] + SUPERSCRIPT.get(unit[-1], unit[-1])
            unit = unit.replace("um", "\u00b5m")
        header = f"{what} {unit}" if unit != "physical" else what
        return Column(header, f"{what} in physical units ({name})", lambda r: r[name], 2)
    voxels = "bbox_z0" in rows
    tip = "voxels of the 3D object" if voxels else "pixels"
    return Column("volume px" if voxels else "area px", tip, lambda r: r["area"], 0)


def columns_for(rows: pd.DataFrame, plane_columns: list[str], axes: str) -> list[Column]:
    """The columns to show for ``rows`` (a result's table)."""
    out = [
        Column("id", "label id", lambda r: r["id"], 0),
        Column(
            "score",
            "the mode's score (a 3D object's or track's over all its planes)",
            lambda r: r["score"],
            3,
        ),
    ]
    if "class" in rows:
        out.append(Column("class", "the concept's class", lambda r: str(r["class"])))
    if "class_probability" in rows:
        out.append(
            Column(
                "probability",
                "the class's probability",
                lambda r: r["class_probability"],
                3,
            )
        )
    out.append(_size_column(rows))
    if plane_columns or "bbox_z0" in rows or "t" in rows:
        out.append(
            Column(
                "where",
                "the plane(s) or frame of the object",
                lambda r: where_text(r, plane_columns, axes),
            )
        )
    means = [c for c in rows.columns if str(c) == "mean_intensity"]
    means += sorted(c for c in rows.columns if str(c).startswith("mean_intensity_c"))
    distinct = []  # a gray image shown as RGB measures one channel three times
    for c in means:
        if not any(rows[c].equals(rows[d]) for d in distinct):
            distinct.append(c)
    for c in distinct:
        channel = str(c).removeprefix("mean_intensity").removeprefix("_c")
        header = f"mean c{channel}" if channel and len(distinct) > 1 else "mean"
        tip = f"mean intensity of the original image{f' (channel {channel})' if channel else ''}"
        out.append(Column(header, tip, lambda r, c=c: r[c], 1))
    return out


def where_text(row: pd.Series, plane_columns: list[str], axes: str) -> str:
    """Where an object is in a stack, with its axes' letters: ``z 4`` (a plane's
    object), ``z 3-9`` (a 3D object), ``t 2`` / ``t 2, z 3-9`` (a track's row)."""
    if plane_columns:
        letters = (axes[:-2] if axes else "").lower()
        if len(letters) != len(plane_columns):
            letters = "".join(f"{i}" for i in range(len(plane_columns)))
        return ", ".join(f"{a} {int(row[c])}" for a, c in zip(letters, plane_columns, strict=True))
    parts = []
    if "t" in row:
        parts.append(f"t {int(row['t'])}")
    if "bbox_z0" in row:
        z0, z1 = int(row["bbox_z0"]), int(row["bbox_z1"]) - 1
        parts.append(f"z {z0}" if z0 == z1 else f"z {z0}-{z1}")
    return ", ".join(parts)


__all__ = ["Column", "columns_for", "where_text"]
