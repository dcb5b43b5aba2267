"""Where candidate masks come from: SAM's automatic masks, or an existing label image.

Masks are stored cropped to their bounding box as boolean arrays: compact, and no
run-length encodings (which explode in size for noisy masks).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .errors import InputError
from .perf import autocast
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
    #: How many grid points SAM's decoder ran on (0 for label proposals).
    decoded_points: int = 0

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
    that many pixels. ``skip_covered`` (opt-in) visits a coarse half-density grid
    first, then skips the remaining grid points that fall inside masks already
    accepted: faster on images with large objects, but objects nested inside others
    can be missed, and its quality cost has not been measured with trained weights.
    ``SamProposalParams.exact()`` spells out SAM's own generator.
    """

    points_per_side: int = 32
    #: Points decoded together; None: 16 on a CPU (as fast as 64, 0.5 GB less memory
    #: at 1024 px), 64 on a GPU. Points are independent: this never changes the answer.
    points_per_batch: int | None = None
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area: int = 0
    skip_covered: bool = False
    #: SAM runs on a copy at most this many pixels on its long side (its encoder sees
    #: 1024 px anyway); masks are scaled back to full resolution. Bounds memory on big
    #: images. None: always full resolution.
    max_side: int | None = 2048

    @classmethod
    def exact(cls, **overrides) -> SamProposalParams:
        """SAM's automatic mask generator exactly: every grid point is decoded."""
        return cls(**{"skip_covered": False, **overrides})

    def as_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.points_per_side < 1:
            raise InputError(f"points_per_side must be at least 1; got {self.points_per_side}.")
        if self.max_side is not None and self.max_side < 64:
            raise InputError(f"max_side must be at least 64 pixels; got {self.max_side}.")
        if self.points_per_batch is not None and self.points_per_batch < 1:
            raise InputError(f"points_per_batch must be at least 1; got {self.points_per_batch}.")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"{name} must be between 0 and 1; got {value}.")


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
    )


def embed_image(sam: torch.nn.Module, rgb: np.ndarray, precision: str = "fp32"):
    """Run SAM's image encoder once; returns a ready ``SamPredictor``.

    The features are kept in float32 whatever the precision they were computed in.
    """
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    with torch.no_grad(), autocast(precision, predictor.device):
        predictor.set_image(rgb, image_format="RGB")
    predictor.features = predictor.features.float()
    return predictor


def decode_points(model, features, dense_pe, sparse, dense):
    """SAM's mask decoder for a batch of single-image prompts, sharing the image work.

    ``MaskDecoder.predict_masks`` copies the image embedding once per prompt, although
    the first transformer layer's image-side projections (~0.8 of the 3.6 GFLOP per
    point at 1024 px) are the same for every prompt. Passed with batch size 1, they are
    computed once and broadcast by the attention's matrix products: the same
    arithmetic, less work and memory. Returns ``(low_res_masks, iou_predictions)`` for
    the multimask outputs, like ``MaskDecoder(..., multimask_output=True)``.
    """
    decoder = model.mask_decoder
    n = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
    # Without a mask prompt the dense embedding is one learnt vector, broadcast.
    src = features + dense[:1]
    hs, src = decoder.transformer(src, dense_pe, tokens)
    src = src.expand(n, -1, -1) if src.shape[0] == 1 else src
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    _, c, h, w = features.shape
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(n, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou = decoder.iou_prediction_head(iou_token_out)
    return masks[:, 1:], iou[:, 1:]


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
    predictor, params: SamProposalParams = SamProposalParams(), precision: str = "fp32"
) -> Generator[Progress, None, Proposals]:
    """SAM automatic masks from a point grid, yielding progress after each batch.

    Follows ``SamAutomaticMaskGenerator`` (single crop layer): predicted-IoU and
    stability filtering, box NMS, minimum area. Two things are done more cheaply
    without changing the answer: the predicted-IoU filter runs on the decoder's
    low-resolution output, so only surviving masks are upsampled to full resolution;
    and masks are kept cropped and binary (no run-length encodings).

    Parameters
    ----------
    predictor
        A ``SamPredictor`` whose image is set (see :func:`embed_image`).
    params
        Generation options.
    precision
        ``fp32``, ``bf16`` or ``fp16`` for the decoder (see :mod:`.perf`).
    """
    from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score
    from torchvision.ops import batched_nms

    model = predictor.model
    h, w = predictor.original_size
    points = grid_points(params.points_per_side, w, h, params.skip_covered)
    device = predictor.device
    threshold = model.mask_threshold
    batch_size = params.points_per_batch or (64 if device.type == "cuda" else 16)
    covered = np.zeros((h, w), dtype=bool)
    boxes, crops, scores = [], [], []
    n_points, done, decoded = len(points), 0, 0
    dense_pe = model.prompt_encoder.get_dense_pe()
    yield Progress("proposals", 0, n_points, "SAM mask decoder")
    while done < n_points:
        batch = points[done : done + batch_size]
        done += len(batch)
        if params.skip_covered:
            inside = covered[
                np.clip(batch[:, 1].astype(int), 0, h - 1),
                np.clip(batch[:, 0].astype(int), 0, w - 1),
            ]
            batch = batch[~inside]
            if not len(batch):
                yield Progress("proposals", done, n_points, f"{len(crops)} candidate masks")
                continue
        decoded += len(batch)
        coords = predictor.transform.apply_coords(batch, (h, w))
        in_points = torch.as_tensor(coords, dtype=torch.float32, device=device)[:, None, :]
        in_labels = torch.ones(in_points.shape[:2], dtype=torch.int64, device=device)
        with torch.no_grad(), autocast(precision, device):
            sparse, dense = model.prompt_encoder(
                points=(in_points, in_labels), boxes=None, masks=None
            )
            low_res, iou = decode_points(model, predictor.features, dense_pe, sparse, dense)
        low_res, iou = low_res.float().flatten(0, 1), iou.float().flatten(0, 1)
        keep = iou >= params.pred_iou_thresh
        low_res, iou = low_res[keep], iou[keep]
        if len(iou):
            with torch.no_grad():
                logits = model.postprocess_masks(low_res[:, None], predictor.input_size, (h, w))[
                    :, 0
                ]
            stability = calculate_stability_score(logits, threshold, params.stability_score_offset)
            keep = stability >= params.stability_score_thresh
            binary, iou = logits[keep] > threshold, iou[keep]
            del logits
            areas = binary.flatten(1).sum(1)
            keep = areas > max(params.min_area, 0)
            binary, iou = binary[keep], iou[keep]
            bb = batched_mask_to_box(binary)  # x0, y0, x1, y1 inclusive
            for m, (x0, y0, x1, y1), s in zip(binary, bb.tolist(), iou.tolist(), strict=True):
                crop = m[y0 : y1 + 1, x0 : x1 + 1].cpu().numpy()
                crops.append(crop)
                boxes.append((y0, x0, y1 + 1, x1 + 1))
                scores.append(s)
                if params.skip_covered:
                    covered[y0 : y1 + 1, x0 : x1 + 1] |= crop
        yield Progress("proposals", done, n_points, f"{len(crops)} candidate masks")
    if not crops:
        return replace(Proposals.empty((h, w)), decoded_points=decoded)
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
        decoded_points=decoded,
    )
