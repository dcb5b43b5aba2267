"""The promptable-SAM interface: embed an image once, decode batches of point prompts.

Proposal code talks to SAM only through :class:`PromptableSam`, never to
``SamPredictor`` or ``MaskDecoder`` internals, so other encoders with SAM's prompt
encoder and mask decoder can be plugged in behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..runtime.perf import autocast


@dataclass
class ImageEmbedding:
    """SAM's image features for one image.

    Attributes
    ----------
    features
        (1, C, h, w) float32 image embedding.
    original_size
        (H, W) of the image that was embedded.
    input_size
        (h, w) of that image resized to the encoder's long side (before padding).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


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


class PromptableSam:
    """A SAM model behind a small interface: :meth:`embed`, :meth:`decode_points`,
    :meth:`upscale`.

    Parameters
    ----------
    model
        A ``segment_anything`` ``Sam`` (any encoder with its output shape will do).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.model = model
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self._dense_pe = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def input_size(self) -> int:
        """The side SAM's encoder works at (1024 for SAM's own models)."""
        return int(self.transform.target_length)

    @property
    def mask_threshold(self) -> float:
        return float(self.model.mask_threshold)

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Refuse images so thin that SAM's input would be under one patch high."""
        h, w = shape
        side = self.transform.target_length
        if min(h, w) * side / max(h, w) < 16:
            raise InputError(
                f"The image is {h} x {w} pixels: too thin for SAM, which sees its long side "
                f"at {side} pixels (the short side would be under one patch). Segment it in "
                "pieces, or give proposals from a label image."
            )

    @torch.no_grad()
    def embed(self, rgb: np.ndarray, precision: str = "fp32") -> ImageEmbedding:
        """Run the image encoder on an (H, W, 3) uint8 image; features kept in fp32."""
        self.check_shape(rgb.shape[:2])
        resized = self.transform.apply_image(rgb)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        input_size = tuple(int(v) for v in x.shape[-2:])
        with autocast(precision, self.device):
            features = self.model.image_encoder(self.model.preprocess(x))
        return ImageEmbedding(features.float(), tuple(rgb.shape[:2]), input_size)

    @torch.no_grad()
    def decode_points(
        self, embedding: ImageEmbedding, points_xy: np.ndarray, precision: str = "fp32"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one positive point per prompt.

        Parameters
        ----------
        embedding
            From :meth:`embed`.
        points_xy
            (N, 2) pixel coordinates (x, y) in the embedded image.

        Returns
        -------
        (low_res_logits, iou)
            (N, 3, h, w) mask logits at the decoder's resolution and (N, 3) predicted
            IoUs, both float32.
        """
        coords = self.transform.apply_coords(np.asarray(points_xy), embedding.original_size)
        points = torch.as_tensor(coords, dtype=torch.float32, device=self.device)[:, None, :]
        labels = torch.ones(points.shape[:2], dtype=torch.int64, device=self.device)
        if self._dense_pe is None:
            self._dense_pe = self.model.prompt_encoder.get_dense_pe()
        with autocast(precision, self.device):
            sparse, dense = self.model.prompt_encoder(
                points=(points, labels), boxes=None, masks=None
            )
            low_res, iou = decode_points(
                self.model, embedding.features, self._dense_pe, sparse, dense
            )
        return low_res.float(), iou.float()

    @torch.no_grad()
    def upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        """(M, h, w) low-resolution logits -> (M, H, W) logits at the image's size."""
        return self.model.postprocess_masks(
            low_res[:, None], embedding.input_size, embedding.original_size
        )[:, 0]
