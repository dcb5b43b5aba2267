"""An editor made from a result: its plane's image (or a linked stack's every plane),
its table, and the concept its edits teach."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from ..concepts.features import features_of
from ..errors import InputError
from ..pipeline.finish import plane_measuring, table_of
from ..pipeline.plane import candidates_of, plane_of
from ..runtime.generators import drain
from .editor import LabelEditor


def edit(
    result,
    segmenter,
    *,
    plane: tuple[int, ...] | None = None,
    image: np.ndarray | None = None,
    scale: dict | None = None,
    unit: str | None = None,
    concept=None,
    class_name: str | None = None,
    labels: np.ndarray | None = None,
    seed: bool = False,
) -> LabelEditor:
    """An editor of ``result``'s labels (a copy: the result stays as it was).

    Parameters
    ----------
    result
        What :meth:`Segmenter.segment` returned (a 2D result, or a stack result and
        the ``plane`` to edit, e.g. ``(3,)`` for z = 3).
    segmenter
        The segmenter that made it (its cache holds the image's SAM embedding).
    image
        The original plane, channels last, for the intensity columns of the table.
    scale, unit
        Pixel sizes ``{"Y": .., "X": ..}`` and their unit, for the physical columns.
    concept, class_name
        A :class:`~.concepts.Concept` the edits teach (added objects are examples of
        ``class_name``, default its first class; removed ones are "not these").
    labels
        The array to edit in place (a viewer layer's data), of the result's shape;
        default a copy of the result's labels.
    seed
        With a concept: the objects the run kept become its first examples.

    Examples
    --------
    >>> editor = napari_slip.edit(result, seg)  # doctest: +SKIP
    >>> editor.add_at(120, 48).message  # doctest: +SKIP
    'Added object 4.'
    >>> editor.labels, editor.table()  # doctest: +SKIP
    """
    linked = getattr(result, "linked", None) is not None
    if (
        plane is None
        and isinstance(result.candidates, dict)
        and (linked or len(result.candidates) == 1)
    ):
        plane = next(iter(result.candidates))
    handle = plane_of(segmenter, result, plane)
    plane = tuple(plane or ())
    stack = {}
    # A stack result (the widget's, even of a 2D image) knows its image, pixel sizes
    # and axes: its table is finished as the run finished it. A per-plane stack's
    # plane keeps the plane's own table.
    whole = linked or getattr(result, "axes", None) == "YX"
    if whole and image is None and scale is None:

        def finish(labels: np.ndarray, table: pd.DataFrame) -> pd.DataFrame:
            return table_of(replace(result, labels=labels, table=table))

        stack["finish"] = finish
    elif image is None and scale is None:  # a plane: measured as its run measured it
        how = plane_measuring(result, plane)
        image, scale, unit = how.image, how.scale, unit or how.unit
    if linked:  # every plane's own image
        handles = {p: plane_of(segmenter, result, p) for p in result.candidates}
        stack.update(handles=handles, linked=True)
    if labels is None:
        labels = np.array(result.labels, copy=True)
    elif tuple(labels.shape) != tuple(np.shape(result.labels)):
        raise InputError(
            f"The labels to edit are {tuple(labels.shape)}, the result's "
            f"{tuple(np.shape(result.labels))}: edit the result's own labels."
        )
    prompt = getattr(result, "prompt", "") or result.provenance.get("prompt") or ""
    table = result.table
    for axis, index in enumerate(plane if not linked else ()):
        if f"axis{axis}" in table:
            table = table[table[f"axis{axis}"] == index]
    if concept is not None:
        clip = drain(handle.context.iter_load("clip"))
        concept.bind_clip(handle.context.models.clip_spec, clip.sha256)
        class_name = class_name or (concept.classes[0] if concept.classes else prompt)
        concept.add_class(class_name)
        if seed:
            seed_examples(concept, class_name, result, plane, handle)
    sizes = {"image": image, "scale": scale, "unit": unit}
    teach = {
        "concept": concept,
        "class_name": class_name,
        "candidates": candidates_of(result, plane or None),
    }
    return LabelEditor(
        labels, handle, plane=plane, table=table, prompt=str(prompt), **sizes, **teach, **stack
    )


def seed_examples(concept, class_name: str, result, plane: tuple[int, ...], handle) -> None:
    """The run's kept objects of ``plane`` as examples, among all its candidates
    (measuring every candidate the first time: a GUI does it after a click's pixels
    show, not before)."""
    candidates = result.candidates
    if isinstance(candidates, dict):
        candidates = candidates[plane]
    table = result.candidate_table
    if table is None or not len(table) or "kept" not in table:
        return
    rows = table[table["kept"]]
    for axis, index in enumerate(plane):
        if f"axis{axis}" in rows:
            rows = rows[rows[f"axis{axis}"] == index]
    kept = sorted(int(c) for c in rows["candidate"] if 0 <= int(c) < len(candidates))
    if kept:
        features = features_of(candidates, handle.image)
        concept.add(features.take(kept), class_name, pool=features)


__all__ = ["edit", "seed_examples"]
