"""The faster fp32 path computes SAM's answer: attention modules against
segment_anything's own, and whole proposal sets of the trained fixture SAM with and
without the fast path (where real masks survive)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from segment_anything.modeling.image_encoder import Attention, Block
from segment_anything.modeling.transformer import Attention as DecoderAttention

from napari_slip.core.models import fast
from napari_slip.core.models.promptable import PromptableSam
from napari_slip.core.models.sam import load_sam
from napari_slip.core.params import SamProposalParams
from napari_slip.core.pipeline.proposals import sam_proposals
from napari_slip.core.runtime.generators import drain
from napari_slip.testing.scenes import scenes
from napari_slip.testing.trained_sam import FIXTURE_AMG

from ..floats import assert_close

FUSED = 1 << 30  # BLOCKED_MIN_KEYS that keeps every size on fused attention


@pytest.mark.parametrize(
    ("side", "batch", "block_bytes", "blocked_min_keys"),
    [
        (32, 1, fast.MASK_BLOCK_BYTES, fast.BLOCKED_MIN_KEYS),  # 1,024 keys: blocked
        (32, 1, 1, FUSED),
        (14, 6, 1 << 16, FUSED),
        (9, 2, fast.MASK_BLOCK_BYTES, FUSED),
        (16, 2, 1 << 12, 1),  # blocked, a block per row, two images
        (12, 1, fast.MASK_BLOCK_BYTES, 1),  # blocked, all rows in one block
    ],
)
def test_encoder_attention_matches_sams(side, batch, block_bytes, blocked_min_keys, monkeypatch):
    """Global (one big window) and windowed attention, fused with the bias built in one
    block or in blocks of a row, or blocked head by head; relative positions far from
    zero so the bias matters."""
    monkeypatch.setattr(fast, "MASK_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(fast, "BLOCKED_MIN_KEYS", blocked_min_keys)
    torch.manual_seed(side)
    theirs = Attention(96, 4, True, True, False, (side, side)).eval()
    with torch.no_grad():
        theirs.rel_pos_h.normal_(0, 1.0)
        theirs.rel_pos_w.normal_(0, 1.0)
    ours = copy.deepcopy(theirs)
    assert fast.use_fast_attention(ours) == 1 and fast.uses_fast_attention(ours)
    x = torch.randn(batch, side, side, 96)
    with torch.no_grad():
        assert_close(ours(x), theirs(x), terms=side * side)  # a softmax over every key
    assert fast.use_fast_attention(ours, enabled=False) == 1
    assert type(ours) is Attention and not fast.uses_fast_attention(ours)


@pytest.mark.parametrize(("side", "window"), [(9, 4), (14, 7), (10, 0), (5, 7)])
def test_encoder_block_matches_sams(side, window):
    """Windowed blocks project only the image's own tokens and pad the projections
    with a zero token's (SAM pads first): the same output, padded (9 in windows of 4,
    5 in one window of 7) or not, global blocks too; a permuted input (as SAM's patch
    embedding gives) comes out contiguous with the same numbers."""
    torch.manual_seed(side + window)
    size = (window, window) if window else (side, side)
    theirs = Block(96, 4, use_rel_pos=True, window_size=window, input_size=size).eval()
    with torch.no_grad():
        theirs.attn.rel_pos_h.normal_(0, 1.0)
        theirs.attn.rel_pos_w.normal_(0, 1.0)
        theirs.attn.qkv.bias.normal_(0, 1.0)  # the padding's projections matter
    ours = copy.deepcopy(theirs)
    assert fast.use_fast_attention(ours) == 2  # the block and its attention
    x = torch.randn(2, side, side, 96)
    # As SAM's patch embedding hands it over: a permuted view, channels last in shape
    # but not in memory (the fast block makes the stream contiguous).
    permuted = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    assert not permuted.is_contiguous()
    with torch.no_grad():
        expected = theirs(x)
        # Attention over a window (or the image) and the MLP's 4 x 96 hidden units.
        terms = max((window or side) ** 2, 4 * 96)
        assert_close(ours(x), expected, terms=terms, depth=2)
        out = ours(permuted)
        assert_close(out, expected, terms=terms, depth=2)
    assert out.is_contiguous()
    assert fast.use_fast_attention(ours, enabled=False) == 2 and type(ours) is Block


@pytest.mark.parametrize(("queries", "keys"), [(7, 300), (300, 7), (40, 40)])
@pytest.mark.parametrize("broadcast", ["none", "queries", "keys"])
def test_decoder_attention_matches_sams(queries, keys, broadcast):
    """Token-to-image (few queries), image-to-token (few keys) and a batch of 1 that
    broadcasts against the prompts' batch, as the shared first layer passes it."""
    torch.manual_seed(queries + keys)
    theirs = DecoderAttention(64, 8, downsample_rate=2).eval()
    ours = copy.deepcopy(theirs)
    fast.use_fast_attention(ours)
    q = torch.randn(1 if broadcast == "queries" else 5, queries, 64)
    kv = torch.randn(1 if broadcast == "keys" else 5, keys, 64)
    with torch.no_grad():
        assert_close(ours(q, kv, kv), theirs(q, kv, kv), terms=max(keys, 64))


