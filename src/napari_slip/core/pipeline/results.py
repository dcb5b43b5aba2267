"""The output of a segmentation: a label image, a per-object table, provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .proposals import Proposals, for_surface

TABLE_COLUMNS = [
    "id",
    "score",
    "similarity",
    "area",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "prompt",
    "source_id",
]


@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.segment` returns.

    Attributes
    ----------
    labels
        (H, W) int32 label image: 0 background, objects 1..n, id 1 the best score.
    table
        One row per object: id, score (the mode's score), similarity (cosine to the
        prompt), area (pixels carrying the id), bbox (y0, x0, y1, x1, exclusive ends),
        prompt, source_id (the label a proposal came from, 0 for SAM).
    provenance
        Models with their file hashes, every parameter, the normalisation used.
    message
        One line: how many objects, or why none was found (:meth:`message_for` names
        the settings as the command line or the widget calls them).
    candidate_table
        One row per candidate (every proposal, kept or not): candidate (its index),
        score, similarity, area, bbox, kept, id (its label id, 0 if not kept), prompt.
        Shows how far from the threshold the candidates were, also when nothing was
        found.
    relevance
        With ``relevance=True``: (H, W) float32 map of where the prompt matches (cosine
        similarity of each pixel's CLIP patch to the prompt; see
        :mod:`~napari_slip.core.pipeline.relevance`); None otherwise.
    candidates
        The candidates the objects were chosen from
        (:meth:`Segmenter.select <napari_slip.core.pipeline.segmenter.Segmenter.select>`
        takes them again with other selection settings).
    """

    labels: np.ndarray
    table: pd.DataFrame
    provenance: dict = field(default_factory=dict)
    message: str = ""
    candidate_table: pd.DataFrame = field(default_factory=lambda: candidates_table(None))
    relevance: np.ndarray | None = None
    #: The candidates selection chose from (:class:`~.session.Candidates`), for new
    #: selection settings without image work; and the relevance map it used, if any.
    candidates: Any = field(default=None, repr=False, compare=False)
    used_relevance: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: What ``score`` is (:func:`~napari_slip.core.pipeline.selection.score_unit`).
    score_unit: str = "cosine similarity"
    #: The run that made it (:class:`~napari_slip.core.config.RunConfig`): a
    #: re-selection or an edit works with its models and options.
    config: Any = field(default=None, repr=False, compare=False)

    @property
    def found(self) -> bool:
        return len(self.table) > 0

    def message_for(self, surface: str) -> str:
        """:attr:`message` naming the settings as ``surface`` (``python``, ``cli``,
        ``widget``) calls them."""
        return message_for(self, surface)

    @property
    def n_objects(self) -> int:
        return len(self.table)


CANDIDATE_COLUMNS = [
    "candidate",
    "score",
    "similarity",
    "area",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "kept",
    "id",
    "prompt",
]


