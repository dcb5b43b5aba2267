"""Segment Anything models of any size, built from the weights themselves.

The official builders hard-code vit_b/l/h at 1024 px. Here the architecture (encoder
width, depth, heads, window size, global-attention blocks, input size, decoder size)
is read off the state dict, so fine-tuned SAM-format weights (micro-sam, MedSAM) and
tiny test models load through one path. Files are read with ``weights_only=True`` or
as safetensors: loading never executes code from a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from ..errors import CheckpointError
from .no_init import skip_random_init


@dataclass(frozen=True)
class SamConfig:
    """The architecture of a SAM model (what ``segment_anything`` fixes per variant)."""

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    mask_in_chans: int = 16
    #: ``vit`` (SAM's own encoder), ``tinyvit`` (MobileSAM's; see :mod:`.tinyvit`) or
    #: ``efficientvit`` (EfficientViT-SAM's; see :mod:`.efficientvit`).
    encoder: str = "vit"
    #: TinyViT's stage sizes (see :func:`.tinyvit.tinyvit_config_from_state_dict`).
    tinyvit: dict = field(default_factory=dict, compare=False)
    #: EfficientViT's architecture (see
    #: :func:`.efficientvit.efficientvit_config_from_state_dict`).
    efficientvit: dict = field(default_factory=dict, compare=False)
    extra: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        light = ("tinyvit", "efficientvit")
        for key in light:
            d.pop(key)
        if self.encoder in light:  # the ViT fields do not apply
            for key in (
                "patch_size",
                "embed_dim",
                "depth",
                "num_heads",
                "mlp_ratio",
                "window_size",
                "global_attn_indexes",
            ):
                d.pop(key)
            d[self.encoder] = {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in getattr(self, self.encoder).items()
            }
        return d


def build_sam(config: SamConfig) -> torch.nn.Module:
    """Build a randomly initialised SAM of the given architecture, in eval mode."""
    from ..._compat import guard_gui_process

    guard_gui_process()
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    family = SAM_ENCODERS.get(config.encoder)
    if family is None:
        raise CheckpointError(f"Unknown SAM image encoder {config.encoder!r}.")
    encoder, grid = family.build(config)
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    from .fast import use_fast_attention

    use_fast_attention(sam)  # same weights and output, fused attention (see fast.py)
    return sam.eval()


def sam_config_from_state_dict(state: dict[str, torch.Tensor]) -> SamConfig:
    """Read a SAM architecture off its weights (its family from
    :data:`SAM_ENCODERS`: the first whose marker weight it has, else SAM's ViT).

    Raises
    ------
    CheckpointError
        If the weights are not a SAM state dict.
    """
    for family in SAM_ENCODERS.values():
        if family.marker is not None and family.marker in state:
            return family.read(state)
    return SAM_ENCODERS["vit"].read(state)


def _vit_sam_config(state: dict[str, torch.Tensor]) -> SamConfig:
    """SAM's own ViT encoder (vit_b/l/h, micro-sam, MedSAM, any size)."""
    try:
        patch_w = state["image_encoder.patch_embed.proj.weight"]  # (dim, 3, p, p)
        pos = state["image_encoder.pos_embed"]  # (1, grid, grid, dim)
        neck = state["image_encoder.neck.0.weight"]  # (out, dim, 1, 1)
    except KeyError as exc:
        raise CheckpointError(
            f"This file is not a Segment Anything checkpoint (no {exc.args[0]!r} weight)."
        ) from None
    embed_dim, patch = int(patch_w.shape[0]), int(patch_w.shape[-1])
    grid = int(pos.shape[1])
    block_ids = sorted(
        {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    )
    depth = len(block_ids)
    if depth == 0:
        raise CheckpointError("This SAM checkpoint has no image-encoder blocks.")
    global_idx, window = [], 0
    head_dim = None
    for i in block_ids:
        rel = state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if rel is None:
            raise CheckpointError(
                "This SAM checkpoint has no relative position weights; only SAM-format "
                "ViT encoders are supported."
            )
        head_dim = int(rel.shape[1])
        size = (int(rel.shape[0]) + 1) // 2
        if size == grid:
            global_idx.append(i)
        else:
            window = size
    mlp_hidden = int(state[f"image_encoder.blocks.{block_ids[0]}.mlp.lin1.weight"].shape[0])
    return SamConfig(
        **_decoder_config(state),
        img_size=grid * patch,
        patch_size=patch,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // head_dim,
        mlp_ratio=mlp_hidden / embed_dim,
        window_size=window,
        global_attn_indexes=tuple(global_idx) if window else (),
        prompt_embed_dim=int(neck.shape[0]),
    )


def _decoder_config(state: dict) -> dict:
    """The prompt encoder's and mask decoder's sizes (the same for every encoder)."""
    dec_layers = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))
    }
    dec_mlp = state.get("mask_decoder.transformer.layers.0.mlp.lin1.weight")
    iou_hidden = state.get("mask_decoder.iou_prediction_head.layers.0.weight")
    mask_tokens = state.get("mask_decoder.mask_tokens.weight")
    mask_in = state.get("prompt_encoder.mask_downscaling.0.weight")
    return {
        "decoder_depth": len(dec_layers) or 2,
        "decoder_mlp_dim": int(dec_mlp.shape[0]) if dec_mlp is not None else 2048,
        "iou_head_hidden_dim": int(iou_hidden.shape[0]) if iou_hidden is not None else 256,
        "num_multimask_outputs": (int(mask_tokens.shape[0]) - 1 if mask_tokens is not None else 3),
        "mask_in_chans": int(mask_in.shape[0]) * 4 if mask_in is not None else 16,
    }


