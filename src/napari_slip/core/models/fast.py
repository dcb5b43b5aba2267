"""SAM's image encoder, faster in fp32 on a CPU: the same arithmetic, less memory traffic.

Profiled on 2 CPU cores (vit_b at 1,024 px, fp32), a third of the encoder's time was not
matrix multiplication but the relative-position bias of attention: SAM builds the whole
attention matrix (12 heads x 4,096 x 4,096 floats, 800 MB, in each global-attention
block), adds the two bias terms to it in two more passes over memory, then runs a
softmax over it. :class:`FastAttention` computes the same thing with
``torch.nn.functional.scaled_dot_product_attention`` (a fused, blocked kernel) and the
bias as its ``attn_mask``, built a few query rows at a time so that each block of the
mask stays in the CPU's cache. In global attention (4,096 keys) even that spends half
as long again as attention without a mask, so there the scores are computed one head
and a few query rows at a time: a matrix product, the two bias terms added in place
(broadcast, never a mask of their own), softmax, a product with the values; each block
of scores stays in cache (about 0.5 s less per 1,024 px image on 2 cores, 6%). Both
match SAM's attention to float rounding (about 1e-6; tested against
``segment_anything``'s own module).

:class:`FastBlock` saves the other waste: SAM projects the zero padding of windowed
blocks to queries, keys and values and projects the padding's outputs too; it projects
only the image's tokens (about 0.15 s, 2%). It also keeps the blocks' residual stream
contiguous: SAM's patch embedding hands the blocks a permuted view, so each LayerNorm
copied its input and each residual add wrote strided memory (0-7% of the encoder in
five measurements on 2 cores; see docs/performance.md).

:class:`FastDecoderAttention` does the mask decoder's cross-attention with the image
side's projections folded into the prompt's few tokens (less than half the work per
point; 1.6x per point on 2 cores with no mask passing SAM's IoU filter).

:class:`FastUpscaling` computes the mask decoder's two transposed convolutions as
matrix products on channels-last maps (same weights; a third of a click's decode was
those convolutions and their layout copies).

:func:`use_fast_attention` switches a model's attention blocks either way without
touching the weights (the benchmark's ablation uses it). Models built by
:func:`~.sam.build_sam` use it by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from segment_anything.modeling.transformer import Attention as DecoderAttention

#: Bytes of attention mask (or scores) per block of query rows (a block that stays in
#: cache).
MASK_BLOCK_BYTES = 1 << 23

#: Whether encoder blocks make their input contiguous (see :class:`FastBlock`; off only
#: in the benchmark's ablation).
CONTIGUOUS_STREAM = True

#: From this many keys on, attention with relative positions runs head by head on
#: blocks of scores (see the module doc) instead of fused attention with a mask.
BLOCKED_MIN_KEYS = 1024


class FastAttention(Attention):
    """SAM's ``Attention`` through fused attention (see the module doc); same weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, h, w, 3 x dim) projected queries, keys and values -> (B, h, w, dim)
        attention output before the output projection."""
        b, h, w, _ = qkv.shape
        heads = self.num_heads
        qkv = qkv.reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, h*w, C)
        c = q.shape[-1]
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            # SAM's decomposed relative positions: a bias per (query, key row) and per
            # (query, key column), computed from the queries (as add_decomposed_rel_pos).
            r_q = q.reshape(b, heads, h, w, c)
            rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, get_rel_pos(h, h, self.rel_pos_h))
            rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, get_rel_pos(w, w, self.rel_pos_w))
            if h * w >= BLOCKED_MIN_KEYS:
                out = _blocked_rel_pos_attention(q, k, v, rel_h, rel_w, self.scale)
                return out.reshape(b, h, w, -1)
            per_row = b * heads * w * h * w * q.element_size()
            rows = max(1, MASK_BLOCK_BYTES // max(1, per_row))
            out = torch.empty_like(q)
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                mask = rel_h[:, :, r0:r1, :, :, None] + rel_w[:, :, r0:r1, :, None, :]
                mask = mask.reshape(b, heads, (r1 - r0) * w, h * w)
                out[:, :, r0 * w : r1 * w] = F.scaled_dot_product_attention(
                    q[:, :, r0 * w : r1 * w], k, v, attn_mask=mask, scale=self.scale
                )
        return out.view(b, heads, h, w, c).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)


class FastBlock(Block):
    """SAM's encoder ``Block``; in windowed blocks, the query/key/value and output
    projections run on the image's own tokens, not on the windows' padding.

    SAM pads the image to whole windows with zeros *before* projecting, so each padding
    token's query, key and value is the projection's bias, and the padding's outputs are
    thrown away. Projecting the real tokens and padding the projections with the bias
    gives the same numbers with less work (64 x 64 tokens padded to 70 x 70 in vit_b:
    16% fewer rows in those products). In every block the residual stream is made
    contiguous first (see the module doc). Same weights and state-dict keys.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.attn, FastAttention):
            return super().forward(x)
        # SAM's patch embedding hands the blocks a permuted view (channels 4,096 floats
        # apart): every LayerNorm then copied it and every residual add wrote strided.
        # One copy here (a no-op from the second block on) keeps the stream contiguous.
        x = x.contiguous() if CONTIGUOUS_STREAM else x
        size = self.window_size
        if size <= 0:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        shortcut = x
        b, h, w, _ = x.shape
        qkv = self.attn.qkv(self.norm1(x))
        pad_h, pad_w = (size - h % size) % size, (size - w % size) % size
        if pad_h or pad_w:
            padded = qkv.new_empty(b, h + pad_h, w + pad_w, qkv.shape[-1])
            padded[:] = self.attn.qkv(x.new_zeros(1, x.shape[-1]))  # a zero token's
            padded[:, :h, :w] = qkv
            qkv = padded
        windows, padded_hw = window_partition(qkv, size)
        out = window_unpartition(self.attn.attend(windows), size, padded_hw, (h, w))
        x = shortcut + self.attn.proj(out)
        return x + self.mlp(self.norm2(x))


