"""MobileSAM (TinyViT image encoder): the official key layout, loading from files, the
attention against its formula (the whole pipeline: test_efficientvit_sam.py)."""

from __future__ import annotations

import pytest
import torch

from napari_slip.core.errors import CheckpointError
from napari_slip.core.models.registry import SAM_MODELS
from napari_slip.core.models.sam import build_sam, load_sam, read_state_dict
from napari_slip.core.models.tinyvit import TinyViTEncoder, WindowAttention, offset_index
from napari_slip.testing.tiny import TINY_MOBILE_SAM, write_tiny_mobile_sam

from ..floats import assert_close

# Shapes of MobileSAM's published encoder (vit_t: dims 64/128/160/320, depths 2/2/6/2,
# heads 2/4/5/10, windows 7/7/14/7), by the parameter names of its tiny_vit_sam.py.
OFFICIAL_SHAPES = {
    "patch_embed.seq.0.c.weight": (32, 3, 3, 3),
    "patch_embed.seq.0.bn.running_var": (32,),
    "patch_embed.seq.2.c.weight": (64, 32, 3, 3),
    "layers.0.blocks.1.conv1.c.weight": (256, 64, 1, 1),
    "layers.0.blocks.1.conv2.c.weight": (256, 1, 3, 3),
    "layers.0.blocks.1.conv3.bn.weight": (64,),
    "layers.0.downsample.conv1.c.weight": (128, 64, 1, 1),
    "layers.0.downsample.conv2.c.weight": (128, 1, 3, 3),
    "layers.1.blocks.0.attn.attention_biases": (4, 49),
    "layers.1.blocks.0.attn.qkv.weight": (384, 128),
    "layers.1.blocks.0.attn.proj.weight": (128, 128),
    "layers.1.blocks.0.attn.norm.weight": (128,),
    "layers.1.blocks.0.mlp.norm.bias": (128,),
    "layers.1.blocks.0.mlp.fc1.weight": (512, 128),
    "layers.1.blocks.0.local_conv.c.weight": (128, 1, 3, 3),
    "layers.2.blocks.5.attn.attention_biases": (5, 196),
    "layers.2.downsample.conv2.c.weight": (320, 1, 3, 3),
    "layers.3.blocks.1.attn.qkv.weight": (960, 320),
    "layers.3.blocks.1.mlp.fc2.weight": (320, 1280),
    "norm_head.weight": (320,),
    "head.weight": (1000, 320),
    "neck.0.weight": (256, 320, 1, 1),
    "neck.1.weight": (256,),
    "neck.2.weight": (256, 256, 3, 3),
    "neck.3.bias": (256,),
}


def test_mobile_sam_encoder_has_the_official_key_layout():
    state = TinyViTEncoder().state_dict()
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("attention_bias_idxs" in k for k in state)  # not persistent
    assert "layers.3.downsample.conv1.c.weight" not in state  # the last stage has none
    blocks = {
        k.split(".blocks.")[0] + "." + k.split(".blocks.")[1].split(".")[0]
        for k in state
        if ".blocks." in k
    }
    assert len(blocks) == 2 + 2 + 6 + 2
    # 1,024 px in, SAM's 256 x 64 x 64 embedding out (the last merge keeps the size).
    params = sum(p.numel() for n, p in TinyViTEncoder().named_parameters() if "head" not in n)
    assert 5.5e6 < params < 6.0e6  # MobileSAM: a 5.78M-parameter image encoder


def test_offset_index_numbers_offsets_in_order_of_first_appearance():
    n, index = offset_index(2)
    assert n == 4
    # positions (0,0) (0,1) (1,0) (1,1); offset (|dy|, |dx|) -> 0:(0,0) 1:(0,1) 2:(1,0) 3:(1,1)
    expected = [[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]]
    assert index.tolist() == expected
    assert offset_index(7)[0] == 49 and offset_index(14)[0] == 196


def test_window_attention_is_attention_with_the_learnt_bias():
    torch.manual_seed(0)
    attn = WindowAttention(24, 3, 4).eval()
    torch.nn.init.normal_(attn.attention_biases, std=1.0)
    x = torch.randn(5, 16, 24)
    with torch.no_grad():
        b, n, c = x.shape
        qkv = attn.qkv(attn.norm(x)).view(b, n, 3, 3 * 8)
        q, k, v = (qkv[..., i * 8 : (i + 1) * 8].transpose(1, 2) for i in range(3))
        bias = attn.attention_biases[:, attn.attention_bias_idxs]
        weights = ((q @ k.transpose(-1, -2)) * 8**-0.5 + bias).softmax(-1)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
        assert_close(attn(x), expected, terms=max(n, c))


def test_encoder_runs_channels_last_with_the_numbers_of_nchw():
    """The encoder runs its maps channels last (faster depthwise convolutions on a CPU):
    the convolutions see channels-last maps, and the embedding is the one the same
    modules give on plain NCHW maps (folded batch norms with their statistics set)."""
    torch.manual_seed(0)
    encoder = TinyViTEncoder(
        img_size=256,
        dims=(8, 16, 16, 24),
        depths=(1, 1, 2, 1),
        heads=(1, 2, 2, 3),
        windows=(7, 7, 7, 7),
    ).eval()
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    depthwise = encoder.layers[0].blocks[0].conv2
    layouts = []
    depthwise.register_forward_pre_hook(
        lambda m, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        out = encoder(x)
        plain = encoder.patch_embed(x)  # NCHW all the way
        for layer in encoder.layers:
            plain = layer(plain)
        plain = encoder.neck(plain)
    assert layouts == [True, False]
    assert out.is_contiguous() and out.shape == (2, 256, 16, 16)
    assert_close(out, plain, terms=16 * 16, depth=4)  # the encoder's blocks and neck


def test_tiny_mobile_sam_loads_from_its_file(tmp_path):
    path = write_tiny_mobile_sam(tmp_path / "mobile_sam.pt")
    state = read_state_dict(path)
    assert "image_encoder.patch_embed.seq.0.c.weight" in state
    model, config = load_sam(path)
    assert config.encoder == "tinyvit" and config.img_size == 1024
    assert config.tinyvit == TINY_MOBILE_SAM.tinyvit
    assert config.as_dict()["tinyvit"]["dims"] == [8, 16, 16, 24]
    reference = build_sam(TINY_MOBILE_SAM)
    reference.load_state_dict(state)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        out = model.image_encoder(x)
        assert out.shape == (1, 32, 64, 64)
        assert_close(out, reference.eval().image_encoder(x), terms=64 * 64, depth=4)


def test_truncated_mobile_sam_is_a_clear_error(tmp_path):
    state = read_state_dict(write_tiny_mobile_sam(tmp_path / "m.pt"))
    state.pop("image_encoder.layers.1.blocks.0.attn.qkv.weight")
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="MobileSAM"):
        load_sam(tmp_path / "broken.pt")


def test_mobile_sam_is_offered_by_name(capsys, tmp_path, monkeypatch):
    from napari_slip.cli import main

    w = SAM_MODELS["vit_t"]
    assert w.url.startswith("https://github.com/ChaoningZhang/MobileSAM/")
    assert w.filename == "mobile_sam.pt" and w.sha256 is None  # none published
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "vit_t" in out and w.url in out and "no published checksum" in out
    assert "sha256 ec2df62732614e57" in out  # vit_b's, published by its authors
