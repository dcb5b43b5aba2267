"""Relevance maps (MaskCLIP's training-free dense CLIP): the value path keeps patches
apart, windows are stitched where their pixels are, features are cached per image."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.models.clip import load_clip_checkpoint
from napari_slip.core.pipeline.relevance import (
    default_window,
    iter_dense_features,
    patch_features,
    relevance_map,
)
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.pipeline.tiles import tile_grid
from napari_slip.core.runtime.generators import drain
from napari_slip.testing import blobs_image

from ..floats import assert_close

#: The tiny CLIP's width: the length of every sum in its block and in a cosine.
CLIP_TERMS = 32


@pytest.fixture(scope="module")
def clip(tiny_clip_path):
    return load_clip_checkpoint(tiny_clip_path)


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_last_block_keeps_patches_apart(clip):
    """The tiny CLIP has one block, so with MaskCLIP's value path a patch's feature
    depends on its own pixels only: changing one patch changes one feature. (CLIP's own
    pooled path would mix every patch into every token.)"""
    side = clip.image_size  # 32 px, patches of 8: a 4 x 4 grid
    a = _rgb(side, side)
    b = a.copy()
    b[8:16, 16:24] = 255 - b[8:16, 16:24]  # patch (1, 2)
    fa, fb = patch_features(clip, [a, b], method="maskclip")
    assert fa.shape == (4, 4, clip.embed_dim)
    changed = (fa - fb).abs().amax(-1) > 1e-5
    assert changed.tolist() == [[r == 1 and c == 2 for c in range(4)] for r in range(4)]
    assert_close(fa.norm(dim=-1), np.ones(fa.shape[:2]), terms=CLIP_TERMS)


def test_map_is_highest_where_the_matching_patch_is(clip):
    """Windows are stitched at their pixels: a text embedding equal to one patch's
    feature peaks over that patch's pixels in the image."""
    image = _rgb(100, 140, seed=3)
    dense = drain(iter_dense_features(clip, image, window=64))
    assert dense.windows == tile_grid((100, 140), 64, 32)
    w, r, c = 2, 1, 3  # third window, patch row 1, column 3 (of 4 x 4, 16 px each)
    y0, x0 = dense.windows[w][:2]
    target = dense.features[w, r, c].numpy()
    relevance = relevance_map(dense, target)
    assert relevance.shape == (100, 140) and relevance.dtype == np.float32
    assert np.isfinite(relevance).all() and np.abs(relevance).max() <= 1.0 + 1e-5
    peak = np.unravel_index(np.argmax(relevance), relevance.shape)
    centre = (y0 + 16 * r + 8, x0 + 16 * c + 8)
    assert abs(peak[0] - centre[0]) <= 16 and abs(peak[1] - centre[1]) <= 16


def test_a_region_of_the_map_is_that_part_of_the_whole_map(clip, decoder_fixture):
    """A region's map, made from the windows that overlap it, equals the same part of
    the whole image's map (untrained cosines and a decoder's probabilities); the
    untrained 0-1 map of a region is rescaled over every patch's range."""
    from napari_slip.core.models.decoder import load_decoder
    from napari_slip.core.pipeline.relevance import (
        decoder_map,
        iter_decoder_features,
        relevance_range,
        windows_in,
    )

    image = _rgb(100, 140, seed=5)
    dense = drain(iter_dense_features(clip, image, window=64))
    text = dense.features[1, 2, 0].numpy()
    region = (10, 70, 90, 140)
    assert len(windows_in(dense, region)) < len(dense.windows)
    whole = relevance_map(dense, text)
    assert_close(
        relevance_map(dense, text, region=region), whole[10:90, 70:140], terms=CLIP_TERMS, depth=4
    )
    low, high = relevance_range(dense, text)
    assert low <= whole.min() and high >= whole.max()

    seg = Segmenter("/no/sam.pth", str(decoder_fixture.clip), "cpu", disk_cache=False)
    seg.set_image(image)
    maps, session = seg.scope().context.relevance, seg.current_session()  # what guided sources see
    unit = drain(maps.iter_unit(session, "circle", region=region))
    part = drain(seg.iter_relevance("circle"))[10:90, 70:140]
    low, high = relevance_range(drain(maps.iter_dense(session)), seg.text_embedding("circle"))
    assert_close(unit, (part - low) / (high - low), terms=CLIP_TERMS, depth=4)
    seg.set_decoder(decoder_fixture.decoder)
    decoded = drain(seg.scope().context.relevance.iter_unit(session, "circle", region=region))
    part = drain(seg.iter_relevance("circle"))[10:90, 70:140]
    assert_close(decoded, part, terms=CLIP_TERMS, depth=4)  # the decoder's batches differ
    decoder = load_decoder(decoder_fixture.decoder)
    feats = drain(iter_decoder_features(seg.clip.clip, decoder.model, image))
    whole = decoder_map(decoder.model, feats, seg.text_embedding("circle"))
    part = decoder_map(decoder.model, feats, seg.text_embedding("circle"), region=region)
    assert_close(part, whole[10:90, 70:140], terms=CLIP_TERMS, depth=4)


