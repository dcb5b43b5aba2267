"""The promptable-SAM interface: embed an image once, decode batches of point prompts.

Proposal code talks to SAM only through :class:`PromptableSam`, never to
``SamPredictor`` or ``MaskDecoder`` internals, so other encoders with SAM's prompt
encoder and mask decoder can be plugged in behind it.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from ..errors import InputError
from ..runtime.perf import autocast, stage_precision, stage_threads
from .fast import FastUpscaling

#: Whether :func:`decode_points` takes the image maps channels last (off only in the
#: benchmark's ablation).
CHANNELS_LAST_MAPS = True

#: Whether bf16 on a CPU decodes with a bf16 copy of the mask decoder rather than under
#: autocast (off only in the benchmark's ablation; see ``PromptableSam._decoder``).
NATIVE_BF16_DECODER = True


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
    _maps: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def maps(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The features in channels-last memory (and ``dtype``: the bf16 decoder's),
        as the mask decoder reads them; made on the first decode and kept while the
        features are these (each click converted them again: 2 ms of its decode)."""
        if self._maps.get("features") is not self.features:
            self._maps = {"features": self.features}
        if dtype not in self._maps:
            maps = self.features.contiguous(memory_format=torch.channels_last)
            self._maps[dtype] = maps if dtype is None else maps.to(dtype)
        return self._maps[dtype]


def decode_points(
    model,
    features,
    dense_pe,
    sparse,
    dense,
    pred_iou_thresh=None,
    return_index=False,
    multimask=True,
):
    """SAM's mask decoder for a batch of single-image prompts, sharing the image work.

    ``MaskDecoder.predict_masks`` copies the image embedding once per prompt, although
    the first transformer layer's image-side projections (~0.8 of the 3.6 GFLOP per
    point at 1024 px) are the same for every prompt. Passed with batch size 1, they are
    computed once and broadcast by the attention's matrix products: the same
    arithmetic, less work and memory. Returns ``(low_res_masks, iou_predictions)`` for
    the multimask outputs, like ``MaskDecoder(..., multimask_output=True)``.

    With ``pred_iou_thresh``, the predicted IoUs (which come from the transformer
    alone) are computed first, and the mask head (upscaling convolutions and
    hypernetworks, a quarter of the work) runs only for masks whose IoU is above it:
    returns ``(low_res (M, h, w), iou (M,))`` of those masks, in prompt order, and
    with ``return_index`` also ``(M,)`` the prompt each mask answers.

    With ``multimask`` False, SAM's single-mask output instead (a prompt that is not
    ambiguous: several points, a box): ``(B, 1, h, w)`` and ``(B, 1)``.
    """
    decoder = model.mask_decoder
    # Channels last: the transformer flattens these maps to (token, channel) matrices,
    # which in this layout are their memory as it is; from NCHW, every prompt's adds
    # and norms over 4,096 image tokens ran strided (15% of a point's time at 1,024 px).
    if CHANNELS_LAST_MAPS:
        features = features.contiguous(memory_format=torch.channels_last)
        dense_pe = dense_pe.contiguous(memory_format=torch.channels_last)
    n = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
    # Without a mask prompt the dense embedding is one learnt vector, broadcast (over
    # the image's grid, whatever its size: see PromptableSam.embed's side).
    src = features + dense[:1, :, :1, :1]
    hs, src = decoder.transformer(src, dense_pe, tokens)
    src = src.expand(n, -1, -1) if src.shape[0] == 1 else src
    outputs = slice(1, None) if multimask else slice(0, 1)
    iou = decoder.iou_prediction_head(hs[:, 0, :])[:, outputs]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    keep = None
    if pred_iou_thresh is not None:
        keep = iou > pred_iou_thresh
        prompts = keep.any(1)
        if not bool(prompts.any()):
            side = 4 * features.shape[-1]
            empty = (features.new_zeros((0, side, side)), iou.new_zeros((0,)))
            return (*empty, torch.zeros(0, dtype=torch.long)) if return_index else empty
        which = torch.nonzero(prompts)[:, 0]
        if not bool(prompts.all()):
            src, mask_tokens_out, keep = src[prompts], mask_tokens_out[prompts], keep[prompts]
    b = src.shape[0]
    _, c, h, w = features.shape
    maps = src.transpose(1, 2).reshape(b, c, h, w)  # channels last in memory
    # The outputs asked for only (SAM computes every mask token's, then drops some).
    mlps = list(enumerate(decoder.output_hypernetworks_mlps))[outputs]
    hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in mlps], dim=1)
    upscaling = decoder.output_upscaling
    if isinstance(upscaling, FastUpscaling):
        masks = upscaling.masks(maps, hyper_in)
    else:
        upscaled = upscaling(maps)
        _, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    if keep is None:
        return masks, iou
    if return_index:
        return masks[keep], iou[iou > pred_iou_thresh], which[torch.nonzero(keep)[:, 0]].cpu()
    return masks[keep], iou[iou > pred_iou_thresh]


