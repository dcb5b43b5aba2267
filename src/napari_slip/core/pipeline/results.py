"""The output of a segmentation: a label image, a per-object table, provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .proposals import Proposals

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
        One line: how many objects, or why none was found.
    """

    labels: np.ndarray
    table: pd.DataFrame
    provenance: dict = field(default_factory=dict)
    message: str = ""

    @property
    def found(self) -> bool:
        return len(self.table) > 0

    @property
    def n_objects(self) -> int:
        return len(self.table)


def paint_labels(
    proposals: Proposals,
    indices: np.ndarray,
    scores: np.ndarray,
    similarities: np.ndarray,
    prompt: str,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Label image and table for the chosen proposals.

    Ids follow the score order (1 = best). Overlapping masks are painted largest first,
    so an object nested inside a larger one stays visible; an object left with no
    visible pixel is dropped and the remaining ids stay consecutive.
    """
    labels = np.zeros(proposals.shape, dtype=np.int32)
    areas = np.array([int(proposals.masks[i].sum()) for i in indices], dtype=np.int64)
    for rank in np.argsort(-areas, kind="stable"):
        i = indices[rank]
        y0, x0, y1, x1 = proposals.boxes[i]
        labels[y0:y1, x0:x1][proposals.masks[i]] = rank + 1
    visible = np.bincount(labels.ravel(), minlength=len(indices) + 1)[1:]
    kept = np.flatnonzero(visible > 0)
    if len(kept) < len(indices):
        remap = np.zeros(len(indices) + 1, dtype=np.int32)
        remap[kept + 1] = np.arange(1, len(kept) + 1, dtype=np.int32)
        labels = remap[labels]
    rows = []
    for new_id, rank in enumerate(kept, start=1):
        i = indices[rank]
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
    return labels, table.astype({"id": "int64", "area": "int64", "source_id": "int64"})