def test_small_images_are_padded_not_stretched(clip):
    dense = drain(iter_dense_features(clip, _rgb(20, 50), window=64))
    assert dense.windows == [(0, 0, 20, 50)]
    assert relevance_map(dense, dense.features[0, 0, 0].numpy()).shape == (20, 50)
    with pytest.raises(InputError, match="at least 8"):
        drain(iter_dense_features(clip, _rgb(20, 50), window=4))


def test_default_window_bounds_the_number_of_windows():
    assert default_window((200, 300), 224) == 224
    assert default_window((4000, 8000), 224) == 2000
    assert len(tile_grid((4000, 8000), 2000, 1000)) <= 7 * 3


def test_segment_returns_a_relevance_map_and_caches_the_features(tiny_sam_path, tiny_clip_path):
    image, labels = blobs_image(seed=7)
    seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", disk_cache=False)
    plain = seg.segment(image, "cell", labels=labels, mode="topk", top_k=2)
    assert plain.relevance is None
    first = seg.segment(image, "cell", labels=labels, mode="topk", top_k=2, relevance=True)
    assert first.relevance.shape == image.shape and first.relevance.dtype == np.float32
    windows = seg.stats["relevance_windows"]
    assert windows >= 1
    texts = seg.stats["text_encodings"]
    other = seg.relevance("debris")  # a new prompt: one text encoding, no image work
    assert seg.stats["relevance_windows"] == windows
    assert seg.stats["text_encodings"] == texts + 1
    assert other.shape == image.shape and not np.allclose(other, first.relevance)
    assert_close(seg.relevance("cell"), first.relevance, terms=CLIP_TERMS, depth=4)


def test_a_stack_gets_a_map_per_segmented_plane(tiny_sam_path, tiny_clip_path):
    """Planes segmented get their own map, at their place in a volume of the labels'
    shape; a plane not segmented stays 0."""
    from napari_slip.core.pipeline.stack import iter_segment_stack

    planes = [blobs_image(seed=s) for s in (1, 2, 3)]
    stack = np.stack([image for image, _ in planes])
    labels = np.stack([lab for _, lab in planes])
    seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", disk_cache=False)
    result = drain(
        iter_segment_stack(
            seg,
            stack,
            "cell",
            planes=[(0,), (2,)],
            labels=labels,
            relevance=True,
            mode="topk",
            top_k=2,
        )
    )
    assert result.relevance.shape == stack.shape and result.relevance.dtype == np.float32
    assert not result.relevance[1].any()
    for z in (0, 2):
        assert_close(
            result.relevance[z], seg.relevance("cell", stack[z]), terms=CLIP_TERMS, depth=4
        )
    assert not np.allclose(result.relevance[0], result.relevance[2])
    assert set(result.plane_relevance) == {(0,), (2,)}
    plain = drain(iter_segment_stack(seg, stack, "cell", planes=[(1,)], labels=labels))
    assert plain.relevance is None and not plain.plane_relevance


def test_cli_writes_a_relevance_map(tmp_path, tiny_clip_path, capsys):
    import tifffile

    from napari_slip.cli import main

    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    args = [
        "segment",
        str(tmp_path / "img.tif"),
        "-p",
        "cell",
        "-o",
        str(tmp_path / "o.tif"),
        "--proposals-from",
        str(tmp_path / "labels.tif"),
        "--sam",
        "/no/sam.pth",
        "--clip",
        str(tiny_clip_path),
        "-q",
    ]
    assert main([*args, "--relevance-out", str(tmp_path / "map.tif")]) == 0
    relevance = tifffile.imread(tmp_path / "map.tif")
    assert relevance.shape == image.shape and relevance.dtype == np.float32
    seg = Segmenter("/no/sam.pth", str(tiny_clip_path), "cpu", disk_cache=False)
    assert_close(relevance, seg.relevance("cell", image), terms=CLIP_TERMS, depth=4)
    code = main([*args, "--overwrite", "--relevance-out", str(tmp_path / "map.png")])
    assert code != 0
    assert "--relevance-out must end in .tif" in capsys.readouterr().err


def test_lazy_images_are_read_window_by_window(tiny_sam_path, tiny_clip_path):
    """A tiled (lazy) image: the map reads windows, never the whole image, and equals
    the map of the same pixels in memory."""
    from napari_slip.core.params import TileParams
    from napari_slip.testing.arrays import CountingArray

    gray = np.random.default_rng(5).integers(0, 4000, (300, 420), dtype=np.uint16)
    lazy = CountingArray(gray)
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        disk_cache=False,
        tile_params=TileParams(tiles="on"),
    )
    seg.set_image(lazy, contrast_limits=(0, 4000))
    lazy.reads.clear()
    from_lazy = seg.relevance("cell", window=64)
    assert lazy.reads and max(lazy.reads) <= 64 * 64
    memory = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", disk_cache=False)
    memory.set_image(gray, contrast_limits=(0, 4000))
    in_memory = memory.relevance("cell", window=64)
    assert_close(from_lazy, in_memory, terms=CLIP_TERMS, depth=4)