def _sams_width_attention(seed: int) -> tuple[DecoderAttention, DecoderAttention]:
    """SAM's cross-attention at its real width (256, 8 heads, internal 128) with biases
    far from zero (folding has to carry each bias), and a fast copy."""
    torch.manual_seed(seed)
    theirs = DecoderAttention(256, 8, downsample_rate=2).eval()
    with torch.no_grad():
        for layer in (theirs.q_proj, theirs.k_proj, theirs.v_proj, theirs.out_proj):
            layer.bias.normal_(0, 1.0)
    ours = copy.deepcopy(theirs)
    fast.use_fast_attention(ours)
    return theirs, ours


@pytest.mark.parametrize("direction", ["tokens_to_image", "image_to_tokens"])
@pytest.mark.parametrize(("image_batch", "prompts"), [(1, 5), (5, 5), (1, 1)])
@pytest.mark.parametrize("fold", [True, False])
def test_decoder_attention_folded_at_sams_width(
    direction, image_batch, prompts, fold, monkeypatch
):
    """At SAM's decoder width, 7 prompt tokens x 8 heads (56) are fewer than the 128
    internal channels, so the image side's projections are folded into the tokens
    (per prompt) or projected once (an image side shared by several prompts, as the
    first layer passes it; one prompt, a click, still folds): SAM's numbers either
    way, and with folding switched off; keys and values differ, as in SAM (image +
    positions, image)."""
    monkeypatch.setattr(fast, "FOLD_PROJECTIONS", fold)
    theirs, ours = _sams_width_attention(image_batch + fold + prompts)
    assert ours._fold(7) is fold and not ours._fold(16)  # 8 x 16 = 128: no saving
    tokens, token_values = torch.randn(prompts, 7, 256), torch.randn(prompts, 7, 256)
    image = torch.randn(image_batch, 300, 256)
    image_keys = image + torch.randn(1, 300, 256)
    if direction == "tokens_to_image":
        args = (tokens, image_keys, image)
    else:
        args = (image_keys, tokens, token_values)
    with torch.no_grad():
        expected = theirs(*args)
        assert expected.shape == (prompts, *args[0].shape[1:])
        assert_close(ours(*args), expected, terms=max(args[1].shape[1], 256))


@pytest.mark.parametrize("width", [32, 256])
def test_decoder_attention_trains(width):
    """The fixture's training recipe runs through the same modules: gradients agree
    (at SAM's width through the folded projections, both directions)."""
    torch.manual_seed(0)
    if width == 256:
        theirs, ours = _sams_width_attention(0)
        theirs.train(), ours.train()
    else:
        theirs = DecoderAttention(32, 4)
        ours = copy.deepcopy(theirs)
        fast.use_fast_attention(ours)
    q, kv = torch.randn(2, 100, width), torch.randn(2, 5, width)
    for module in (theirs, ours):
        (module(q, kv, kv).square().sum() + module(kv, q, q).square().sum()).backward()
    # Each weight's gradient sums over the 200 query tokens (and the 5 keys); a bias
    # and its weight share the layer's output gradient, so they share its scale (the
    # key bias's gradient is zero by cancellation: its size is pure rounding of terms
    # as large as the weight's).
    grads = dict(theirs.named_parameters())
    for name, a in ours.named_parameters():
        layer = name.rsplit(".", 1)[0]
        scale = max(float(p.grad.abs().max()) for n, p in grads.items() if n.startswith(layer))
        terms = q.shape[0] * q.shape[1]
        assert_close(a.grad, grads[name].grad, terms=terms, scale=scale, depth=2)