def _blocked_rel_pos_attention(q, k, v, rel_h, rel_w, scale) -> torch.Tensor:
    """SAM's attention with decomposed relative positions, one head and a block of query
    rows at a time, in SAM's order of operations: ``(q * scale) @ k.T``, plus the row
    and column bias terms, softmax, times ``v``.

    ``q, k, v``: (B, heads, h*w, C); ``rel_h``, ``rel_w``: (B, heads, h, w, h|w).
    Returns (B, h, w, heads, C), ready for the output projection.
    """
    b, heads, n, c = q.shape
    h, w = rel_h.shape[2], rel_h.shape[3]
    q = q * scale
    k_t = k.transpose(-1, -2).contiguous()
    v = v.contiguous()
    rel_h, rel_w = rel_h.contiguous(), rel_w.contiguous()
    rows = max(1, MASK_BLOCK_BYTES // max(1, w * n * q.element_size()))
    out = q.new_empty(b, h, w, heads, c)
    for i in range(b):
        for head in range(heads):
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                scores = q[i, head, r0 * w : r1 * w] @ k_t[i, head]
                grid = scores.view(r1 - r0, w, h, w)
                grid.add_(rel_h[i, head, r0:r1, :, :, None])
                grid.add_(rel_w[i, head, r0:r1, :, None, :])
                block = torch.softmax(scores, dim=-1) @ v[i, head]
                out[i, r0:r1, :, head] = block.view(r1 - r0, w, c)
    return out


#: Up to this many tokens on one side, decoder attention works with that side along rows
#: and folds the projections of the other (many-token) side into it (see
#: FastDecoderAttention).
FEW_TOKENS = 32

#: The tokens of a one-point prompt in SAM's decoder: the IoU token, 4 mask tokens, the
#: point and the padding point.
PROMPT_TOKENS = 7

#: Whether the decoder's attention folds the image-side projections into the few prompt
#: tokens (off only in the benchmark's ablation and a test).
FOLD_PROJECTIONS = True


class FastDecoderAttention(DecoderAttention):
    """The mask decoder's ``Attention`` (token/image cross-attention), same weights.

    Cross-attention between a prompt's 7 tokens and the image's 4,096 tokens spends
    nearly all its work projecting the image side: SAM multiplies every image token by
    the key and value (or query and output) weights, 4,096 x 256 x 128 multiply-adds
    each, per prompt. Only 7 tokens x 8 heads = 56 vectors meet those projections, so
    the weights are folded into the prompt side instead (associativity: ``(X Wk^T) q``
    = ``X (Wk^T q)``; attention rows sum to one, so ``A (X Wv^T + b)`` =
    ``(A X) Wv^T + b``; and the output projection applied to the 7 value vectors before
    the attention weights mix them). Each image-side product then costs 4,096 x 256 x
    56: less than half. Where the image side is shared by every prompt (batch 1: the
    first layer, see :func:`~.promptable.decode_points`) it is projected once, as SAM
    does, and broadcast, unless the prompts are so few that folding still does less
    (one click: 56 folded vectors against the 128 of each projection).

    Image-to-token attention has only 7 keys: a softmax over rows of 7 numbers does not
    vectorise, so the scores are laid out keys x queries and normalised across the
    short axis. Otherwise (many tokens on both sides) fused attention.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.shape[-2] <= FEW_TOKENS < k.shape[-2]:
            return self._tokens_to_image(q, k, v)
        if k.shape[-2] <= FEW_TOKENS < q.shape[-2]:
            return self._image_to_tokens(q, k, v)
        qh = self._separate_heads(self.q_proj(q), self.num_heads)
        kh = self._separate_heads(self.k_proj(k), self.num_heads)
        vh = self._separate_heads(self.v_proj(v), self.num_heads)
        n = max(qh.shape[0], kh.shape[0])
        qh, kh, vh = (t.expand(n, -1, -1, -1) for t in (qh, kh, vh))
        out = F.scaled_dot_product_attention(qh, kh, vh, scale=qh.shape[-1] ** -0.5)
        return self.out_proj(self._recombine_heads(out))

    def folding_saves(self, few: int = PROMPT_TOKENS) -> bool:
        """Whether folding the image-side projections into ``few`` tokens saves work
        (heads x tokens under the internal width: SAM's 8 x 7 against 128)."""
        return self.num_heads * few < self.internal_dim

    def _fold(self, few: int) -> bool:
        """Whether to fold: it saves work and the projections are plain linear layers
        (not int8 ones)."""
        layers = (self.q_proj, self.k_proj, self.v_proj, self.out_proj)
        return (
            FOLD_PROJECTIONS
            and all(type(m) is torch.nn.Linear for m in layers)
            and self.folding_saves(few)
        )

    def _tokens_to_image(self, q, k, v) -> torch.Tensor:
        """Few queries (the prompt's tokens), many keys and values (the image's)."""
        heads = self.num_heads
        qh = self._separate_heads(self.q_proj(q), heads)  # (B, h, n, c)
        b, _, n, c = qh.shape
        qh = qh * c**-0.5
        shared = k.shape[0] == 1 == v.shape[0]  # one image for every prompt
        if (shared and not self._fold(b * n)) or not self._fold(n):
            kh = self._separate_heads(self.k_proj(k), heads)  # (1 or B, h, N, c)
            vh = self._separate_heads(self.v_proj(v), heads)
            if kh.shape[0] == vh.shape[0] == 1:  # one image for every prompt
                rows = qh.transpose(0, 1).reshape(heads, b * n, c)
                attn = torch.softmax(rows @ kh[0].transpose(-1, -2), dim=-1)
                out = (attn @ vh[0]).view(heads, b, n, c).transpose(0, 1)
            else:
                out = F.scaled_dot_product_attention(qh, kh, vh, scale=1.0)
            return self.out_proj(self._recombine_heads(out))
        # Folded: scores (q_h Wk_h) X^T (the key bias adds q_h . bk_h to a whole row of
        # scores, which softmax ignores); outputs (A X) Wv_h^T + bv_h.
        dim = k.shape[-1]
        folded = (qh @ self.k_proj.weight.view(heads, c, dim)).flatten(1, 2)  # (B, h*n, D)
        attn = torch.softmax(folded @ k.transpose(-1, -2), dim=-1)  # (B, h*n, N)
        mixed = (attn @ v).view(-1, heads, n, dim)
        out = mixed @ self.v_proj.weight.view(heads, c, dim).transpose(-1, -2)
        out = out + self.v_proj.bias.view(heads, 1, c)
        return self.out_proj(self._recombine_heads(out))

    def _image_to_tokens(self, q, k, v) -> torch.Tensor:
        """Many queries (the image's), few keys and values (the prompt's tokens). A
        softmax over rows of 7 scores does not vectorise: scores are laid out keys x
        queries and normalised across the short axis."""
        heads = self.num_heads
        kh = self._separate_heads(self.k_proj(k), heads)  # (B, h, m, c)
        vh = self._separate_heads(self.v_proj(v), heads)
        b, _, m, c = kh.shape
        kh = kh * c**-0.5
        fold = self._fold(m)
        if q.shape[0] == 1 and not self._fold(b * m):
            # One image for every prompt, many prompts: its queries projected once.
            qh = self._separate_heads(self.q_proj(q), heads)[0]  # (h, N, c)
            rows = kh.transpose(0, 1).reshape(heads, b * m, c)
            scores = (rows @ qh.transpose(-1, -2)).view(heads, b, m, -1).transpose(0, 1)
        elif fold:  # scores X (Wq_h^T k_h) + bq_h . k_h
            dim = q.shape[-1]
            folded = (kh @ self.q_proj.weight.view(heads, c, dim)).flatten(1, 2)
            bias = (kh @ self.q_proj.bias.view(heads, c, 1)).flatten(1, 2)  # (B, h*m, 1)
            image = q.transpose(-1, -2).expand(b, -1, -1)
            scores = torch.baddbmm(bias, folded, image).view(b, heads, m, -1)
        else:
            qh = self._separate_heads(self.q_proj(q), heads)
            scores = kh @ qh.transpose(-1, -2)
        attn = _softmax_over_rows(scores)  # (B, h, m, N)
        if not fold:
            out = attn.transpose(-1, -2) @ vh
            return self.out_proj(self._recombine_heads(out))
        # The output projection applied to the 7 values before attention mixes them.
        weight = self.out_proj.weight.t().reshape(heads, c, -1)  # (h, c, D_out)
        values = (vh @ weight).flatten(1, 2)  # (B, h*m, D_out)
        mixed = attn.reshape(b, heads * m, -1).transpose(-1, -2)  # (B, N, h*m)
        return (mixed @ values).add_(self.out_proj.bias)


class FastUpscaling(torch.nn.Sequential):
    """The mask decoder's ``output_upscaling`` (two 2 x 2, stride-2 transposed
    convolutions with a LayerNorm2d and activations between), same children and
    weights, as matrix products on channels-last maps.

    A 2 x 2 transposed convolution of stride 2 writes each input pixel's four output
    pixels apart, so it is one matrix product ``(pixels, C_in) @ (C_in, 4 C_out)``
    followed by a reshuffle of the four; the LayerNorm2d is then ``layer_norm`` over
    the last axis. On 2 CPU cores (1,024 px SAM, one prompt) this took 8 ms against
    13 ms for the convolutions in fp32, and 4 ms against 12 ms in bf16 (the
    convolution kernels gain nothing from bf16; matrix products do). The transformer
    already leaves its image tokens channels last, so :meth:`channels_last` reads them
    as they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C', 4H, 4W), contiguous, as SAM's module returns."""
        return self.channels_last(x).permute(0, 3, 1, 2).contiguous()

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in any memory layout -> (B, 4H, 4W, C') channels last."""
        return self[4](_transposed_conv2x2(self._first_half(x), self[3]))

    def masks(self, x: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """SAM's mask logits ``hyper_in @ upscaled``: (B, C, H, W) maps and (B, K, C')
        hypernetwork outputs -> (B, K, 4H, 4W). The product is taken before the second
        reshuffle, so K channels are moved rather than C' (3 against 32)."""
        y = self._first_half(x)
        b, h, w, _ = y.shape
        logits = self[4](_unshuffled(y, self[3])) @ hyper_in.transpose(1, 2)  # (B, px, K)
        k = hyper_in.shape[1]
        logits = logits.view(b, h, w, 2, 2, k).permute(0, 5, 1, 3, 2, 4)
        return logits.reshape(b, k, 2 * h, 2 * w)

    def _first_half(self, x: torch.Tensor) -> torch.Tensor:
        """The first transposed convolution, the norm and the activation: (B, C, H, W)
        -> (B, 2H, 2W, C1) channels last."""
        up1, norm, act1 = self[0], self[1], self[2]
        y = _transposed_conv2x2(x.permute(0, 2, 3, 1), up1)
        return act1(F.layer_norm(y, (y.shape[-1],), norm.weight, norm.bias, norm.eps))

    @staticmethod
    def fits(module: torch.nn.Module) -> bool:
        """Whether ``module`` is SAM's upscaling (the layers this class computes)."""
        from segment_anything.modeling.common import LayerNorm2d

        activations = (torch.nn.GELU, torch.nn.ReLU, torch.nn.SiLU)
        kinds = (torch.nn.ConvTranspose2d, LayerNorm2d, activations, torch.nn.ConvTranspose2d)
        kinds += (activations,)
        if not isinstance(module, torch.nn.Sequential) or len(module) != len(kinds):
            return False
        for layer, kind in zip(module, kinds, strict=True):
            if isinstance(kind, tuple):
                if not isinstance(layer, kind):
                    return False
            elif type(layer) is not kind or (
                kind is torch.nn.ConvTranspose2d and not _plain_2x2(layer)
            ):
                return False
        return True


def _plain_2x2(conv: torch.nn.ConvTranspose2d) -> bool:
    return (
        conv.kernel_size == (2, 2)
        and conv.stride == (2, 2)
        and conv.padding == (0, 0)
        and conv.output_padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is not None
    )


def _unshuffled(x: torch.Tensor, conv: torch.nn.ConvTranspose2d) -> torch.Tensor:
    """A 2 x 2, stride-2 transposed convolution of channels-last ``x`` (B, H, W, C)
    before its pixels are put in place: (B, H * W * 4, C'), rows (pixel, dy, dx)."""
    b, h, w, c = x.shape
    out = conv.weight.shape[1]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c, 4 * out)  # columns (dy, dx, o)
    y = torch.addmm(conv.bias.repeat(4), x.reshape(-1, c), weight)
    return y.view(b, h * w * 4, out)


def _transposed_conv2x2(x: torch.Tensor, conv: torch.nn.ConvTranspose2d) -> torch.Tensor:
    """A 2 x 2, stride-2 transposed convolution of channels-last ``x`` (B, H, W, C):
    (B, 2H, 2W, C')."""
    b, h, w, _ = x.shape
    y = _unshuffled(x, conv).view(b, h, w, 2, 2, -1)
    return y.transpose(2, 3).reshape(b, 2 * h, 2 * w, y.shape[-1])


def _softmax_over_rows(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over dimension -2 (keys along rows, queries along columns)."""
    scores = scores - scores.amax(-2, keepdim=True)
    scores.exp_()
    return scores / scores.sum(-2, keepdim=True)


_PAIRS = (
    (Attention, FastAttention),
    (Block, FastBlock),
    (DecoderAttention, FastDecoderAttention),
)


def use_fast_attention(model: torch.nn.Module, enabled: bool = True) -> int:
    """Switch every SAM attention module of ``model`` (encoder and mask decoder) and
    every encoder block to the faster path, or back.

    The weights, state-dict keys and parameters are untouched: only the class of
    each module changes. Returns how many modules were switched.
    """
    swap = {slow: fast for slow, fast in _PAIRS} if enabled else {f: s for s, f in _PAIRS}
    switched = 0
    for module in model.modules():
        target = swap.get(type(module))
        if target is not None:
            module.__class__ = target
            switched += 1
        upscaling = getattr(module, "output_upscaling", None)  # SAM's MaskDecoder
        if upscaling is not None and FastUpscaling.fits(upscaling):
            upscaling.__class__ = FastUpscaling if enabled else torch.nn.Sequential
            switched += 1
    return switched


def uses_fast_attention(model: torch.nn.Module) -> bool:
    """Whether ``model``'s attention blocks take the faster path."""
    return any(
        type(m) in (FastAttention, FastBlock, FastDecoderAttention, FastUpscaling)
        for m in model.modules()
    )


__all__ = [
    "FastAttention",
    "FastDecoderAttention",
    "FastUpscaling",
    "use_fast_attention",
    "uses_fast_attention",
]
