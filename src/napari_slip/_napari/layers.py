"""Engine results -> napari Labels layers, losing nothing that was there before."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.pipeline.stack import StackResult

if TYPE_CHECKING:
    import napari

METADATA_KEY = "napari_slip"


def camera_of(viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, before: ``camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def features_for(result: StackResult, offset: int = 0) -> pd.DataFrame:
    """The Labels ``features`` rows of a result: ``index`` is the label value (one row
    per label: a track's rows per frame become one, with its frames ``t0``..``t1``)."""
    table = result.table.copy()
    if "track_id" in table and len(table):
        per_track = table.groupby("id", sort=False)
        table = per_track[["id", "score", "similarity", "prompt"]].first()
        table["area"] = per_track["area"].sum()
        table["t0"] = per_track["t"].min()
        table["t1"] = per_track["t"].max() + 1
        table["n_frames"] = per_track["t"].count()
        if "parent_track" in result.table:
            table["parent_track"] = per_track["parent_track"].first()
        table = table.reset_index(drop=True)
    table["id"] = table["id"].astype("int64") + offset
    table.insert(0, "index", table["id"])
    return table.reset_index(drop=True)


def new_labels_layer(
    viewer: napari.Viewer, result: StackResult, image_layer, name: str, axes=None
):
    """Add the result as a new Labels layer aligned with ``image_layer``.

    ``axes`` are the image layer's axes the labels keep (all but a channel axis).
    """
    axes = list(range(image_layer.ndim)) if axes is None else list(axes)
    return viewer.add_labels(
        result.labels,
        name=name,
        scale=np.asarray(image_layer.scale)[axes],
        translate=np.asarray(image_layer.translate)[axes],
        features=features_for(result),
        metadata={METADATA_KEY: [result.provenance]},
    )


def write_into_layer(layer, result: StackResult, replace: bool = False) -> int:
    """Add the result's objects to an existing Labels layer as one undoable step.

    New ids start after the layer's maximum. Existing non-zero pixels are kept unless
    ``replace``; napari's undo (``layer.undo()``, Ctrl+Z) restores the previous labels.

    Returns
    -------
    int
        The number of pixels written.

    Raises
    ------
    InputError
        If the layer's shape differs from the result's.
    """
    data = layer.data
    if tuple(data.shape) != tuple(result.labels.shape):
        raise InputError(
            f"The output layer {layer.name!r} has shape {tuple(data.shape)}, "
            f"but the image's labels are {tuple(result.labels.shape)}; "
            "choose 'New Labels layer' or a matching layer."
        )
    offset = int(np.asarray(data).max(initial=0))
    new = result.labels
    where = new > 0
    if not replace:
        where &= np.asarray(data) == 0
    indices = np.nonzero(where)
    if indices[0].size:
        layer.data_setitem(indices, (new[indices] + offset).astype(data.dtype))
    rows = features_for(result, offset)
    # Objects that were entirely hidden behind existing labels got no pixel: no row.
    present = np.unique(np.asarray(layer.data)[indices]) if indices[0].size else []
    rows = rows[rows["index"].isin(present)]
    old = layer.features
    if len(old) and "index" in old:
        rows = pd.concat([old, rows], ignore_index=True)
    layer.features = rows.reset_index(drop=True)
    layer.metadata = {
        **layer.metadata,
        METADATA_KEY: [*layer.metadata.get(METADATA_KEY, []), result.provenance],
    }
    layer.refresh()
    return int(indices[0].size)


def replace_layer_data(layer, result: StackResult) -> None:
    """Show a new selection in a layer this plugin created (live re-selection)."""
    layer.data = result.labels
    layer.features = features_for(result)
    history = layer.metadata.get(METADATA_KEY, [])
    layer.metadata = {**layer.metadata, METADATA_KEY: [*history[:-1], result.provenance]}


def show_relevance_layer(
    viewer,
    image,
    prompt: str,
    relevance,
    probability: bool = False,
    axes=None,
    planes=None,
):
    """Show a relevance map as an Image layer just above ``image``; the active layer
    stays active. Returns the layer.

    A trained decoder's map (``probability``) is shown on its 0-1 scale, so an absent
    object stays dark; CLIP's untrained cosines are stretched over their range.
    ``axes`` are the image layer's axes the map has (all but a channel axis; default
    its last two). In a stack, ``planes`` (leading indices) are the planes the map was
    made for: if the layer of this prompt and image is already there, only those
    planes are written into it, so maps of slices segmented one at a time add up;
    otherwise the layer's data is replaced.
    """
    name = f"relevance: {prompt} ({image.name})"
    relevance = np.asarray(relevance, dtype=np.float32)
    made = [relevance[p] for p in planes] if planes else [relevance]
    lo = min(float(m.min()) for m in made)
    hi = max(float(m.max()) for m in made)
    layers = viewer.layers
    if name in layers:
        layer = layers[name]
        old = layer.data
        merge = (
            any(len(p) for p in planes or ())  # planes of a stack, not a 2D image's ()
            and isinstance(old, np.ndarray)
            and old.shape == relevance.shape
            and old.flags.writeable
        )
        if merge:
            for p in planes:
                old[p] = relevance[p]
            if not probability:
                lo, hi = min(lo, layer.contrast_limits[0]), max(hi, layer.contrast_limits[1])
            layer.refresh()
        else:
            layer.data = relevance
        layer.contrast_limits = (0.0, 1.0) if probability else (lo, hi if hi > lo else lo + 1e-6)
        return layer
    axes = list(range(image.ndim))[-relevance.ndim :] if axes is None else list(axes)
    active = layers.selection.active
    layer = viewer.add_image(
        relevance,
        name=name,
        colormap="inferno",
        blending="additive",
        opacity=0.6,
        contrast_limits=(0.0, 1.0) if probability else (lo, hi if hi > lo else lo + 1e-6),
        scale=np.asarray(image.scale)[axes],
        translate=np.asarray(image.translate)[axes],
        metadata={METADATA_KEY: {"relevance_of": prompt}},
    )
    # Just above the image, under the labels; the labels stay the active layer.
    if image in layers:
        layers.move(layers.index(layer), layers.index(image) + 1)
    if active is not None and active in layers:
        layers.selection.active = active
    return layer
