"""Proposals guided by the prompt's relevance map (``proposals="relevance"`` and
``"guided"``).

SAM's full grid decodes ~1,000 points before CLIP says anything about the prompt. The
relevance map (see :mod:`.relevance`) already says where the prompt matches, so:

- ``relevance``: the regions of the map above a level are the candidates themselves
  (no SAM at all; their outlines are as fine as the map);
- ``guided``: SAM decodes a point at each region's peak and at the map's other local
  maxima, plus a sparse safety grid for what the map missed. SAM's masks of every point
  are cached per image, so a new prompt decodes only the points it adds.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..models.promptable import ImageEmbedding, PromptableSam
from ..params import GuidedParams, SamProposalParams
from ..runtime.perf import point_batch
from ..runtime.progress import Progress
from .proposals import Proposals, binary_masks, grid_points, nms_proposals


def unit_map(relevance: np.ndarray, probability: bool) -> np.ndarray:
    """The map on a 0-1 scale: a decoder's probabilities as they are; CLIP's untrained
    cosines rescaled from their minimum to their maximum over the image."""
    relevance = np.asarray(relevance, dtype=np.float32)
    if probability:
        return np.clip(relevance, 0, 1)
    if not relevance.size:
        return relevance
    low, high = float(relevance.min()), float(relevance.max())
    if high - low < 1e-6:
        return np.zeros_like(relevance)
    return (relevance - low) / (high - low)


def _components(unit: np.ndarray, level: float, min_region: int):
    from scipy import ndimage

    above = unit > level
    labels, n = ndimage.label(above)
    if n == 0:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    return labels, [i for i in range(1, n + 1) if areas[i] >= max(min_region, 1)]


def relevance_regions(unit: np.ndarray, params: GuidedParams) -> Proposals:
    """Each connected region of ``unit`` above ``params.level`` (at least ``min_region``
    pixels) is one proposal; its quality is the mean relevance inside it."""
    from scipy import ndimage

    from .proposals import proposals_from_labels

    labels, keep = _components(unit, params.level, params.min_region)
    labels[~np.isin(labels, keep)] = 0
    props = proposals_from_labels(labels)
    if len(props):
        ids = props.source_ids
        props.quality = np.asarray(ndimage.mean(unit, labels, ids), dtype=np.float32)
        props.source_ids = np.arange(1, len(props) + 1, dtype=np.int64)
    return props


def guided_points(unit: np.ndarray, params: GuidedParams) -> np.ndarray:
    """(N, 2) points ``(x, y)`` in the map's pixels: the peak of every region above the
    level first, then other local maxima above it by decreasing relevance (at most
    ``params.peaks`` in all), then the safety grid."""
    from scipy import ndimage

    h, w = unit.shape
    labels, keep = _components(unit, params.level, params.min_region)
    points: list[tuple[float, float]] = []
    if keep and params.peaks:
        peaks = ndimage.maximum_position(unit, labels, keep)
        order = np.argsort([-unit[p] for p in peaks], kind="stable")
        points += [(peaks[i][1] + 0.5, peaks[i][0] + 0.5) for i in order]
        spacing = max(3, round(max(h, w) / 16))
        local = (unit == ndimage.maximum_filter(unit, size=spacing)) & (labels > 0)
        ys, xs = np.nonzero(local)
        order = np.argsort(-unit[ys, xs], kind="stable")
        taken = {(int(y), int(x)) for x, y in points}
        for y, x in zip(ys[order], xs[order], strict=True):
            if (int(y), int(x)) not in taken:
                points.append((x + 0.5, y + 0.5))
        points = points[: params.peaks]
    out = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if params.safety_grid:
        out = np.concatenate([out, grid_points(params.safety_grid, w, h, False)])
    return out


def point_proposals(
    sam: PromptableSam,
    embedding: ImageEmbedding,
    points: np.ndarray,
    params: SamProposalParams,
    precision: str,
    cache: dict,
) -> Generator[Progress, None, Proposals]:
    """SAM's masks for ``points`` (``(x, y)`` in the embedded image's pixels), filtered
    as :func:`.proposals.sam_proposals` filters them, then box NMS.

    ``cache`` maps a point (rounded to a pixel) to its masks; points already in it are
    not decoded again, and new ones are added to it. ``decoded_points`` of the result
    counts the points decoded by this call.
    """
    keys = point_keys(points)
    new = yield from decode_points(sam, embedding, keys, params, precision, cache)
    return cached_proposals(embedding.original_size, keys, cache, params, new)


def point_keys(points: np.ndarray) -> list[tuple[int, int]]:
    """Points ``(x, y)`` as the pixels that key the mask cache, in order, once each."""
    return list(dict.fromkeys((int(x), int(y)) for x, y in np.asarray(points)))


def decode_points(
    sam: PromptableSam,
    embedding: ImageEmbedding,
    keys: list[tuple[int, int]],
    params: SamProposalParams,
    precision: str,
    cache: dict,
) -> Generator[Progress, None, int]:
    """Decode the points of ``keys`` not in ``cache`` yet (at their pixels' centres)
    and add their filtered masks to it, a whole batch at a time (an error or a cancel
    leaves no half-decoded point). Returns how many points were decoded."""
    new = [k for k in keys if k not in cache]
    batch_size = point_batch(precision, sam.device, params.points_per_batch)
    yield Progress("proposals", 0, len(new), f"SAM on {len(new)} guided points", heavy=True)
    for start in range(0, len(new), batch_size):
        batch = new[start : start + batch_size]
        xy = np.asarray(batch, dtype=np.float64) + 0.5
        if params.pred_iou_thresh > 0:
            low_res, iou, which = sam.decode_points_above(
                embedding, xy, params.pred_iou_thresh, precision, return_index=True
            )
        else:
            low_res, iou = sam.decode_points(embedding, xy, precision)
            low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
            which = np.repeat(np.arange(len(batch)), 3)
        masks: dict = {key: [] for key in batch}
        which = np.asarray(which)
        for box, crop, score, row in binary_masks(sam, embedding, low_res, iou, params):
            masks[batch[int(which[row])]].append((box, crop, score))
        cache.update(masks)  # whole batches only
        yield Progress("proposals", start + len(batch), len(new), "SAM on guided points")
    return len(new)


def cached_proposals(
    shape: tuple[int, int],
    keys: list[tuple[int, int]],
    cache: dict,
    params: SamProposalParams,
    decoded: int = 0,
) -> Proposals:
    """The cached masks of the points ``keys`` (all decoded) as proposals of an image of
    ``shape``, after box NMS; ``decoded`` is recorded as the points decoded."""
    boxes, crops, scores = [], [], []
    for key in keys:
        for box, crop, score in cache[key]:
            boxes.append(box)
            crops.append(crop)
            scores.append(score)
    return nms_proposals(shape, boxes, crops, scores, params.box_nms_thresh, decoded)


__all__ = [
    "cached_proposals",
    "decode_points",
    "guided_points",
    "point_keys",
    "point_proposals",
    "relevance_regions",
    "unit_map",
]
