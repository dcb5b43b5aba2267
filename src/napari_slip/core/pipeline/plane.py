"""One image a result was made from, as features beside the engine see it.

A :class:`PlaneHandle` holds the image's own cache (its prepared pixels and SAM's
embedding of them), never a pointer to "the segmenter's current image": an edit of a
result decodes on that result's image even after the segmenter has seen others.
Through it an editor decodes SAM's prompts (positive and negative points, a box),
embeds a mask's crop with CLIP, and reads a phrase's text embedding; nothing else of
the engine is reachable from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..params import CropParams, SamProposalParams
from ..runtime.generators import drain
from .context import RunContext
from .images import LazyImage
from .proposals import Proposals
from .scoring import embed_proposals
from .session import ImageSession


@dataclass(frozen=True)
class PlaneMask:
    """SAM's answer to one prompt: the (H, W) mask and its predicted IoU."""

    mask: np.ndarray
    quality: float


@dataclass(frozen=True, eq=False)
class PlaneHandle:
    """The narrow interface of one segmented image (see the module's docstring).

    Made by :func:`plane_of` from a segmenter's :meth:`~.segmenter.Segmenter.scope`
    of the result's run.
    """

    session: ImageSession
    context: RunContext
    sam_params: SamProposalParams
    crop_params: CropParams

    @property
    def key(self) -> str:
        """The content hash of the prepared image."""
        return self.session.key

    @property
    def image(self):
        """The image as the models see it (a prepared image: ``rgb``, ``read``)."""
        return self.session.image

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.session.image.shape[:2])

    def decode(
        self,
        points: Sequence[tuple[float, float]] = (),
        positive: Sequence[bool] = (),
        box: tuple[float, float, float, float] | None = None,
    ) -> PlaneMask:
        """SAM's mask for one prompt on this image's cached embedding.

        Parameters
        ----------
        points
            (y, x) pixels of the image.
        positive
            For each point: True inside the object, False outside.
        box
            ``(y0, x0, y1, x1)`` around the object (exclusive ends), or None.

        Points alone ask for SAM's three masks (points are ambiguous: a part, the
        object, a group) and take the one of best predicted IoU that holds every
        positive point and no negative one (else the best holding the first point);
        with a box, SAM's one mask.
        """
        if isinstance(self.session.image, LazyImage):
            raise InputError(
                "Edits decode on a whole image's SAM embedding; this image is tiled. "
                "Edit the labels with napari's brush, or segment a smaller region."
            )
        if not len(points) and box is None:
            raise InputError("A prompt needs a point or a box.")
        if len(positive) != len(points):
            raise InputError("Give one positive/negative flag per point.")
        sam = drain(self.context.iter_load("sam")).promptable
        params = self.sam_params
        embedding = drain(self.context.iter_embedding(self.session, params))
        h, w = self.shape
        eh, ew = embedding.original_size
        xy = np.array([[(x + 0.5) * ew / w, (y + 0.5) * eh / h] for y, x in points])
        xy = xy.reshape(-1, 2)
        box_xyxy = None
        if box is not None:
            y0, x0, y1, x1 = box
            box_xyxy = np.array([x0 * ew / w, y0 * eh / h, x1 * ew / w, y1 * eh / h])
        multimask = box is None
        flags = np.asarray(positive, dtype=bool)
        precision = self.context.precision
        logits, quality = sam.decode_prompt(embedding, xy, flags, box_xyxy, multimask, precision)
        if (eh, ew) != (h, w):
            import torch

            logits = torch.nn.functional.interpolate(
                logits[None], size=(h, w), mode="bilinear", align_corners=False
            )[0]
        masks = (logits > sam.mask_threshold).cpu().numpy()
        quality = quality.cpu().numpy()
        order = np.argsort(-quality)
        if multimask:
            pixels = [(min(int(y), h - 1), min(int(x), w - 1)) for y, x in points]
            agree = [
                i
                for i in order
                if all(masks[i][p] == bool(f) for p, f in zip(pixels, positive, strict=True))
            ]
            holding = [i for i in order if masks[i][pixels[0]]]
            order = agree or holding or order
        best = int(order[0])
        return PlaneMask(masks[best], float(quality[best]))

    def warm(self) -> bool:
        """Decode one point and keep nothing, so that the first real prompt pays no
        set-up (after a run, ViT-B's first one-point decode took 80 ms here, the next
        ones 58 ms):
        what a GUI does while the user looks at a result that SAM made. Not on a
        tiled image; returns whether it ran."""
        if isinstance(self.session.image, LazyImage):
            return False
        h, w = self.shape
        self.decode([(h / 2, w / 2)], [True])
        return True

    def embed_masks(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) L2-normalised CLIP embeddings of the masks' crops (as a run's)."""
        proposals = proposals_of_masks(self.shape, masks)
        clip = drain(self.context.iter_load("clip")).clip
        return drain(embed_proposals(clip, self.image, proposals, self.crop_params))

    def text_embedding(self, phrase: str) -> np.ndarray:
        """A phrase's embedding through the run's templates (cached)."""
        return self.context.relevance.texts.embed(phrase)


def plane_of(segmenter, result, plane: tuple[int, ...] | None = None) -> PlaneHandle:
    """The image ``result`` (its ``plane``, of a stack) was made from, as edits use
    it: that image's own cache in ``segmenter``, whichever image it saw last, with the
    models and options of the run that made ``result`` (``result.config``; else the
    segmenter's own)."""
    scope = segmenter.scope(getattr(result, "config", None))
    session = scope.context.session(candidates_of(result, plane).image_key)
    if session is None:
        raise InputError("The image is no longer cached: segment it again, then edit.")
    return PlaneHandle(session, scope.context, scope.sam_params, scope.crop_params)


def candidates_of(result, plane: tuple[int, ...] | None = None):
    """The :class:`~.session.Candidates` of ``result``, or of its ``plane`` (a stack's;
    None: its only one)."""
    candidates = result.candidates
    if isinstance(candidates, dict):
        if plane is None and len(candidates) == 1:
            plane = next(iter(candidates))
        candidates = candidates.get(tuple(plane) if plane is not None else None)
        if candidates is None:
            raise InputError(
                f"Plane {plane} of this result was not segmented: give a plane that was."
            )
    if candidates is None:
        raise InputError("This result carries no candidates: segment again.")
    return candidates


def proposals_of_masks(shape: tuple[int, int], masks: Sequence[np.ndarray]) -> Proposals:
    """Full-size (H, W) masks as :class:`~.proposals.Proposals` (box and cropped mask)."""
    boxes, crops = [], []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        if not len(ys):
            raise InputError("An empty mask has no object to embed.")
        y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        boxes.append([y0, x0, y1, x1])
        crops.append(np.asarray(mask[y0:y1, x0:x1], dtype=bool))
    n = len(crops)
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return Proposals(tuple(shape), boxes, crops, np.ones(n, np.float32), np.zeros(n, np.int64))


__all__ = ["PlaneHandle", "PlaneMask", "candidates_of", "plane_of", "proposals_of_masks"]
