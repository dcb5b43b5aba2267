"""Object-level metrics of candidate masks against ground-truth labels (for big images).

Fast enough for thousands of objects: intersections come from the ground truth under
each mask's box, not from full-image masks.
"""

from __future__ import annotations

import numpy as np

from ..core.pipeline.proposals import Proposals


def object_metrics(truth: np.ndarray, proposals: Proposals, iou: float = 0.5) -> dict:
    """Recall, splits and merges of ``proposals`` against the label image ``truth``.

    - ``recall``: share of true objects matched by one mask with IoU >= ``iou``.
    - ``split``: true objects not matched, but covered (>= 50 %) by two or more masks
      that each lie mostly (>= 80 %) inside them: an object broken into pieces.
    - ``duplicates``: true objects matched (IoU >= 0.8) by two or more masks: one
      object offered twice (e.g. once per tile that saw it whole).
    - ``merged``: masks that cover >= 50 % of each of two or more true objects and are
      smaller than ten mean objects (not background): objects glued together.
    """
    truth = np.asarray(truth)
    n_true = int(truth.max(initial=0))
    true_area = np.bincount(truth.ravel(), minlength=n_true + 1)
    present = np.flatnonzero(true_area[1:] > 0) + 1
    best = np.zeros(n_true + 1)
    close = np.zeros(n_true + 1, dtype=np.int64)
    pieces = np.zeros(n_true + 1)  # share of the object covered by masks mostly inside it
    n_pieces = np.zeros(n_true + 1, dtype=np.int64)
    merged = 0
    mean_area = true_area[present].mean() if len(present) else 1.0
    for (y0, x0, y1, x1), mask in zip(proposals.boxes, proposals.masks, strict=True):
        under = truth[y0:y1, x0:x1][mask]
        area = int(mask.sum())
        counts = np.bincount(under, minlength=n_true + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        if not len(ids):
            continue
        inter = counts[ids]
        ious = inter / (true_area[ids] + area - inter)
        np.maximum.at(best, ids, ious)
        close[ids[ious >= 0.8]] += 1
        inside = inter / area
        mostly = ids[inside >= 0.8]
        pieces[mostly] += counts[mostly] / true_area[mostly]
        n_pieces[mostly] += 1
        covered = ids[inter / true_area[ids] >= 0.5]
        if len(covered) >= 2 and area < 10 * mean_area:
            merged += 1
    matched = best[present] >= iou
    split = (~matched) & (n_pieces[present] >= 2) & (pieces[present] >= 0.5)
    return {
        "objects": len(present),
        "masks": len(proposals),
        "recall": float(matched.mean()) if len(present) else 0.0,
        "split": int(split.sum()),
        "duplicates": int((close[present] >= 2).sum()),
        "merged": merged,
    }


def label_metrics(truth: np.ndarray, labels: np.ndarray, iou: float = 0.5) -> dict:
    """:func:`object_metrics` of a label image (what a user sees): an object painted as
    two labels counts as split, two objects under one label as merged."""
    from ..core.pipeline.proposals import proposals_from_labels

    return object_metrics(truth, proposals_from_labels(np.asarray(labels)), iou)


def recovered(truth: np.ndarray, labels: np.ndarray, iou: float = 0.5) -> float:
    """The share of the objects in ``truth`` (of the ids it holds: a plane of a stack
    holds a few of the stack's) that one object of ``labels`` matches at ``iou`` (in
    as many dimensions as the arrays have: 3D objects of a stack)."""
    from ..core.pipeline.linking import overlaps

    ia, ib, inter = overlaps(truth, labels)
    size_t, size_l = np.bincount(truth.ravel()), np.bincount(labels.ravel())
    ious = inter / (size_t[ia] + size_l[ib] - inter)
    present = np.count_nonzero(size_t[1:])
    return len(set(ia[ious >= iou].tolist())) / present