def _tinyvit_sam_config(state: dict) -> SamConfig:
    """MobileSAM: a TinyViT encoder at 1,024 px (its only published input size)."""
    from .tinyvit import tinyvit_config_from_state_dict

    config = _light_sam_config(
        state,
        "tinyvit",
        tinyvit_config_from_state_dict,
        "image_encoder.neck.0.weight",
        "MobileSAM (TinyViT)",
    )
    if len(config.tinyvit["dims"]) < 2:
        raise CheckpointError("This TinyViT checkpoint has fewer than two stages.")
    return config


def _efficientvit_sam_config(state: dict) -> SamConfig:
    """EfficientViT-SAM: an EfficientViT encoder in SAM's 1,024 px frame (64 x 64)."""
    from .efficientvit import efficientvit_config_from_state_dict

    return _light_sam_config(
        state,
        "efficientvit",
        efficientvit_config_from_state_dict,
        "image_encoder.neck.output_ops.0.op_list.0.conv.weight",
        "EfficientViT-SAM",
    )


def _light_sam_config(state: dict, encoder: str, read, out_key: str, what: str) -> SamConfig:
    """A light encoder's SAM in the 1,024 px frame: ``read(state)`` gives the encoder's
    architecture, ``out_key`` the weight whose rows are the embedding's channels."""
    try:
        architecture = read(state)
        out = state[out_key]
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(
            f"This {what} checkpoint is incomplete or unknown ({exc}); use a file its "
            "authors publish."
        ) from None
    return SamConfig(
        **_decoder_config(state),
        img_size=1024,
        prompt_embed_dim=int(out.shape[0]),
        encoder=encoder,
        **{encoder: architecture},
    )


def _build_vit(config: SamConfig) -> tuple[torch.nn.Module, int]:
    from .vit import SamViT

    encoder = SamViT(
        depth=config.depth,
        embed_dim=config.embed_dim,
        img_size=config.img_size,
        mlp_ratio=config.mlp_ratio,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=config.num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=tuple(config.global_attn_indexes),
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )
    return encoder, config.img_size // config.patch_size


def _build_tinyvit(config: SamConfig) -> tuple[torch.nn.Module, int]:
    from .tinyvit import TinyViTEncoder

    encoder = TinyViTEncoder(
        img_size=config.img_size, out_chans=config.prompt_embed_dim, **config.tinyvit
    )
    return encoder, config.img_size // 16


def _build_efficientvit(config: SamConfig) -> tuple[torch.nn.Module, int]:
    from .efficientvit import EfficientViTSamEncoder

    encoder = EfficientViTSamEncoder(
        config.efficientvit, img_size=config.img_size, out_chans=config.prompt_embed_dim
    )
    return encoder, config.img_size // 16


@dataclass(frozen=True)
class SamEncoder:
    """One family of SAM image encoders: how its weights are recognised and read, and
    how its encoder is built (the prompt encoder and mask decoder are SAM's own)."""

    #: :attr:`SamConfig.encoder`.
    name: str
    #: A weight only this family's state dicts have (None: the default family).
    marker: str | None
    #: The SAM architecture, read off a state dict of this family.
    read: Callable[[dict], SamConfig]
    #: A random encoder of ``config``'s architecture, and its embedding's grid side.
    build: Callable[[SamConfig], tuple[torch.nn.Module, int]]


