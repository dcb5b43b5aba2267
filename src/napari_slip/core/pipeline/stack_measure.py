"""What is measured of a stack's objects: the table's measurements (per 3D object,
or per track and frame where a T axis was linked) and a plane's intensities for
linking (:mod:`.zsplit`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig
from ..measure import with_measurements
from .images import plane_of


def measured(result) -> pd.DataFrame:
    """The table of ``result`` (a :class:`~.stack.StackResult`) with the
    measurements: rows per object, or per object and frame (with ``t`` and
    ``track_id``) where a T axis was linked."""
    table, labels, letters = result.table, result.labels, result.axes
    image = result.image
    if not len(table):
        return table
    if result.linked is None or "T" not in letters:
        return with_measurements(table, labels, image, letters, result.scale, result.unit)
    t_axis = letters.index("T")
    frames = []
    rest = letters[:t_axis] + letters[t_axis + 1 :]
    for t in range(labels.shape[t_axis]):
        index = (slice(None),) * t_axis + (t,)
        frame_labels = labels[index]
        if not frame_labels.any():
            continue
        frame_image = None if image is None else image[index]
        rows = with_measurements(
            table[table["id"].isin(np.unique(frame_labels))],
            frame_labels,
            frame_image,
            rest,
            result.scale,
            result.unit,
        )
        rows.insert(1, "track_id", rows["id"])
        rows.insert(2, "t", t)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else table


def channels_last(image: Any, config: RunConfig) -> Any:
    """The original 2D image with its channels last, for intensities (None if unknown)."""
    if image is None:
        return None
    axis = config.normalisation.channel_axis
    if axis is None:
        return image
    if isinstance(image, np.ndarray) and image.ndim == 3:
        return np.moveaxis(image, axis, -1)
    return None


def plane_intensity(image, plane: tuple[int, ...], config: RunConfig) -> np.ndarray:
    """One plane of the original image as 2D intensities (channels averaged), read
    when asked (a lazy stack is read a plane at a time)."""
    data = channels_last(np.asarray(plane_of(image, plane), dtype=np.float32), config)
    return data.mean(axis=-1) if data.ndim == 3 else data


__all__ = ["channels_last", "measured", "plane_intensity"]
