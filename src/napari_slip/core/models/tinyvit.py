"""A light SAM image encoder: TinyViT, as MobileSAM distilled it from SAM's ViT-H.

MobileSAM (Zhang et al. 2023) keeps SAM's prompt encoder and mask decoder and swaps
the ~1,000 GFLOP ViT image encoder for a 5M-parameter TinyViT (~40 GFLOP at 1,024 px)
that outputs the same 256 x 64 x 64 embedding. Its checkpoint is a SAM-format state
dict whose ``image_encoder.*`` keys follow TinyViT's module names. The modules below
are written here from that architecture (not copied), with the same parameter names,
so the official file loads with ``load_state_dict`` and the key layout is checked
by tests built on tiny random instances.

The encoder, in order (``image_encoder.`` prefix omitted):

- ``patch_embed.seq``: two 3x3 stride-2 convolutions with batch norm (``c``, ``bn``),
  GELU between: the image at 1/4 resolution.
- ``layers.0``: MBConv blocks (1x1 expand, 3x3 depthwise, 1x1 project, residual),
  then a patch merge (1x1, 3x3 depthwise stride 2, 1x1).
- ``layers.1..``: TinyViT blocks (windowed attention with a learnt bias per head and
  relative offset, a 3x3 depthwise convolution, an MLP; pre-norm inside attention and
  MLP), each stage but the last ending with a patch merge; the merge into the last
  stage keeps the resolution (MobileSAM's change, so that 1,024 px gives 64 x 64).
- ``neck``: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d to SAM's 256 channels.
- ``norm_head``, ``head``: TinyViT's classifier, unused (kept so the file loads).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

CL = torch.channels_last


class ConvBN(nn.Sequential):
    """A bias-free convolution and its batch norm (children ``c`` and ``bn``).

    In eval mode the batch norm is folded into the convolution's weights and bias (one
    pass over the feature map instead of two; the same affine map, to float rounding).
    """

    def __init__(self, cin: int, cout: int, kernel=1, stride=1, pad=0, groups=1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return conv_bn_eval(x, self.c, self.bn)


def conv_bn_eval(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))`` in eval mode as one convolution: the batch norm's affine map
    folded into the convolution's weights and bias (the same map to float rounding)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale[:, None, None, None]
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU of a feature map; a channels-last one is passed as the dense NHWC tensor it
    is in memory (PyTorch's elementwise kernels are slower on the strided NCHW view)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=CL):
        return F.gelu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return F.gelu(x)


class GELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(3, dim // 2, 3, 2, 1), GELU(), ConvBN(dim // 2, dim, 3, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: expand, depthwise 3x3, project, add, GELU (NCHW)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = gelu(self.conv1(x))
        y = gelu(self.conv2(y))
        return gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Channels ``dim -> out``; stride 2 (or 1: the merge into MobileSAM's last stage)."""

    def __init__(self, dim: int, out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = ConvBN(dim, out)
        self.conv2 = ConvBN(out, out, 3, stride, 1, groups=out)
        self.conv3 = ConvBN(out, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW in, NCHW out
        return self.conv3(gelu(self.conv2(gelu(self.conv1(x)))))


def offset_index(window: int) -> tuple[int, torch.Tensor]:
    """TinyViT's attention-bias table layout: every (|dy|, |dx|) offset between two
    positions of a window numbered in order of first appearance (positions row-major,
    query-major); returns the number of offsets and the (N, N) index of each pair."""
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    idx = []
    for p in points:
        for q in points:
            key = (abs(p[0] - q[0]), abs(p[1] - q[1]))
            idx.append(seen.setdefault(key, len(seen)))
    n = len(points)
    return len(seen), torch.tensor(idx, dtype=torch.long).view(n, n)


class WindowAttention(nn.Module):
    """Multi-head attention in one window, with a learnt bias per head and offset."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        n_offsets, index = offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(heads, n_offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, a depthwise 3x3 convolution, an MLP (tokens of an h x w map)."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, mlp_ratio)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:  # (B, h*w, C)
        b, n, c = x.shape
        s = self.window
        pad_b, pad_r = -h % s, -w % s
        y = x.view(b, h, w, c)
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        y = y.view(b, ph // s, s, pw // s, s, c).transpose(2, 3).reshape(-1, s * s, c)
        y = self.attn(y)
        y = y.view(b, ph // s, pw // s, s, s, c).transpose(2, 3).reshape(b, ph, pw, c)
        x = x + y[:, :h, :w].reshape(b, n, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, ratio: float, out: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    def __init__(self, dim, depth, heads, window, mlp_ratio, out=None, stride=2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, heads, window, mlp_ratio) for _ in range(depth)
        )
        self.downsample = None if out is None else PatchMerging(dim, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW in and out
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            t = block(t, h, w)
        x = t.transpose(1, 2).reshape(b, c, h, w)
        return x if self.downsample is None else self.downsample(x)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map (as SAM's neck)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class TinyViTEncoder(nn.Module):
    """MobileSAM's image encoder: (B, 3, S, S) -> (B, out, S/16, S/16).

    Parameters
    ----------
    dims, depths, heads, windows
        Per stage (``heads`` and ``windows`` of stage 0, a convolution stage, unused).
    """

    def __init__(
        self,
        img_size: int = 1024,
        dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        heads=(2, 4, 5, 10),
        windows=(7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_ratio: float = 4.0,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(dims[0])
        last = len(dims) - 1
        layers: list[nn.Module] = [ConvStage(dims[0], depths[0], mbconv_ratio, dims[1])]
        for i in range(1, len(dims)):
            out = dims[i + 1] if i < last else None
            stride = 1 if i == last - 1 else 2  # the merge into the last stage keeps size
            layers.append(
                AttentionStage(dims[i], depths[i], heads[i], windows[i], mlp_ratio, out, stride)
            )
        self.layers = nn.ModuleList(layers)
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes) if num_classes else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels last throughout: oneDNN's depthwise convolutions are 3x faster on it,
        # and the attention stages' tokens are then the maps' own memory (no copies).
        x = self.patch_embed(x.contiguous(memory_format=CL))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x).contiguous()


def tinyvit_config_from_state_dict(state: dict) -> dict:
    """TinyViT's stage sizes read off ``image_encoder.*`` weights (MobileSAM's names)."""
    pre = "image_encoder."
    stages = sorted(
        {int(k[len(pre) :].split(".")[1]) for k in state if k.startswith(pre + "layers.")}
    )
    dims, depths, heads, windows = [], [], [], []
    mlp_ratio, mbconv_ratio = 4.0, 4.0
    for i in stages:
        blocks = {int(k.split(".")[4]) for k in state if k.startswith(f"{pre}layers.{i}.blocks.")}
        depths.append(len(blocks))
        if i == 0:
            dim = int(state[f"{pre}patch_embed.seq.2.c.weight"].shape[0])
            hidden = int(state[f"{pre}layers.0.blocks.0.conv1.c.weight"].shape[0])
            mbconv_ratio = hidden / dim
            heads.append(0)
            windows.append(0)
        else:
            dim = int(state[f"{pre}layers.{i}.blocks.0.attn.qkv.weight"].shape[1])
            biases = state[f"{pre}layers.{i}.blocks.0.attn.attention_biases"]
            heads.append(int(biases.shape[0]))
            windows.append(math.isqrt(int(biases.shape[1])))
            mlp_ratio = int(state[f"{pre}layers.{i}.blocks.0.mlp.fc1.weight"].shape[0]) / dim
        dims.append(dim)
    head = state.get(f"{pre}head.weight")
    return {
        "dims": tuple(dims),
        "depths": tuple(depths),
        "heads": tuple(heads),
        "windows": tuple(windows),
        "mlp_ratio": mlp_ratio,
        "mbconv_ratio": mbconv_ratio,
        "num_classes": int(head.shape[0]) if head is not None else 0,
    }


__all__ = ["TinyViTEncoder", "conv_bn_eval", "offset_index", "tinyvit_config_from_state_dict"]
