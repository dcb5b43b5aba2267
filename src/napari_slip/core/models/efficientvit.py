"""A light SAM image encoder: EfficientViT, as EfficientViT-SAM distilled it from SAM.

EfficientViT-SAM (Zhang, Cai & Han 2024) keeps SAM's prompt encoder and mask decoder
and swaps SAM's ViT image encoder for an EfficientViT backbone (convolutions, and in
its last stages ReLU *linear* attention, whose cost grows with the number of pixels,
not its square) plus a neck that fuses three stages into SAM's 256 x 64 x 64
embedding. The L models see the image at 512 px (35-69 GMAC), the XL models at
1,024 px; prompts and masks stay in SAM's 1,024 px frame. Its checkpoints are
SAM-format state dicts whose ``image_encoder.*`` keys follow EfficientViT's module
names. The modules below are written here from that architecture (not copied), with
the same parameter names, so the official files load with ``load_state_dict``; the
layout is checked by tests against the published parameter counts.

The encoder (``image_encoder.`` prefix omitted):

- ``backbone.stages.0.op_list``: a 3x3 stride-2 convolution, then residual blocks.
- ``backbone.stages.i.op_list`` (i >= 1): a stride-2 block without a shortcut, then
  residual blocks: ``res`` (two 3x3 convolutions), ``fmb`` (fused MBConv: 3x3
  expand, 1x1 project), ``mb`` (MBConv: 1x1 expand, 3x3 depthwise, 1x1 project) or
  EfficientViT blocks (``context_module``: multi-scale linear attention;
  ``local_module``: an MBConv).
- ``neck``: each input stage 1x1-projected and resized (bicubic) to 64 x 64, summed,
  residual fused-MBConv blocks, a 1x1 convolution to 256 channels.
- ``norm``: a LayerNorm over channels.

Every convolution is a ``ConvLayer`` (children ``conv`` and ``norm``), norms have
eps 1e-6 (as EfficientViT's model zoo sets them), activations are tanh-approximated
GELU (EfficientViT's ``gelu``).
"""

from __future__ import annotations

import re
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .tinyvit import LayerNorm2d, conv_bn_eval