def _sams_upscaling(seed: int) -> torch.nn.Sequential:
    """SAM's mask decoder's upscaling at ViT-B's width, LayerNorm2d weights not 1."""
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    torch.manual_seed(seed)
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    theirs = MaskDecoder(transformer_dim=256, transformer=transformer).output_upscaling
    with torch.no_grad():
        theirs[1].weight.uniform_(0.5, 1.5)
        theirs[1].bias.normal_(0, 0.5)
    return theirs


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_upscaling_matches_sams(layout):
    """The transposed convolutions as matrix products: SAM's numbers, from either
    memory layout (the transformer hands its maps channels last); switched back,
    SAM's own module."""
    theirs = _sams_upscaling(1)
    ours = copy.deepcopy(theirs)
    holder = torch.nn.Module()
    holder.output_upscaling = ours
    assert fast.use_fast_attention(holder) == 1 and type(ours) is fast.FastUpscaling
    x = torch.randn(2, 256, 16, 16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = theirs(x)
        out = ours(x)
        assert out.shape == expected.shape == (2, 32, 64, 64) and out.is_contiguous()
        assert_close(out, expected, terms=256, depth=3)  # 256 channels, then 64
        assert_close(ours.channels_last(x).permute(0, 3, 1, 2), expected, terms=256, depth=3)
        hyper = torch.randn(2, 3, 32)  # three masks' hypernetwork outputs per prompt
        masks = (hyper @ expected.flatten(2)).view(2, 3, 64, 64)
        assert_close(ours.masks(x, hyper), masks, terms=256 * 32, depth=4)
    assert fast.use_fast_attention(holder, enabled=False) == 1
    assert type(ours) is torch.nn.Sequential


def test_upscaling_trains():
    """The fixture's training recipe backpropagates through it: SAM's gradients."""
    theirs = _sams_upscaling(2)
    ours = copy.deepcopy(theirs)
    ours.__class__ = fast.FastUpscaling
    x = torch.randn(2, 256, 8, 8)
    for module in (theirs, ours):
        module(x).square().sum().backward()
    grads = dict(theirs.named_parameters())
    for name, a in ours.named_parameters():
        layer = name.rsplit(".", 1)[0]
        scale = max(float(p.grad.abs().max()) for n, p in grads.items() if n.startswith(layer))
        # A weight's gradient sums over every output pixel (2 x 32 x 32 at most).
        assert_close(a.grad, grads[name].grad, terms=2 * 32 * 32, scale=scale, depth=3)


def test_upscaling_left_alone_when_it_is_not_sams():
    """Another upscaling (here 3 x 3 kernels) is not SAM's: left as it is."""
    other = _sams_upscaling(3)
    other[0] = torch.nn.ConvTranspose2d(256, 64, kernel_size=3, stride=2)
    holder = torch.nn.Module()
    holder.output_upscaling = other
    assert fast.use_fast_attention(holder) == 0 and type(other) is torch.nn.Sequential


@pytest.fixture(scope="module")
def fixture_pair(trained_sam_path):
    """The trained fixture SAM on the fast path (as loaded) and on SAM's own modules."""
    model, _ = load_sam(trained_sam_path)
    assert fast.uses_fast_attention(model)  # loading turns it on
    slow = copy.deepcopy(model)
    fast.use_fast_attention(slow, enabled=False)
    return PromptableSam(model), PromptableSam(slow)


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


def test_fast_path_gives_sams_masks_on_the_trained_fixture(fixture_pair):
    fast_sam, slow_sam = fixture_pair
    params = SamProposalParams(**FIXTURE_AMG)
    rgbs, _ = scenes(3, seed=21)
    compared = 0
    for rgb in rgbs:
        emb_fast, emb_slow = fast_sam.embed(rgb), slow_sam.embed(rgb)
        # A whole encoder: depth for its blocks, sums over the image's tokens.
        tokens = emb_fast.features.shape[-1] * emb_fast.features.shape[-2]
        assert_close(emb_fast.features, emb_slow.features, terms=tokens, depth=4)
        ours = drain(sam_proposals(fast_sam, emb_fast, params))
        theirs = drain(sam_proposals(slow_sam, emb_slow, params))
        assert len(ours) == len(theirs) > 0
        assert np.array_equal(ours.boxes, theirs.boxes)
        for i in range(len(ours)):
            assert _iou(ours.full_mask(i), theirs.full_mask(i)) >= 0.99
        assert_close(ours.quality, theirs.quality, terms=tokens, depth=8)  # + the decoder
        compared += len(ours)
    assert compared >= 20


def test_mask_head_only_for_masks_above_the_iou_filter(fixture_pair):
    """decode_points_above gives exactly the filtered masks of decode_points."""
    sam, _ = fixture_pair
    rgb = scenes(1, seed=8)[0][0]
    emb = sam.embed(rgb)
    points = np.random.default_rng(0).uniform(0, 256, size=(24, 2))
    low_res, iou = sam.decode_points(emb, points)
    low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
    for thresh in (float(iou.median()), float(iou.max()) + 1.0, -1.0):
        keep = iou > thresh
        above, above_iou = sam.decode_points_above(emb, points, thresh)
        assert above.shape == (int(keep.sum()), *low_res.shape[1:])
        assert_close(above_iou, iou[keep], terms=emb.features.shape[-1] ** 2, depth=4)
        assert_close(above, low_res[keep], terms=emb.features.shape[-1] ** 2, depth=4)


def test_int8_gives_fp32s_masks_and_selection(trained_sam_path, tiny_clip_path):
    """precision="int8": the trained fixture's proposals match fp32's (IoU >= 0.95) and
    the same objects are chosen; the fp32 model is left as it was."""
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.testing.metrics import object_metrics

    rgbs, truths = scenes(3, seed=31)
    params = SamProposalParams(**FIXTURE_AMG, min_area=30)
    found, tables = {}, {}
    for precision in ("fp32", "int8"):
        seg = Segmenter(
            str(trained_sam_path),
            str(tiny_clip_path),
            "cpu",
            sam_params=params,
            precision=precision,
            disk_cache=False,
        )
        found[precision] = []
        for rgb in rgbs:
            seg.set_image(rgb)
            found[precision].append(drain(seg.iter_proposals()))
        result = seg.segment(rgbs[0], "nucleus", mode="topk", top_k=3)
        assert result.provenance["precision"] == precision
        tables[precision] = result.table
    matched = 0
    for ours, theirs, truth in zip(found["int8"], found["fp32"], truths, strict=True):
        assert abs(len(ours) - len(theirs)) <= max(1, len(theirs) // 10)
        for i in range(len(theirs)):
            best = max(_iou(theirs.full_mask(i), ours.full_mask(j)) for j in range(len(ours)))
            matched += best >= 0.95
        assert (
            object_metrics(truth, ours)["recall"] >= object_metrics(truth, theirs)["recall"] - 0.1
        )
    assert matched >= 0.9 * sum(len(p) for p in found["fp32"])
    a, b = tables["fp32"], tables["int8"]
    assert a["area"].iloc[0] > 0 and len(a) == len(b) == 3
    np.testing.assert_allclose(a["similarity"], b["similarity"], atol=0.05)


def test_int8_quantizes_a_copy_and_the_linear_layers(trained_sam_path):
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    model, _ = load_sam(trained_sam_path)
    sam = PromptableSam(model)
    int8 = sam._model("int8")
    assert int8 is sam._model("int8") and int8 is not model  # made once
    assert any(isinstance(m, Int8Linear) for m in int8.image_encoder.modules())
    assert any(isinstance(m, Int8Linear) for m in int8.mask_decoder.modules())
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    rgb = scenes(1, seed=2)[0][0]
    a, b = sam.embed(rgb, "fp32").features, sam.embed(rgb, "int8").features
    assert not torch.equal(a, b)
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    assert cos > 0.99


def test_int8_keeps_folding_attention_in_fp32():
    """At SAM's decoder width the cross-attention layers that fold stay fp32 in the int8
    copy (folded they are faster than int8 unfolded) and give fp32's output; the rest
    of the decoder and the encoder are quantized; the fp32 model is untouched."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    from napari_slip.core.models.promptable import int8_copy
    from napari_slip.core.models.sam import build_sam
    from napari_slip.testing.tiny import TINY_SAM_FULL_WIDTH

    torch.manual_seed(3)
    model = build_sam(TINY_SAM_FULL_WIDTH).eval()
    int8 = int8_copy(model)
    attention = {
        name: m for name, m in int8.named_modules() if isinstance(m, fast.FastDecoderAttention)
    }
    folded = {name for name, m in attention.items() if m.folding_saves()}
    # Cross-attention (internal 128) qualifies; so does the tokens' self-attention
    # (internal 256), which is tiny either way.
    assert folded and folded == set(attention)
    for name in folded:
        layer = int8.get_submodule(name)
        assert type(layer.k_proj) is torch.nn.Linear and layer._fold(7)
        q, k = torch.randn(3, 7, 256), torch.randn(3, 50, 256)
        with torch.no_grad():
            assert_close(layer(q, k, k), model.get_submodule(name)(q, k, k), terms=256)
    assert any(isinstance(m, Int8Linear) for m in int8.image_encoder.modules())
    assert any(
        isinstance(m, Int8Linear) for m in int8.mask_decoder.output_hypernetworks_mlps.modules()
    )
    assert not any(isinstance(m, Int8Linear) for m in model.modules())


@pytest.mark.parametrize(
    ("points", "positive", "box"),
    [
        ([(120.0, 90.0)], [True], None),  # a click: three masks
        ([(120.0, 90.0), (40.0, 200.0)], [True, False], None),
        ([(120.0, 90.0)], [True], (60.0, 50.0, 180.0, 150.0)),  # point and box: one mask
    ],
)
def test_a_click_decodes_as_sams_own_decoder(fixture_pair, points, positive, box):
    """An edit's prompt (``decode_prompt``: folded one-prompt attention, the
    upscaling as matrix products, the cached positional map) gives what SAM's own
    ``MaskDecoder.forward`` gives on SAM's own modules."""
    fast_sam, slow_sam = fixture_pair
    rgb = scenes(1, seed=5)[0][0]
    emb = fast_sam.embed(rgb)
    multimask = box is None
    xy, flags = np.asarray(points), np.asarray(positive)
    logits, iou = fast_sam.decode_prompt(emb, xy, flags, box and np.asarray(box), multimask)
    model = slow_sam.model
    coords = slow_sam.transform.apply_coords(xy, emb.original_size)
    prompt = (
        torch.as_tensor(coords, dtype=torch.float32)[None],
        torch.as_tensor(flags.astype(np.int64))[None],
    )
    boxes = None
    if box is not None:
        boxes = torch.as_tensor(
            slow_sam.transform.apply_boxes(np.asarray([box]), emb.original_size)
        )
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(
            points=prompt, boxes=boxes.float() if boxes is not None else None, masks=None
        )
        low, expected_iou = model.mask_decoder(
            image_embeddings=emb.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        expected = slow_sam.upscale(low[0], emb)
    assert logits.shape == expected.shape == (3 if multimask else 1, *rgb.shape[:2])
    tokens = emb.features.shape[-1] * emb.features.shape[-2]
    assert_close(logits, expected, terms=tokens, depth=4)
    assert_close(iou, expected_iou[0], terms=tokens, depth=4)