def int8_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of SAM with its linear layers quantized to int8, except the decoder's
    cross-attention layers that fold their image-side projections (SAM's width, see
    :class:`~.fast.FastDecoderAttention`): folded in fp32 they do less than half the
    work, which is faster than int8 products of the whole image side (12 against 16 ms
    per point on 2 AVX2 cores). The fp32 model is left as it is."""
    import copy

    from ..runtime.perf import quantize_int8
    from .fast import FastDecoderAttention

    quantized = copy.deepcopy(model).cpu().eval()
    keep = {
        name: copy.deepcopy(module)
        for name, module in quantized.named_modules()
        if isinstance(module, FastDecoderAttention) and module.folding_saves()
    }
    quantize_int8(quantized)
    for name, module in keep.items():
        parent, _, child = name.rpartition(".")
        setattr(quantized.get_submodule(parent), child, module)
    return quantized


class Bf16Decoder(torch.nn.Module):
    """A bf16 copy of SAM's mask decoder, as the ``mask_decoder`` of a model
    :func:`decode_points` takes (the image encoder is not copied)."""

    def __init__(self, mask_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.mask_decoder = copy.deepcopy(mask_decoder).to(torch.bfloat16).eval()


class PromptableSam:
    """A SAM model behind a small interface: :meth:`embed`, :meth:`decode_points`,
    :meth:`upscale`.

    Parameters
    ----------
    model
        A ``segment_anything`` ``Sam`` (any encoder with its output shape will do).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self._dense_pe: dict = {}
        self._int8 = None
        self._bf16 = None
        self._lock = threading.Lock()

    def _model(self, precision: str) -> torch.nn.Module:
        """The model that runs ``precision``: for ``int8`` a copy whose linear layers
        are quantized (made once, on first use; the fp32 weights stay as they are)."""
        if precision != "int8":
            return self.model
        with self._lock:
            if self._int8 is None:
                self._int8 = int8_copy(self.model)
        return self._int8

    def _decoder(self, precision: str) -> tuple[torch.nn.Module, torch.dtype | None]:
        """The model whose ``mask_decoder`` decodes in ``precision``, and the dtype its
        inputs must have (None: the model's own, under :func:`autocast`).

        bf16 on a CPU runs a bf16 copy of the mask decoder (4 M weights, made once):
        under autocast the decoder's stream of image tokens stayed fp32 and every
        matrix product cast a copy of it to bf16 (a quarter of the decode's time); in
        bf16 throughout it is neither cast nor read twice as wide (1.5x per point on
        2 AVX-512-bf16 cores; same output to bf16 rounding, see docs/performance.md).
        """
        if precision != "bf16" or self.device.type != "cpu" or not NATIVE_BF16_DECODER:
            return self._model(precision), None
        with self._lock:
            if self._bf16 is None:
                self._bf16 = Bf16Decoder(self.model.mask_decoder)
        return self._bf16, torch.bfloat16

    def _decode(self, embedding: ImageEmbedding, sparse, dense, plan: str, **options):
        """:func:`decode_points` in the decoder stage's precision and threads."""
        precision = stage_precision(plan, "decoder")
        model, dtype = self._decoder(precision)
        if dtype is not None:
            sparse, dense = sparse.to(dtype), dense.to(dtype)
        context = contextlib.nullcontext() if dtype else autocast(precision, self.device)
        with context, stage_threads(plan, "decoder"):
            out = decode_points(
                model,
                embedding.maps(dtype),
                self._positions(embedding.features.shape[-2:], dtype),
                sparse,
                dense,
                **options,
            )
        return (out[0].float(), out[1].float(), *out[2:])

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def input_size(self) -> int:
        """The side SAM's encoder works at (1024 for SAM's own models)."""
        return int(self.transform.target_length)

    @property
    def encoder_size(self) -> int:
        """The side the image encoder sees the image at: :attr:`input_size`, but 512 px
        for EfficientViT-SAM's L models (prompts and masks stay in the 1,024 px frame)."""
        return int(getattr(self.model.image_encoder, "input_size", self.input_size))

    @property
    def mask_threshold(self) -> float:
        return float(self.model.mask_threshold)

    def check_shape(self, shape: tuple[int, int], side: int | None = None) -> None:
        """Refuse images so thin that SAM's input (``side``: its frame, else the
        model's) would be under one patch high."""
        h, w = shape
        side = side or self.input_size
        if min(h, w) * side / max(h, w) < 16:
            raise InputError(
                f"The image is {h} x {w} pixels: too thin for SAM, which sees its long side "
                f"at {side} pixels (the short side would be under one patch). Segment it in "
                "pieces, or give proposals from a label image."
            )

    def frame_side(self, side: int | None) -> int:
        """The side of the square SAM sees an image in: ``side`` (a multiple of 16),
        never above the model's own :attr:`input_size`; None: the model's own."""
        if side is None:
            return self.input_size
        if side < 16 or side % 16:
            raise InputError(f"SAM's input side must be a multiple of 16 pixels; got {side}.")
        return min(int(side), self.input_size)

    @torch.no_grad()
    def embed(
        self, rgb: np.ndarray, precision: str = "fp32", side: int | None = None
    ) -> ImageEmbedding:
        """Run the image encoder on an (H, W, 3) uint8 image; features kept in fp32.

        ``side``: the square SAM sees the image in (its long side resized to it), at
        most the model's :attr:`input_size` (None: that). A smaller side is less work
        for the encoder and for every decoded point (512 px: a quarter of the image
        tokens) and shows SAM the objects smaller: the embedding's grid is smaller, its
        geometry the same (prompts, masks and :meth:`upscale` are unchanged)."""
        frame = self.frame_side(side)
        self.check_shape(rgb.shape[:2], frame)
        plan, precision = precision, stage_precision(precision, "encoder")
        model = self._model(precision)
        # EfficientViT-SAM L: the encoder sees the image at half SAM's frame.
        encoder_side = frame * self.encoder_size // self.input_size
        resized = ResizeLongestSide(encoder_side).apply_image(rgb)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        # Normalised, then zero-padded to the encoder's square (SAM's preprocess).
        x = (x - model.pixel_mean) / model.pixel_std
        x = torch.nn.functional.pad(
            x, (0, encoder_side - x.shape[-1], 0, encoder_side - x.shape[-2])
        )
        h, w = rgb.shape[:2]
        input_size = self.transform.get_preprocess_shape(h, w, self.input_size)
        with autocast(precision, self.device), stage_threads(plan, "encoder"):
            features = model.image_encoder(x)
        return ImageEmbedding(features.float(), (h, w), tuple(int(v) for v in input_size))

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
        sparse, dense = self._prompts(points_xy, embedding, precision)
        return self._decode(embedding, sparse, dense, precision)

    @torch.no_grad()
    def decode_points_above(
        self,
        embedding: ImageEmbedding,
        points_xy: np.ndarray,
        pred_iou_thresh: float,
        precision: str = "fp32",
        return_index: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """The masks of :meth:`decode_points` whose predicted IoU is above
        ``pred_iou_thresh``, flattened: ``(M, h, w)`` low-resolution logits and ``(M,)``
        IoUs, and with ``return_index`` the ``(M,)`` point each mask answers. The mask
        head runs only for those (see :func:`decode_points`)."""
        sparse, dense = self._prompts(points_xy, embedding, precision)
        return self._decode(
            embedding,
            sparse,
            dense,
            precision,
            pred_iou_thresh=pred_iou_thresh,
            return_index=return_index,
        )

    @torch.no_grad()
    def decode_prompt(
        self,
        embedding: ImageEmbedding,
        points_xy: np.ndarray,
        positive: np.ndarray,
        box_xyxy: np.ndarray | None = None,
        multimask: bool = False,
        precision: str = "fp32",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode one prompt of several points (``positive`` False: outside the object)
        and an optional box, as SAM's predictor does (an interactive edit).

        Returns ``(logits, iou)``: (K, H, W) float32 mask logits at the embedded
        image's size and (K,) predicted IoUs; K is 3 with ``multimask``, else 1.
        """
        plan, precision = precision, stage_precision(precision, "decoder")
        size = embedding.original_size
        points = None
        if len(points_xy):
            coords = self.transform.apply_coords(np.asarray(points_xy, dtype=float), size)
            points = (
                torch.as_tensor(coords, dtype=torch.float32, device=self.device)[None],
                torch.as_tensor(np.asarray(positive, dtype=np.int64), device=self.device)[None],
            )
        boxes = None
        if box_xyxy is not None:
            box = self.transform.apply_boxes(np.asarray(box_xyxy, dtype=float)[None], size)
            boxes = torch.as_tensor(box, dtype=torch.float32, device=self.device)
        with autocast(precision, self.device):
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
        low_res, iou = self._decode(embedding, sparse, dense, plan, multimask=multimask)
        return self.upscale(low_res[0], embedding), iou[0]

    def _positions(self, grid, dtype: torch.dtype | None = None) -> torch.Tensor:
        """SAM's positional map of an image grid of ``grid`` (h, w) tokens (the same for
        every prompt; the prompt encoder's ``get_dense_pe`` at the model's own grid),
        made once per grid, channels last as the decoder reads it (and in ``dtype``)."""
        key = (tuple(int(v) for v in grid), dtype)
        if key not in self._dense_pe:
            with torch.no_grad():
                positions = self.model.prompt_encoder.pe_layer(key[0]).unsqueeze(0)
            positions = positions.contiguous(memory_format=torch.channels_last)
            self._dense_pe[key] = positions if dtype is None else positions.to(dtype)
        return self._dense_pe[key]

    def _prompts(self, points_xy, embedding: ImageEmbedding, plan: str):
        """The prompt encoder's (sparse, dense) embeddings of one positive point each."""
        precision = stage_precision(plan, "decoder")
        coords = self.transform.apply_coords(np.asarray(points_xy), embedding.original_size)
        points = torch.as_tensor(coords, dtype=torch.float32, device=self.device)[:, None, :]
        labels = torch.ones(points.shape[:2], dtype=torch.int64, device=self.device)
        with autocast(precision, self.device):
            return self.model.prompt_encoder(points=(points, labels), boxes=None, masks=None)

    @torch.no_grad()
    def upscale(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        """(M, h, w) low-resolution logits -> (M, H, W) logits at the image's size."""
        return self.model.postprocess_masks(
            low_res[:, None], embedding.input_size, embedding.original_size
        )[:, 0]