#: Every norm's epsilon (EfficientViT's model zoo sets 1e-6 on all of them).
EPS = 1e-6
#: Output channels per head of each attention's q, k and v (EfficientViT's qkv_dim).
QKV_DIM = 32


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class ConvLayer(nn.Module):
    """A convolution, its batch norm if any, and a GELU if ``act``.

    In eval mode the batch norm is folded into the convolution (one pass over the map,
    the same affine map to float rounding)."""

    def __init__(
        self, cin, cout, kernel=1, stride=1, groups=1, bias=False, norm=True, act=False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(cout, eps=EPS) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is None:
            x = self.conv(x)
        elif self.training:
            x = self.norm(self.conv(x))
        else:
            x = conv_bn_eval(x, self.conv, self.norm)
        return gelu(x) if self.act else x


def _norms(n: int, fewer_norm: bool) -> tuple[list[bool], list[bool]]:
    """(bias, norm) of a block's ``n`` convolutions: with ``fewer_norm`` only the last
    has a batch norm and the others a bias instead."""
    if fewer_norm:
        return [True] * (n - 1) + [False], [False] * (n - 1) + [True]
    return [False] * n, [True] * n


class ResBlock(nn.Module):
    def __init__(self, cin, cout, mid, stride=1, fewer_norm=False) -> None:
        super().__init__()
        bias, norm = _norms(2, fewer_norm)
        self.conv1 = ConvLayer(cin, mid, 3, stride, bias=bias[0], norm=norm[0], act=True)
        self.conv2 = ConvLayer(mid, cout, 3, bias=bias[1], norm=norm[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    def __init__(self, cin, cout, mid, stride=1, fewer_norm=False) -> None:
        super().__init__()
        bias, norm = _norms(2, fewer_norm)
        self.spatial_conv = ConvLayer(cin, mid, 3, stride, bias=bias[0], norm=norm[0], act=True)
        self.point_conv = ConvLayer(mid, cout, 1, bias=bias[1], norm=norm[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    def __init__(self, cin, cout, mid, stride=1, fewer_norm=False) -> None:
        super().__init__()
        bias, norm = _norms(3, fewer_norm)
        self.inverted_conv = ConvLayer(cin, mid, 1, bias=bias[0], norm=norm[0], act=True)
        self.depth_conv = ConvLayer(
            mid, mid, 3, stride, groups=mid, bias=bias[1], norm=norm[1], act=True
        )
        self.point_conv = ConvLayer(mid, cout, 1, bias=bias[2], norm=norm[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


BLOCKS = {"res": ResBlock, "fmb": FusedMBConv, "mb": MBConv}


class Residual(nn.Module):
    """``main(x) + x``, or ``main(x)`` alone where the block changes the map's size."""

    def __init__(self, main: nn.Module, shortcut: bool = True) -> None:
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.shortcut else self.main(x)


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention.

    One 1x1 convolution gives q, k, v for every head (per head, ``dim`` channels each,
    in that order); each scale ``s`` adds as many heads again, aggregated from those by
    an ``s x s`` depthwise and a grouped 1x1 convolution. With ReLU as the kernel,
    attention is ``(v @ relu(k)^T) @ relu(q)`` normalised by ``sum(relu(k)) @
    relu(q)``: linear in the number of pixels. Computed in float32 (the normaliser is
    a sum over every pixel).
    """

    def __init__(self, channels: int, dim: int = QKV_DIM, scales=(5,), eps=1e-15) -> None:
        super().__init__()
        heads = channels // dim
        total = heads * dim
        self.dim, self.eps = dim, eps
        self.qkv = ConvLayer(channels, 3 * total, 1, norm=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
            )
            for s in scales
        )
        self.proj = ConvLayer(total * (1 + len(scales)), channels, 1)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        kind = qkv.device.type  # float32 even under bf16 autocast (none on "meta")
        off = torch.autocast(kind, enabled=False) if kind != "meta" else nullcontext()
        with off:
            return self._attend(qkv.float())

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        b, _, h, w = qkv.shape
        d = self.dim
        qkv = qkv.reshape(b, -1, 3 * d, h * w)  # (batch, head, q|k|v, pixel)
        q, k, v = F.relu(qkv[:, :, :d]), F.relu(qkv[:, :, d : 2 * d]), qkv[:, :, 2 * d :]
        if h * w > d:  # linear: a (d+1) x d matrix per head, then one product per pixel
            vk = torch.cat([v, torch.ones_like(v[:, :, :1])], dim=2) @ k.transpose(-1, -2)
            out = vk @ q
        else:  # fewer pixels than channels: the quadratic form is cheaper
            att = k.transpose(-1, -2) @ q
            out = torch.cat([v, torch.ones_like(v[:, :, :1])], dim=2) @ att
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        return out.reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv, *(op(qkv) for op in self.aggreg)], dim=1)
        return self.proj(self.attend(qkv).to(x.dtype))


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int, dim: int, expand: float, scales=(5,)) -> None:
        super().__init__()
        self.context_module = Residual(LiteMLA(channels, dim, scales))
        mid = round(channels * expand)
        self.local_module = Residual(MBConv(channels, channels, mid, fewer_norm=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class OpSequential(nn.Module):
    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of a map to ``size`` x ``size`` (unchanged if it is that size)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = F.interpolate(x.float(), (size, size), mode="bicubic", align_corners=False)
    return out.to(x.dtype)


class Backbone(nn.Module):
    """EfficientViT's "large" backbone: stage ``i`` works at 1/2^(i+1) of the input."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        widths, depths, blocks = config["widths"], config["depths"], config["blocks"]
        stages = []
        stem = [ConvLayer(3, widths[0], 3, 2, act=True)]
        stem += [
            Residual(ResBlock(widths[0], widths[0], widths[0], fewer_norm=config["fewer_norm"][0]))
            for _ in range(depths[0])
        ]
        stages.append(OpSequential(stem))
        for i in range(1, len(widths)):
            cin, w, fewer = widths[i - 1], widths[i], config["fewer_norm"][i]
            down = BLOCKS[config["down_blocks"][i]]
            ops: list[nn.Module] = [
                Residual(down(cin, w, round(cin * config["down_expands"][i]), 2, fewer), False)
            ]
            for _ in range(depths[i]):
                if blocks[i] == "att":
                    ops.append(
                        EfficientViTBlock(
                            w, config["qkv_dim"], config["expands"][i], tuple(config["scales"][i])
                        )
                    )
                else:
                    mid = round(w * config["expands"][i])
                    ops.append(Residual(BLOCKS[blocks[i]](w, w, mid, 1, fewer)))
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class Neck(nn.Module):
    """Three stages projected to one width, resized to SAM's grid and summed; residual
    blocks; a 1x1 convolution to SAM's embedding width."""

    def __init__(self, config: dict, in_channels: list[int], out: int) -> None:
        super().__init__()
        width = config["neck_width"]
        self.input_ops = nn.ModuleList(OpSequential([ConvLayer(c, width, 1)]) for c in in_channels)
        block, mid = BLOCKS[config["neck_block"]], round(width * config["neck_expand"])
        self.middle = OpSequential(
            [Residual(block(width, width, mid)) for _ in range(config["neck_depth"])]
        )
        self.output_ops = nn.ModuleList(
            [OpSequential([ConvLayer(width, out, 1, bias=True, norm=False)])]
        )

    def forward(self, features: list[torch.Tensor], grid: int) -> torch.Tensor:
        """The stages' maps -> SAM's (B, out, grid, grid) embedding."""
        x = sum(resize(op(f), grid) for op, f in zip(self.input_ops, features, strict=True))
        return self.output_ops[0](self.middle(x))


class EfficientViTSamEncoder(nn.Module):
    """EfficientViT-SAM's image encoder: (B, 3, S, S) -> (B, out, G, G).

    ``img_size`` is SAM's frame (1,024 px: prompts, masks, :class:`Sam`'s padding);
    the backbone sees the image at ``input_size`` (512 for the L models), which
    :class:`~.promptable.PromptableSam` resizes to as EfficientViT-SAM does.
    ``config`` is :func:`efficientvit_config_from_state_dict`'s. A smaller input
    (a frame smaller than ``img_size``: see ``PromptableSam.embed``) gives a grid
    smaller in proportion.
    """

    def __init__(self, config: dict, img_size: int = 1024, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.input_size = int(config["input_size"])
        self.neck_stages = list(config["neck_stages"])
        self.backbone = Backbone(config)
        widths = [config["widths"][i] for i in self.neck_stages]
        self.neck = Neck(config, widths, out_chans)
        self.norm = LayerNorm2d(out_chans, eps=EPS)

    def grid(self, side: int) -> int:
        """The embedding's grid side for an input ``side`` pixels long (64 at
        ``input_size``: SAM's 1,024 px frame in 16 px tokens)."""
        return max(1, round(side * self.img_size / (16 * self.input_size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.backbone(x)
        features = [stages[i] for i in self.neck_stages]
        return self.norm(self.neck(features, self.grid(x.shape[-1])))


# The published models, by the settings of EfficientViT's sam.py and backbone.py (the
# tests build them and compare their parameter counts with the published ones).
_L = {
    "blocks": ["res", "fmb", "fmb", "mb", "att"],
    "down_blocks": ["", "fmb", "fmb", "mb", "mb"],
    "widths": [32, 64, 128, 256, 512],
    "expands": [1, 4, 4, 4, 6],
    "down_expands": [0, 16, 16, 16, 24],
    "fewer_norm": [False, False, False, True, True],
    "scales": [[], [], [], [], [5]],
    "qkv_dim": QKV_DIM,
    "neck_stages": [4, 3, 2],
    "neck_width": 256,
    "neck_block": "fmb",
    "neck_expand": 1,
    "input_size": 512,
}
_XL = {
    "blocks": ["res", "fmb", "fmb", "fmb", "att", "att"],
    "down_blocks": ["", "fmb", "fmb", "fmb", "mb", "mb"],
    "widths": [32, 64, 128, 256, 512, 1024],
    "expands": [1, 4, 4, 4, 4, 6],
    "down_expands": [0, 16, 16, 16, 16, 24],
    "fewer_norm": [False, False, False, False, True, True],
    "scales": [[], [], [], [], [3], [3]],
    "qkv_dim": QKV_DIM,
    "neck_stages": [5, 4, 3],
    "neck_width": 256,
    "neck_block": "fmb",
    "neck_expand": 4,
    "input_size": 1024,
}
PUBLISHED: dict[str, dict] = {
    "l0": {**_L, "depths": [1, 1, 1, 4, 4], "neck_depth": 4},
    "l1": {**_L, "depths": [1, 1, 1, 6, 6], "neck_depth": 8},
    "l2": {**_L, "depths": [1, 2, 2, 8, 8], "neck_depth": 12},
    "xl0": {**_XL, "depths": [0, 1, 1, 2, 3, 3], "neck_depth": 6},
    "xl1": {**_XL, "depths": [1, 2, 2, 4, 6, 6], "neck_depth": 12},
}


def _block_kind(state: dict, prefix: str) -> str:
    """The kind of block whose keys start with ``prefix`` (``...op_list.j.``)."""
    if prefix + "context_module.main.qkv.conv.weight" in state:
        return "att"
    for kind, first in (("fmb", "spatial_conv"), ("mb", "inverted_conv"), ("res", "conv1")):
        if f"{prefix}main.{first}.conv.weight" in state:
            return kind
    raise KeyError(prefix + "main.*")


_FIRST = {"fmb": "spatial_conv", "mb": "inverted_conv", "res": "conv1"}


def _count(state: dict, prefix: str) -> int:
    """How many numbered children ``prefix<j>.`` the keys have."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(ids) + 1 if ids else 0


def efficientvit_config_from_state_dict(state: dict, grid: int = 64) -> dict:
    """EfficientViT-SAM's encoder architecture read off its ``image_encoder.*`` weights.

    ``grid`` is SAM's embedding side (64 at 1,024 px): the neck's finest stage works
    at it, which fixes the backbone's input size (512 px for the L models)."""
    pre = "image_encoder.backbone.stages."
    n_stages = _count(state, pre)
    config: dict = {
        k: []
        for k in (
            "blocks",
            "down_blocks",
            "widths",
            "depths",
            "expands",
            "down_expands",
            "fewer_norm",
            "scales",
        )
    }
    config["qkv_dim"] = QKV_DIM
    for i in range(n_stages):
        ops = f"{pre}{i}.op_list."
        depth = _count(state, ops) - 1
        if i == 0:
            width = int(state[ops + "0.conv.weight"].shape[0])
            down, down_expand, fewer = "", 0, False
            if depth:
                fewer = ops + "1.main.conv1.conv.bias" in state
        else:
            down = _block_kind(state, ops + "0.")
            first = state[f"{ops}0.main.{_FIRST[down]}.conv.weight"]
            width = int(state[f"{ops}0.main.point_conv.conv.weight"].shape[0])
            down_expand = int(first.shape[0]) / int(first.shape[1])
            fewer = f"{ops}0.main.{_FIRST[down]}.conv.bias" in state
        kind = _block_kind(state, ops + "1.") if depth else (down or "res")
        expand, scales = 1.0, []
        if kind == "att":
            att = ops + "1.context_module.main."
            scales = [
                int(state[f"{att}aggreg.{s}.0.weight"].shape[-1])
                for s in range(_count(state, att + "aggreg."))
            ]
            config["qkv_dim"] = int(state[att + "aggreg.0.1.weight"].shape[1])
            mid = state[ops + "1.local_module.main.inverted_conv.conv.weight"].shape[0]
            expand = int(mid) / width
        elif depth:
            expand = int(state[f"{ops}1.main.{_FIRST[kind]}.conv.weight"].shape[0]) / width
        for key, value in (
            ("blocks", kind),
            ("down_blocks", down),
            ("widths", width),
            ("depths", depth),
            ("expands", expand),
            ("down_expands", down_expand),
            ("fewer_norm", fewer),
            ("scales", scales),
        ):
            config[key].append(value)
    neck = "image_encoder.neck."
    n_in = _count(state, neck + "input_ops.")
    stages = list(range(n_stages - 1, n_stages - 1 - n_in, -1))
    for k, stage in enumerate(stages):
        cin = int(state[f"{neck}input_ops.{k}.op_list.0.conv.weight"].shape[1])
        if stage < 0 or cin != config["widths"][stage]:
            raise ValueError(f"the neck's input {k} ({cin} channels) fits no backbone stage")
    width = int(state[neck + "input_ops.0.op_list.0.conv.weight"].shape[0])
    depth = _count(state, neck + "middle.op_list.")
    block = _block_kind(state, neck + "middle.op_list.0.") if depth else "fmb"
    mid = state[f"{neck}middle.op_list.0.main.{_FIRST[block]}.conv.weight"] if depth else None
    config.update(
        neck_stages=stages,
        neck_width=width,
        neck_depth=depth,
        neck_block=block,
        neck_expand=int(mid.shape[0]) / width if mid is not None else 1.0,
        input_size=grid * 2 ** (min(stages) + 1),
    )
    return config


__all__ = [
    "PUBLISHED",
    "EfficientViTSamEncoder",
    "LiteMLA",
    "efficientvit_config_from_state_dict",
]