def candidates_table(
    proposals: Proposals | None,
    scores: np.ndarray | None = None,
    similarities: np.ndarray | None = None,
    ids: dict[int, int] | None = None,
    prompt: str = "",
) -> pd.DataFrame:
    """Every candidate with its score and whether it was kept (``ids``: index -> id)."""
    if proposals is None or not len(proposals):
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    ids = ids or {}
    boxes = np.asarray(proposals.boxes, dtype=np.int64).reshape(-1, 4)
    table = pd.DataFrame(
        {
            "candidate": np.arange(len(proposals)),
            "score": np.asarray(scores, dtype=float),
            "similarity": np.asarray(similarities, dtype=float),
            "area": proposals.areas,
            "bbox_y0": boxes[:, 0],
            "bbox_x0": boxes[:, 1],
            "bbox_y1": boxes[:, 2],
            "bbox_x1": boxes[:, 3],
            "kept": [i in ids for i in range(len(proposals))],
            "id": [ids.get(i, 0) for i in range(len(proposals))],
            "prompt": prompt,
        },
        columns=CANDIDATE_COLUMNS,
    )
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def paint_labels(
    proposals: Proposals,
    indices: np.ndarray,
    scores: np.ndarray,
    similarities: np.ndarray,
    prompt: str,
    out=None,
) -> tuple[np.ndarray, pd.DataFrame, dict[int, int]]:
    """Label image, table and ``{proposal index: id}`` for the chosen proposals.

    Ids follow the score order (1 = best). Overlapping masks are painted largest first,
    so an object nested inside a larger one stays visible; an object left with no
    visible pixel is dropped and the remaining ids stay consecutive.

    ``out``: an array of zeros to paint into, e.g. a zarr array for an image too large
    for memory; it is written object box by object box and returned as the labels.
    """
    areas = np.array([int(proposals.masks[i].sum()) for i in indices], dtype=np.int64)
    order = np.argsort(-areas, kind="stable")
    if out is None:
        labels = np.zeros(proposals.shape, dtype=np.int32)
        for rank in order:
            i = indices[rank]
            y0, x0, y1, x1 = proposals.boxes[i]
            labels[y0:y1, x0:x1][proposals.masks[i]] = rank + 1
        visible = np.bincount(labels.ravel(), minlength=len(indices) + 1)[1:]
    else:
        labels = out
        _paint_into(out, proposals, indices, order)
        visible = np.zeros(len(indices), dtype=np.int64)
        for rank, i in enumerate(indices):
            y0, x0, y1, x1 = proposals.boxes[i]
            visible[rank] = np.count_nonzero(np.asarray(out[y0:y1, x0:x1]) == rank + 1)
    kept = np.flatnonzero(visible > 0)
    if len(kept) < len(indices):
        remap = np.zeros(len(indices) + 1, dtype=np.int32)
        remap[kept + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
        if out is None:
            labels = remap[labels]
        else:
            for sl in _blocks(out):
                out[sl] = remap[np.asarray(out[sl])]
    rows, ids = [], {}
    for new_id, rank in enumerate(kept, start=1):
        i = indices[rank]
        ids[int(i)] = new_id
        y0, x0, y1, x1 = (int(v) for v in proposals.boxes[i])
        rows.append(
            {
                "id": new_id,
                "score": float(scores[rank]),
                "similarity": float(similarities[i]),
                "area": int(visible[rank]),
                "bbox_y0": y0,
                "bbox_x0": x0,
                "bbox_y1": y1,
                "bbox_x1": x1,
                "prompt": prompt,
                "source_id": int(proposals.source_ids[i]),
            }
        )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return labels, table.astype({"id": "int64", "area": "int64", "source_id": "int64"}), ids


def _paint_into(out, proposals: Proposals, indices, order) -> None:
    for rank in order:
        i = indices[rank]
        y0, x0, y1, x1 = (int(v) for v in proposals.boxes[i])
        region = np.array(out[y0:y1, x0:x1])
        region[proposals.masks[i]] = rank + 1
        out[y0:y1, x0:x1] = region


def _blocks(array, side: int = 2048):
    """Slices covering a 2D array in blocks (its chunks' multiples where it has them)."""
    chunks = getattr(array, "chunks", None)
    if chunks and isinstance(chunks[0], int):
        side = max(side // chunks[0] * chunks[0], chunks[0])
    h, w = array.shape
    for y in range(0, h, side):
        for x in range(0, w, side):
            yield (slice(y, min(h, y + side)), slice(x, min(w, x + side)))


def mean_inside(proposals: Proposals, values: np.ndarray) -> np.ndarray:
    """(N,) the mean of ``values`` (an (H, W) map) inside each proposal's mask."""
    out = np.zeros(len(proposals), dtype=np.float64)
    for i, ((y0, x0, y1, x1), mask) in enumerate(
        zip(proposals.boxes, proposals.masks, strict=True)
    ):
        inside = values[y0:y1, x0:x1][mask]
        out[i] = float(inside.mean()) if inside.size else 0.0
    return out


def message_for(result, surface: str) -> str:
    """A result's (a plane's or a stack's) message as ``surface`` should read it: SAM's
    filters named by their flags on the command line, their fields in the widget."""
    candidates = getattr(result, "candidates", None)
    planes = list(candidates.values()) if isinstance(candidates, dict) else [candidates]
    message = result.message
    for plane in planes:
        proposals = getattr(plane, "proposals", None)
        message = for_surface(message, getattr(proposals, "funnel", None), surface)
    return message