def test_a_clip_without_a_vit_tower_is_refused(clip):
    from dataclasses import replace

    import torch

    class NoVit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = torch.nn.Conv2d(3, 4, 3)  # e.g. a ResNet tower

    with pytest.raises(InputError, match="ViT image tower"):
        patch_features(replace(clip, model=NoVit()), [_rgb(32, 32)])


def _reference_last_block(last, x, method):
    """The maps' formulas written out head by head (numpy), to check last_block by."""
    import math

    W = last.attn.in_proj_weight.detach().numpy().astype(np.float64)
    b = last.attn.in_proj_bias.detach().numpy().astype(np.float64)
    h = last.ln_1(x).detach().numpy().astype(np.float64)[:, 1:]  # patch tokens
    width = W.shape[1]
    q, k, v = (
        h @ W[i * width : (i + 1) * width].T + b[i * width : (i + 1) * width] for i in range(3)
    )
    heads = last.attn.num_heads
    d = width // heads
    t = h.shape[1]
    g = math.isqrt(t)
    pos = np.array([(i // g, i % g) for i in range(t)], dtype=np.float64)
    prior = -((pos[:, None] - pos[None]) ** 2).sum(-1) / (2 * 5.0**2)

    def soft(a):
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    out = np.zeros_like(v)
    for n in range(h.shape[0]):
        for head in range(heads):
            sl = slice(head * d, (head + 1) * d)
            qh, kh, vh = q[n, :, sl], k[n, :, sl], v[n, :, sl]
            if method == "maskclip":
                out[n, :, sl] = vh
                continue
            qq, kk = qh @ qh.T / math.sqrt(d), kh @ kh.T / math.sqrt(d)
            weights = {
                "clearclip": soft(qq),
                "sclip": soft(qq) + soft(kk),
                "naclip": soft(kk + prior),
            }[method]
            out[n, :, sl] = weights @ vh
    Wo = last.attn.out_proj.weight.detach().numpy().astype(np.float64)
    bo = last.attn.out_proj.bias.detach().numpy().astype(np.float64)
    return out @ Wo.T + bo


@pytest.mark.parametrize("method", ["maskclip", "clearclip", "sclip", "naclip"])
def test_each_map_follows_its_formula_with_no_residual_or_feed_forward(clip, method):
    import torch

    from napari_slip.core.pipeline.relevance import last_block

    last = clip.model.visual.transformer.resblocks[-1]
    x = torch.randn(2, 1 + 16, last.attn.in_proj_weight.shape[1])
    got = last_block(last, x, method).detach().numpy()
    assert_close(got, _reference_last_block(last, x, method), terms=CLIP_TERMS, depth=2)
    with torch.no_grad():  # the feed-forward plays no part
        saved = [p.clone() for p in last.mlp.parameters()]
        for p in last.mlp.parameters():
            p.mul_(3.0).add_(1.0)
        again = last_block(last, x, method).detach().numpy()
        for p, old in zip(last.mlp.parameters(), saved, strict=True):
            p.copy_(old)
    assert_close(again, got, terms=CLIP_TERMS, depth=2)


def test_which_patches_a_change_in_one_patch_can_affect(clip, monkeypatch):
    """MaskCLIP: that patch only. ClearCLIP: every patch (attention over the image).
    NACLIP: every patch, but its neighbourhood prior makes near patches change most."""
    from napari_slip.core.pipeline import relevance

    side = clip.image_size
    a = _rgb(side, side, seed=4)
    b = a.copy()
    b[8:16, 8:16] = 255 - b[8:16, 8:16]  # patch (1, 1)
    change = {}
    for method in ("maskclip", "clearclip", "naclip"):
        fa, fb = patch_features(clip, [a, b], method=method)
        change[method] = (fa - fb).abs().amax(-1).numpy()
    assert (change["maskclip"] > 1e-5).sum() == 1 and change["maskclip"][1, 1] > 0
    assert (change["clearclip"] > 1e-6).all()
    monkeypatch.setattr(relevance, "NACLIP_SIGMA", 0.5)
    monkeypatch.setattr(relevance.gaussian_prior, "__defaults__", (0.5,))
    fa, fb = patch_features(clip, [a, b], method="naclip")
    near = (fa - fb).abs().amax(-1).numpy()
    assert near[1, 1] == near.max()
    assert near[1, 2] > near[3, 3] and near[2, 1] > near[3, 3]


def test_the_map_is_chosen_per_run_and_cached_apart(tiny_sam_path, tiny_clip_path):
    from napari_slip.core.params import GuidedParams

    image, _ = blobs_image()
    seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path))
    naclip = seg.relevance("a blob", image)
    windows = seg.stats["relevance_windows"]
    assert windows > 0
    assert_close(seg.relevance("a blob"), naclip, terms=CLIP_TERMS, depth=4)  # cached
    assert seg.stats["relevance_windows"] == windows
    seg.guided_params = GuidedParams(map="maskclip")
    maskclip = seg.relevance("a blob", image)
    assert not np.allclose(naclip, maskclip)
    assert seg.stats["relevance_windows"] == 2 * windows  # its own features
    with pytest.raises(InputError, match="Unknown relevance map"):
        GuidedParams(map="bestclip")
