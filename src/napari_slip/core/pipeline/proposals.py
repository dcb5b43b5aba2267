"""Where candidate masks come from: SAM's automatic masks, or an existing label image.

Masks are stored cropped to their bounding box as boolean arrays: compact, and no
run-length encodings (which explode in size for noisy masks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import InputError
from ..models.promptable import ImageEmbedding, PromptableSam
from ..params import SamProposalParams
from ..runtime.perf import point_batch
from ..runtime.progress import Progress


@dataclass
class Proposals:
    """Candidate object masks for one image.

    Attributes
    ----------
    shape
        (H, W) of the image.
    boxes
        (N, 4) int: ``y0, x0, y1, x1`` with exclusive ends.
    masks
        N boolean arrays, each the mask cropped to its box.
    quality
        (N,) SAM's predicted IoU (1.0 for label proposals).
    source_ids
        (N,) the label value each proposal came from (0 for SAM proposals).
    """

    shape: tuple[int, int]
    boxes: np.ndarray
    masks: list[np.ndarray]
    quality: np.ndarray
    source_ids: np.ndarray
    #: How many grid points SAM's decoder ran on (0 for label proposals).
    decoded_points: int = 0
    #: Where SAM's masks went (:func:`funnel_hint`): decoded, dropped by each filter,
    #: kept; None for proposals not from SAM's grid.
    funnel: dict | None = None
    #: The SAM that decoded them (its provenance entry), for proposals from SAM:
    #: recorded when they are made, so a later selection names it without loading it.
    sam: dict | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def areas(self) -> np.ndarray:
        return np.array([int(m.sum()) for m in self.masks], dtype=np.int64)

    def full_mask(self, i: int) -> np.ndarray:
        """Proposal ``i`` as a boolean mask of the whole image."""
        out = np.zeros(self.shape, dtype=bool)
        y0, x0, y1, x1 = self.boxes[i]
        out[y0:y1, x0:x1] = self.masks[i]
        return out

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Proposals:
        return cls(
            tuple(shape),
            np.zeros((0, 4), dtype=np.int64),
            [],
            np.zeros(0, dtype=np.float32),
            np.zeros(0, dtype=np.int64),
        )


def proposals_from_labels(
    labels: np.ndarray, image_shape: tuple[int, int] | None = None
) -> Proposals:
    """Each non-zero label of a 2D label image becomes one proposal.

    Raises
    ------
    InputError
        If the labels are not a 2D integer array of the image's shape.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"Proposal labels must be a 2D label image; got shape {labels.shape}.")
    if image_shape is not None and tuple(labels.shape) != tuple(image_shape):
        raise InputError(
            f"Proposal labels have shape {labels.shape} but the image is {tuple(image_shape)}."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise InputError(f"Proposal labels must be integers; got dtype {labels.dtype}.")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if labels.min(initial=0) < 0:
        raise InputError("Proposal labels must not be negative.")
    values = np.unique(labels)
    values = values[values > 0]
    compact, source = labels, None
    if int(labels.max(initial=0)) > 2 * len(values) + 1024:
        # Sparse ids (e.g. one label of 2**31 - 1): find_objects would allocate a slot
        # per possible id, so number the labels 1..n first and keep their values.
        compact = np.searchsorted(values, labels).astype(np.int64) + 1
        compact[labels == 0] = 0
        source = values
    boxes, masks, ids = [], [], []
    for value, sl in enumerate(ndimage.find_objects(compact), start=1):
        if sl is None:
            continue
        mask = compact[sl] == value
        boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
        masks.append(mask)
        ids.append(int(source[value - 1]) if source is not None else value)
    n = len(masks)
    return Proposals(
        shape=tuple(labels.shape),
        boxes=np.asarray(boxes, dtype=np.int64).reshape(n, 4),
        masks=masks,
        quality=np.ones(n, dtype=np.float32),
        source_ids=np.asarray(ids, dtype=np.int64),
    )


def downscale_for_sam(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """``rgb`` shrunk (area-averaged) so its long side is at most ``max_side``."""
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


def upscale_proposals(props: Proposals, shape: tuple[int, int]) -> Proposals:
    """Proposals found on a downscaled image, at the full resolution ``shape``."""
    h, w = props.shape
    big_h, big_w = shape
    if (h, w) == (big_h, big_w):
        return props
    sy, sx = big_h / h, big_w / w
    boxes, masks = [], []
    for (y0, x0, y1, x1), mask in zip(props.boxes, props.masks, strict=True):
        by0, bx0 = int(np.floor(y0 * sy)), int(np.floor(x0 * sx))
        by1, bx1 = min(big_h, int(np.ceil(y1 * sy))), min(big_w, int(np.ceil(x1 * sx)))
        # Nearest neighbour: each full-resolution pixel takes the small pixel it lies in.
        rows = np.clip(((np.arange(by0, by1) + 0.5) / sy).astype(int) - y0, 0, mask.shape[0] - 1)
        cols = np.clip(((np.arange(bx0, bx1) + 0.5) / sx).astype(int) - x0, 0, mask.shape[1] - 1)
        boxes.append((by0, bx0, by1, bx1))
        masks.append(mask[np.ix_(rows, cols)])
    return Proposals(
        tuple(shape),
        np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
        masks,
        props.quality,
        props.source_ids,
        props.decoded_points,
        props.funnel,
    )


def grid_points(points_per_side: int, width: int, height: int, coarse_first: bool) -> np.ndarray:
    """SAM's point grid in pixels; with ``coarse_first``, every other point comes first."""
    from segment_anything.utils.amg import build_point_grid

    points = build_point_grid(points_per_side) * np.array([[width, height]])
    if not coarse_first:
        return points
    ij = np.stack(np.meshgrid(np.arange(points_per_side), np.arange(points_per_side)), -1)
    coarse = ((ij[..., 0] % 2 == 0) & (ij[..., 1] % 2 == 0)).reshape(-1)
    return np.concatenate([points[coarse], points[~coarse]])


def sam_proposals(
    sam: PromptableSam,
    embedding: ImageEmbedding,
    params: SamProposalParams | None = None,
    precision: str = "fp32",
) -> Generator[Progress, None, Proposals]:
    """SAM automatic masks from a point grid, yielding progress after each batch.

    Follows ``SamAutomaticMaskGenerator`` (single crop layer) with its semantics:
    predicted IoU must be above ``pred_iou_thresh`` and stability at least
    ``stability_score_thresh`` (each filter off at 0), then box NMS. Two things are
    done more cheaply without changing the answer: the predicted-IoU filter runs on
    the decoder's low-resolution output, so only surviving masks are upsampled; and
    masks are kept cropped and binary (no run-length encodings). Unlike SAM, empty
    masks, masks below ``min_area`` pixels and masks over ``max_area_share`` of the image are
    dropped.

    Parameters
    ----------
    sam
        The promptable SAM.
    embedding
        The image's embedding (see :meth:`PromptableSam.embed`).
    params
        Generation options.
    precision
        ``fp32``, ``bf16`` or ``fp16`` for the decoder (see :mod:`..runtime.perf`).
    """
    params = params or SamProposalParams()
    h, w = embedding.original_size
    points = grid_points(params.points_per_side, w, h, params.skip_covered)
    return (yield from point_list_proposals(sam, embedding, points, params, precision))


def point_list_proposals(
    sam: PromptableSam,
    embedding: ImageEmbedding,
    points: np.ndarray,
    params: SamProposalParams,
    precision: str = "fp32",
    skip_covered: bool | None = None,
    always: int = 0,
) -> Generator[Progress, None, Proposals]:
    """SAM's masks of ``points`` ((N, 2) pixels x, y, decoded in their order) through
    the filters and NMS of :func:`sam_proposals` (its grid is one such list).
    ``skip_covered`` (default: ``params.skip_covered``): a point inside a mask already
    kept is not decoded, except the first ``always`` points."""
    if skip_covered is None:
        skip_covered = params.skip_covered
    h, w = embedding.original_size
    batch_size = point_batch(precision, sam.device, params.points_per_batch)
    covered = np.zeros((h, w), dtype=bool)
    boxes, crops, scores, counts = [], [], [], Counter()
    n_points, done, decoded = len(points), 0, 0
    yield Progress("proposals", 0, n_points, "SAM mask decoder", heavy=True)
    while done < n_points:
        batch = points[done : done + batch_size]
        first = done
        done += len(batch)
        if skip_covered:
            inside = covered[
                np.clip(batch[:, 1].astype(int), 0, h - 1),
                np.clip(batch[:, 0].astype(int), 0, w - 1),
            ]
            inside &= np.arange(first, done) >= always
            batch = batch[~inside]
            if not len(batch):
                yield Progress("proposals", done, n_points, f"{len(crops)} candidate masks")
                continue
        decoded += len(batch)
        if params.pred_iou_thresh > 0:
            # Only masks above the IoU filter get the decoder's mask head.
            low_res, iou = sam.decode_points_above(
                embedding, batch, params.pred_iou_thresh, precision
            )
            counts["below_iou"] += 3 * len(batch) - len(iou)  # three masks per point
        else:
            low_res, iou = sam.decode_points(embedding, batch, precision)
            low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        for box, crop, score, _ in binary_masks(sam, embedding, low_res, iou, params, counts):
            crops.append(crop)
            boxes.append(box)
            scores.append(score)
            if skip_covered:
                y0, x0, y1, x1 = box
                covered[y0:y1, x0:x1] |= crop
        yield Progress("proposals", done, n_points, f"{len(crops)} candidate masks")
    props = nms_proposals((h, w), boxes, crops, scores, params.box_nms_thresh, decoded)
    funnel = {
        "points": decoded,
        "masks": 3 * decoded,
        "below_iou": 0,
        "unstable": 0,
        "too_small": 0,
        "too_large": 0,
        **counts,
        "overlapping": len(crops) - len(props),
        "kept": len(props),
        "min_iou": params.pred_iou_thresh,
        "min_stability": params.stability_score_thresh,
        "min_area": params.min_area,
        "max_area_share": params.max_area_share,
    }
    return replace(props, funnel=funnel)


#: What SAM's three filters are called where a user sets them: in Python (the
#: ``SamProposalParams`` fields), on the command line, in the widget.
FILTER_NAMES = {
    "python": ("pred_iou_thresh", "stability_score_thresh", "min_area", "sam_params"),
    "cli": ("--pred-iou-thresh", "--stability-score-thresh", "--min-area", None),
    "widget": ("Min IoU", "Min stability", "Min area", "Advanced settings"),
}


def funnel_hint(funnel: dict, surface: str = "python") -> str:
    """Why SAM's grid left no candidate, in one line, and what to try, naming the
    filters as ``surface`` (``python``, ``cli``, ``widget``) calls them."""
    iou, stability, area, where = FILTER_NAMES.get(surface, FILTER_NAMES["python"])
    shown = [
        f"{funnel.get('below_iou', 0)} below {iou} {funnel['min_iou']:g}",
        f"{funnel.get('unstable', 0)} below {stability} {funnel['min_stability']:g}",
        f"{funnel.get('too_small', 0)} under {area} {funnel['min_area']} px",
    ]
    if funnel.get("too_large"):
        shown.append(f"{funnel['too_large']} over {funnel['max_area_share']:g} of the image")
    within = f" ({where})" if where else ""
    return (
        f"SAM decoded {funnel['points']} points ({funnel['masks']} masks): "
        f"{', '.join(shown)}. Lower {iou} or {stability}{within}, try "
        "guided proposals, or raise the image's contrast."
    )


def for_surface(message: str, funnel: dict | None, surface: str) -> str:
    """``message`` (a run's, naming Python's filters) as ``surface`` should read it."""
    if not funnel:
        return message
    return message.replace(funnel_hint(funnel), funnel_hint(funnel, surface))


def binary_masks(
    sam: PromptableSam,
    embedding: ImageEmbedding,
    low_res: torch.Tensor,
    iou: torch.Tensor,
    params: SamProposalParams,
    counts: Counter | None = None,
) -> list[tuple[tuple[int, int, int, int], np.ndarray, float, int]]:
    """SAM's low-resolution logits -> ``(box, cropped mask, predicted IoU, row)`` of each
    mask that passes the stability and area filters (``row``: its index in the input);
    ``counts`` gains how many each filter dropped (``unstable``, ``too_small``)."""
    from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

    if not len(iou):
        return []
    threshold = sam.mask_threshold
    logits = sam.upscale(low_res, embedding)
    rows = torch.arange(len(iou))
    if params.stability_score_thresh > 0:
        stability = calculate_stability_score(logits, threshold, params.stability_score_offset)
        keep = (stability >= params.stability_score_thresh).cpu()
        logits, iou, rows = logits[keep.to(logits.device)], iou[keep.to(iou.device)], rows[keep]
        if counts is not None:
            counts["unstable"] += int((~keep).sum())
    binary = logits > threshold
    del logits
    areas = binary.flatten(1).sum(1)
    keep = (areas >= max(params.min_area, 1)).cpu()  # smaller than min_area: dropped
    if counts is not None:
        counts["too_small"] += int((~keep).sum())
    if params.max_area_share < 1:  # more than max_area_share of the image: dropped
        large = (areas > params.max_area_share * binary[0].numel()).cpu() & keep
        keep &= ~large
        if counts is not None:
            counts["too_large"] += int(large.sum())
    binary, iou, rows = binary[keep.to(binary.device)], iou[keep.to(iou.device)], rows[keep]
    bb = batched_mask_to_box(binary)  # x0, y0, x1, y1 inclusive
    out = []
    for m, (x0, y0, x1, y1), s, r in zip(
        binary, bb.tolist(), iou.tolist(), rows.tolist(), strict=True
    ):
        # A copy: a view would keep the whole batch of full-size masks alive.
        crop = m[y0 : y1 + 1, x0 : x1 + 1].cpu().numpy().copy()
        out.append(((y0, x0, y1 + 1, x1 + 1), crop, s, r))
    return out


def nms_proposals(
    shape: tuple[int, int],
    boxes: list,
    crops: list[np.ndarray],
    scores: list[float],
    nms_thresh: float,
    decoded: int = 0,
) -> Proposals:
    """Box non-maximum suppression (SAM's) over masks, as :class:`Proposals`."""
    from torchvision.ops import batched_nms

    if not crops:
        return replace(Proposals.empty(shape), decoded_points=decoded)
    box_t = torch.as_tensor(boxes, dtype=torch.float32)[:, [1, 0, 3, 2]]
    score_t = torch.as_tensor(scores, dtype=torch.float32)
    keep = batched_nms(box_t, score_t, torch.zeros(len(scores)), nms_thresh).tolist()
    return Proposals(
        shape=tuple(shape),
        boxes=np.asarray([boxes[i] for i in keep], dtype=np.int64).reshape(-1, 4),
        masks=[crops[i] for i in keep],
        quality=np.asarray([scores[i] for i in keep], dtype=np.float32),
        source_ids=np.zeros(len(keep), dtype=np.int64),
        decoded_points=decoded,
    )


def near_duplicates(proposals: Proposals, order: np.ndarray, iou: float) -> np.ndarray:
    """``order`` without the masks whose IoU with an earlier kept one exceeds ``iou``."""
    kept: list[int] = []
    boxes = np.asarray(proposals.boxes, dtype=np.int64).reshape(-1, 4)
    areas = proposals.areas
    for i in order:
        y0, x0, y1, x1 = boxes[i]
        duplicate = False
        for j in kept:
            b = boxes[j]
            oy0, ox0, oy1, ox1 = max(y0, b[0]), max(x0, b[1]), min(y1, b[2]), min(x1, b[3])
            if oy0 >= oy1 or ox0 >= ox1:
                continue
            small = min(areas[i], areas[j])
            if small < iou * max(areas[i], areas[j]):
                continue  # sizes too different to be duplicates
            mi = proposals.masks[i][oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
            mj = proposals.masks[j][oy0 - b[0] : oy1 - b[0], ox0 - b[1] : ox1 - b[1]]
            inter = int(np.count_nonzero(mi & mj))
            if inter / (areas[i] + areas[j] - inter) > iou:
                duplicate = True
                break
        if not duplicate:
            kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)
