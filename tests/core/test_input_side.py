"""SAM at a smaller input side (``SamProposalParams.input_side``): the encoder sees the
image in a smaller square, the decoder reads a smaller grid, prompts and masks keep
their place in the image.

The reference for each part is ``segment_anything``'s own code at that size: a ViT
built natively at the smaller side (its position tables interpolated as ours are), a
prompt encoder and mask decoder made for the smaller grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)

from napari_slip.core.errors import InputError
from napari_slip.core.models.fast import use_fast_attention
from napari_slip.core.models.promptable import PromptableSam
from napari_slip.core.models.sam import build_sam, load_sam
from napari_slip.core.models.vit import SamViT, resized_positions
from napari_slip.core.params import SamProposalParams
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.testing.scenes import scenes
from napari_slip.testing.tiny import TINY_SAM, write_tiny_efficientvit_sam, write_tiny_mobile_sam
from napari_slip.testing.trained_sam import (
    FIXTURE_AMG,
    FIXTURE_SAM,
    FIXTURE_SCALES_PATH,
    match_objects,
)
from tests.floats import assert_close


def _vit_kwargs(config) -> dict:
    from functools import partial

    return {
        "depth": config.depth,
        "embed_dim": config.embed_dim,
        "mlp_ratio": config.mlp_ratio,
        "norm_layer": partial(torch.nn.LayerNorm, eps=1e-6),
        "num_heads": config.num_heads,
        "patch_size": config.patch_size,
        "qkv_bias": True,
        "use_rel_pos": True,
        "global_attn_indexes": tuple(config.global_attn_indexes),
        "window_size": config.window_size,
        "out_chans": config.prompt_embed_dim,
    }


def test_the_vit_at_its_own_side_is_segment_anythings():
    torch.manual_seed(0)
    ours = SamViT(img_size=FIXTURE_SAM.img_size, **_vit_kwargs(FIXTURE_SAM)).eval()
    torch.nn.init.normal_(ours.pos_embed, std=0.5)
    theirs = ImageEncoderViT(img_size=FIXTURE_SAM.img_size, **_vit_kwargs(FIXTURE_SAM)).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, FIXTURE_SAM.img_size, FIXTURE_SAM.img_size)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_the_vit_at_a_smaller_side_is_a_vit_built_at_that_side():
    """At 128 px, SamViT equals segment_anything's ViT built for 128 px whose absolute
    positions are ours resized and whose global blocks' relative positions are
    interpolated as segment_anything interpolates them."""
    torch.manual_seed(1)
    big, small = FIXTURE_SAM.img_size, 128
    ours = SamViT(img_size=big, **_vit_kwargs(FIXTURE_SAM)).eval()
    torch.nn.init.normal_(ours.pos_embed, std=0.5)
    for name, p in ours.named_parameters():
        if "rel_pos" in name:
            torch.nn.init.normal_(p, std=0.5)
    native = ImageEncoderViT(img_size=small, **_vit_kwargs(FIXTURE_SAM)).eval()
    grid = small // FIXTURE_SAM.patch_size
    state = {}
    for name, value in ours.state_dict().items():
        if name == "pos_embed":
            value = resized_positions(value, grid, grid)
        elif "rel_pos" in name and value.shape != native.state_dict()[name].shape:
            # As segment_anything's get_rel_pos resizes a table at run time.
            table = value.reshape(1, value.shape[0], -1).permute(0, 2, 1)
            value = F.interpolate(table, size=2 * grid - 1, mode="linear")[0].T
        state[name] = value
    native.load_state_dict(state)
    use_fast_attention(ours)  # the path a loaded model takes
    x = torch.randn(1, 3, small, small)
    with torch.no_grad():
        out, expected = ours(x), native(x)
    assert out.shape == (1, FIXTURE_SAM.prompt_embed_dim, grid, grid)
    assert_close(out, expected, terms=FIXTURE_SAM.embed_dim * FIXTURE_SAM.depth, depth=4)


def test_a_smaller_side_decodes_as_segment_anythings_decoder_for_that_grid():
    """The decode at a 8 x 8 grid (a 128 px frame of the 256 px model): our batched,
    folded decoder against segment_anything's PromptEncoder and MaskDecoder built for
    that grid, with the same weights."""
    torch.manual_seed(2)
    model = build_sam(FIXTURE_SAM)
    sam = PromptableSam(model)
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    emb = sam.embed(rgb, side=128)
    assert emb.features.shape[-2:] == (8, 8)
    assert emb.input_size == (192, 256)  # in the model's frame, as at its own side
    dim = FIXTURE_SAM.prompt_embed_dim
    prompts = PromptEncoder(dim, (8, 8), (FIXTURE_SAM.img_size,) * 2, FIXTURE_SAM.mask_in_chans)
    prompts.load_state_dict(model.prompt_encoder.state_dict())
    transformer = TwoWayTransformer(
        depth=FIXTURE_SAM.decoder_depth,
        embedding_dim=dim,
        mlp_dim=FIXTURE_SAM.decoder_mlp_dim,
        num_heads=FIXTURE_SAM.decoder_heads,
    )
    decoder = MaskDecoder(
        transformer_dim=dim,
        transformer=transformer,
        iou_head_hidden_dim=FIXTURE_SAM.iou_head_hidden_dim,
    ).eval()
    decoder.load_state_dict(model.mask_decoder.state_dict())
    points = np.array([[10.0, 20.0], [64.0, 48.0], [120.0, 90.0]])
    low, iou = sam.decode_points(emb, points)
    coords = sam.transform.apply_coords(points, emb.original_size)
    coords = torch.as_tensor(coords, dtype=torch.float32)[:, None]
    with torch.no_grad():
        sparse, dense = prompts((coords, torch.ones(3, 1, dtype=torch.int64)), None, None)
        expected, expected_iou = decoder(
            emb.features, prompts.get_dense_pe(), sparse, dense, multimask_output=True
        )
    assert low.shape == expected.shape == (3, 3, 32, 32)
    assert_close(low, expected, terms=dim * 64, depth=4)
    assert_close(iou, expected_iou, terms=dim * 64, depth=4)


@pytest.mark.parametrize("write", [write_tiny_mobile_sam, write_tiny_efficientvit_sam])
def test_the_light_encoders_give_a_grid_in_proportion(write, tmp_path):
    model, _ = load_sam(write(tmp_path / "sam.pth"))
    sam = PromptableSam(model)
    rgb = np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)
    own = sam.embed(rgb)
    half = sam.embed(rgb, side=sam.input_size // 2)
    assert half.features.shape[-1] * 2 == own.features.shape[-1]
    assert half.input_size == own.input_size
    low, _ = sam.decode_points(half, np.array([[80.0, 100.0]]))
    assert low.shape[-1] == 4 * half.features.shape[-1]
    assert sam.upscale(low[0], half).shape[-2:] == (200, 160)


def test_the_side_is_checked():
    for bad in (32, 100, 0, True, 512.0):
        with pytest.raises(InputError, match="input_side"):
            SamProposalParams(input_side=bad)
    model = build_sam(TINY_SAM)
    with pytest.raises(InputError, match="multiple of 16"):
        PromptableSam(model).frame_side(40)
    assert PromptableSam(model).frame_side(4096) == TINY_SAM.img_size  # never above its own


@pytest.fixture(scope="module")
def scale_fixture():
    assert FIXTURE_SCALES_PATH.is_file()
    return str(FIXTURE_SCALES_PATH)


def test_the_fixture_trained_at_several_scales_finds_objects_at_a_smaller_side(
    scale_fixture, tiny_clip_path
):
    """Through the pipeline, the fixture's 256 px scenes seen in frames of 192 and 128
    px: objects found where they are (IoU >= 0.5 with the truth; a mask misplaced by
    the frame's scale would match none); at 3/4 of the side nearly as many as at the
    model's own, at half fewer (the objects are then 1-3 patches across). The encoder
    runs once per scene and side (the side is part of the embedding's key)."""
    rgbs, labels = scenes(6, seed=777)
    engine = Segmenter(scale_fixture, str(tiny_clip_path), disk_cache=False, precision="fp32")
    found = {}
    for side in (None, 192, 128):
        params = SamProposalParams(**FIXTURE_AMG, input_side=side)
        hits = total = 0
        for rgb, truth in zip(rgbs, labels, strict=True):
            result = engine.segment(rgb, "cell", sam_params=params, mode="threshold", threshold=-1)
            masks = [result.labels == i for i in np.unique(result.labels) if i]
            f, n, _ = match_objects(truth, masks)
            hits, total = hits + f, total + n
        found[side] = hits / total
    assert engine.stats["sam_image_encodings"] == 18  # 6 scenes x 3 sides, none shared
    assert found[None] >= 0.8, found
    assert found[192] >= found[None] - 0.06, found
    assert found[128] >= 0.5, found


def test_the_disk_cache_keeps_each_side_apart(tiny_sam_path, tiny_clip_path, fast_sam_params):
    """An embedding made at one side is never read back for another: a fresh segmenter
    (empty memory) at 128 px encodes again, then finds its own on disk."""
    rgb = np.random.default_rng(3).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    first = Segmenter(str(tiny_sam_path), str(tiny_clip_path), disk_cache=True)
    first.segment(rgb, "x", sam_params=fast_sam_params)
    assert first.stats["sam_image_encodings"] == 1
    for encoded, from_disk in ((1, 0), (0, 1)):
        again = Segmenter(str(tiny_sam_path), str(tiny_clip_path), disk_cache=True)
        params = SamProposalParams(**{**fast_sam_params.as_dict(), "input_side": 128})
        again.segment(rgb, "x", sam_params=params)
        assert again.stats["sam_image_encodings"] == encoded
        assert again.stats["sam_embeddings_from_disk"] == from_disk


def test_the_resized_positions_carry_their_gradient_in_training():
    torch.manual_seed(4)
    vit = SamViT(img_size=FIXTURE_SAM.img_size, **_vit_kwargs(FIXTURE_SAM))
    vit(torch.randn(1, 3, 128, 128)).square().mean().backward()
    assert vit.pos_embed.grad is not None and vit.pos_embed.grad.abs().sum() > 0