#: Every SAM encoder family (as segment-anything's ``sam_model_registry`` for its
#: ViTs): a new family is its reader and builder (a module beside this one) and a row.
SAM_ENCODERS: dict[str, SamEncoder] = {
    family.name: family
    for family in (
        SamEncoder(
            "tinyvit",
            "image_encoder.patch_embed.seq.0.c.weight",
            _tinyvit_sam_config,
            _build_tinyvit,
        ),
        SamEncoder(
            "efficientvit",
            "image_encoder.backbone.stages.0.op_list.0.conv.weight",
            _efficientvit_sam_config,
            _build_efficientvit,
        ),
        SamEncoder("vit", None, _vit_sam_config, _build_vit),
    )
}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a SAM state dict from ``.pth``/``.pt`` (weights only) or ``.safetensors``.

    Wrapped checkpoints (``{"model": ...}``, ``{"state_dict": ...}``,
    ``{"model_state": ...}``) and ``module.``/``sam.`` key prefixes are unwrapped.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise CheckpointError(
            f"Could not read {path} as SAM weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}). "
            "Use an official SAM .pth or a SAM-format state dict."
        ) from None
    for key in ("model_state", "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict of SAM weights.")
    for prefix in ("module.", "sam."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


#: At most this many numbered blocks under one prefix (SAM ViT-H has 32; EfficientViT-XL1
#: 12): a key ``...op_list.250000...`` must not build 250,001 blocks.
MAX_BLOCKS = 256
#: An architecture read from a file may hold at most this many times its weights'
#: values, plus this slack (buffers, position tables): a few wrong shapes must not ask
#: for gigabytes before the weights are compared.
SIZE_FACTOR, SIZE_SLACK = 1.5, 50_000_000


def check_state_dict(state: dict, path) -> None:
    """Refuse, before any architecture is read, keys that are not names, values that
    are not tensors, empty tensors and absurdly numbered blocks."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"{path} is not a SAM checkpoint: the key {key!r} is not a name."
            )
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path} is not a SAM checkpoint: {key!r} is not a tensor of weights."
            )
        if value.numel() == 0:
            raise CheckpointError(f"{path} holds an empty tensor {key!r} {tuple(value.shape)}.")
    for key in state:  # numbered blocks: the highest index decides how many are built
        for match in re.finditer(r"\.(\d+)\.", key):
            if int(match.group(1)) >= MAX_BLOCKS:
                raise CheckpointError(
                    f"{path} does not hold consistent SAM weights: {key!r} numbers a block "
                    f"{match.group(1)} (at most {MAX_BLOCKS} are read)."
                )


def check_size(config, state: dict, path) -> None:
    """Refuse an architecture much larger than the file's weights, before building it
    (it is built on the meta device: no memory)."""
    values = sum(int(v.numel()) for v in state.values())
    try:
        with torch.device("meta"):
            model = build_sam(config)
    except (RuntimeError, NotImplementedError):  # a builder that computes: checked later
        return
    wanted = sum(int(p.numel()) for p in model.parameters())
    if wanted > SIZE_FACTOR * values + SIZE_SLACK:
        raise CheckpointError(
            f"{path} does not hold consistent SAM weights: the architecture read from it "
            f"has {wanted:,} parameters, its weights {values:,} values."
        )


def load_sam(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, SamConfig]:
    """Load any SAM-format checkpoint; returns the model (eval mode) and its architecture."""
    state = read_state_dict(path)
    check_state_dict(state, path)
    try:
        config = sam_config_from_state_dict(state)
        check_size(config, state, path)
        with skip_random_init():  # every weight comes from the file (missing: refused)
            sam = build_sam(config)
        missing, unexpected = sam.load_state_dict(state, strict=False)
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, IndexError, ZeroDivisionError, AssertionError) as exc:
        first = str(exc).strip().splitlines()
        detail = (first[1] if len(first) > 1 else first[0] if first else "").strip()
        raise CheckpointError(
            f"{path} does not hold consistent SAM weights ({detail[:160]}). Use an "
            "official SAM .pth or a SAM-format state dict."
        ) from None
    # pixel_mean/std are non-persistent buffers: their absence is expected.
    missing = [k for k in missing if not k.startswith("pixel_")]
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:4])
        raise CheckpointError(
            f"{path} does not fit the SAM architecture read from it ({shown} ...). "
            "Is this a SAM, MobileSAM or EfficientViT-SAM checkpoint (not SAM 2)?"
        )
    sam.requires_grad_(False)  # inference only
    return sam.to(device).eval(), config
