"""Where candidate masks come from: SAM's automatic masks, or an existing label image.

Masks are stored cropped to their bounding box as boolean arrays: compact, and no
run-length encodings (which explode in size for noisy masks).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .errors import InputError
from .progress import Progress


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
    boxes, masks, ids = [], [], []
    for value, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == value
        boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
        masks.append(mask)
        ids.append(value)
    n = len(masks)
    return Proposals(
        shape=tuple(labels.shape),
        boxes=np.asarray(boxes, dtype=np.int64).reshape(n, 4),
        masks=masks,
        quality=np.ones(n, dtype=np.float32),
        source_ids=np.asarray(ids, dtype=np.int64),
    )


@dataclass(frozen=True)
class SamProposalParams:
    """Options of SAM's automatic mask generation (SAM's own names and defaults).

    ``points_per_side`` is the grid density; ``min_area`` drops masks smaller than
    that many pixels.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.points_per_side < 1:
            raise InputError(f"points_per_side must be at least 1; got {self.points_per_side}.")
        if self.points_per_batch < 1:
            raise InputError(f"points_per_batch must be at least 1; got {self.points_per_batch}.")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"{name} must be between 0 and 1; got {value}.")


def embed_image(sam: torch.nn.Module, rgb: np.ndarray):
    """Run SAM's image encoder once; returns a ready ``SamPredictor``."""
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    with torch.no_grad():
        predictor.set_image(rgb, image_format="RGB")
    return predictor


def sam_proposals(
    predictor, params: SamProposalParams = SamProposalParams()
) -> Generator[Progress, None, Proposals]:
    """SAM automatic masks from a point grid, yielding progress after each batch.

    Follows ``SamAutomaticMaskGenerator`` (single crop layer): predicted-IoU and
    stability filtering, box NMS, minimum area; masks are kept cropped and binary.

    Parameters
    ----------
    predictor
        A ``SamPredictor`` whose image is set (see :func:`embed_image`).
    params
        Generation options.
    """
    from segment_anything.utils.amg import (
        batched_mask_to_box,
        build_point_grid,
        calculate_stability_score,
    )
    from torchvision.ops import batched_nms

    h, w = predictor.original_size
    points = build_point_grid(params.points_per_side) * np.array([[w, h]])
    n_batches = -(-len(points) // params.points_per_batch)
    device = predictor.device
    threshold = predictor.model.mask_threshold
    boxes, crops, scores = [], [], []
    yield Progress("proposals", 0, n_batches, "SAM mask decoder")
    for b in range(n_batches):
        batch = points[b * params.points_per_batch : (b + 1) * params.points_per_batch]
        coords = predictor.transform.apply_coords(batch, (h, w))
        in_points = torch.as_tensor(coords, dtype=torch.float32, device=device)[:, None, :]
        in_labels = torch.ones(in_points.shape[:2], dtype=torch.int64, device=device)
        with torch.no_grad():
            logits, iou, _ = predictor.predict_torch(
                in_points, in_labels, multimask_output=True, return_logits=True
            )
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
        keep = iou >= params.pred_iou_thresh
        logits, iou = logits[keep], iou[keep]
        if len(iou):
            stability = calculate_stability_score(logits, threshold, params.stability_score_offset)
            keep = stability >= params.stability_score_thresh
            logits, iou = logits[keep], iou[keep]
        if len(iou):
            binary = logits > threshold
            del logits
            areas = binary.flatten(1).sum(1)
            keep = areas > max(params.min_area, 0)
            binary, iou = binary[keep], iou[keep]
            bb = batched_mask_to_box(binary)  # x0, y0, x1, y1 inclusive
            for m, (x0, y0, x1, y1), s in zip(binary, bb.tolist(), iou.tolist(), strict=True):
                crops.append(m[y0 : y1 + 1, x0 : x1 + 1].cpu().numpy())
                boxes.append((y0, x0, y1 + 1, x1 + 1))
                scores.append(s)
        yield Progress("proposals", b + 1, n_batches, f"{len(crops)} candidate masks")
    if not crops:
        return Proposals.empty((h, w))
    box_t = torch.as_tensor(boxes, dtype=torch.float32)[:, [1, 0, 3, 2]]
    score_t = torch.as_tensor(scores, dtype=torch.float32)
    keep = batched_nms(box_t, score_t, torch.zeros(len(scores)), params.box_nms_thresh)
    keep = keep.tolist()
    return Proposals(
        shape=(h, w),
        boxes=np.asarray([boxes[i] for i in keep], dtype=np.int64).reshape(-1, 4),
        masks=[crops[i] for i in keep],
        quality=np.asarray([scores[i] for i in keep], dtype=np.float32),
        source_ids=np.zeros(len(keep), dtype=np.int64),
    )
