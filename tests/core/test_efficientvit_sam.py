"""EfficientViT-SAM (EfficientViT image encoder): the official layout against the
published sizes, loading from files, linear attention against its formula, the
512 px preprocessing, and the whole pipeline on a tiny random instance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from napari_slip.core.errors import CheckpointError
from napari_slip.core.models.efficientvit import (
    PUBLISHED,
    ConvLayer,
    EfficientViTSamEncoder,
    LiteMLA,
    efficientvit_config_from_state_dict,
)
from napari_slip.core.models.promptable import PromptableSam
from napari_slip.core.models.registry import SAM_MODELS
from napari_slip.core.models.sam import SamConfig, build_sam, load_sam, read_state_dict
from napari_slip.testing.tiny import (
    TINY_EFFICIENTVIT_SAM,
    TINY_EFFICIENTVIT_XL_SAM,
    write_tiny_efficientvit_sam,
    write_tiny_mobile_sam,
)

from ..floats import assert_close

# The authors' table: parameters of each whole model (encoder, prompt encoder, decoder).
PUBLISHED_PARAMS_M = {"l0": 34.8, "l1": 47.7, "l2": 61.3, "xl0": 117.0, "xl1": 203.3}

# Shapes of EfficientViT-SAM-L0's encoder by the parameter names of EfficientViT's
# backbone.py, sam.py and nn/ops.py (ConvLayer: conv, norm; ResidualBlock: main).
L0_SHAPES = {
    "backbone.stages.0.op_list.0.conv.weight": (32, 3, 3, 3),
    "backbone.stages.0.op_list.0.norm.running_var": (32,),
    "backbone.stages.0.op_list.1.main.conv1.conv.weight": (32, 32, 3, 3),
    "backbone.stages.0.op_list.1.main.conv2.norm.weight": (32,),
    "backbone.stages.1.op_list.0.main.spatial_conv.conv.weight": (512, 32, 3, 3),
    "backbone.stages.1.op_list.0.main.point_conv.conv.weight": (64, 512, 1, 1),
    "backbone.stages.1.op_list.1.main.spatial_conv.conv.weight": (256, 64, 3, 3),
    "backbone.stages.2.op_list.0.main.point_conv.norm.bias": (128,),
    "backbone.stages.3.op_list.0.main.inverted_conv.conv.weight": (2048, 128, 1, 1),
    "backbone.stages.3.op_list.0.main.inverted_conv.conv.bias": (2048,),
    "backbone.stages.3.op_list.0.main.depth_conv.conv.weight": (2048, 1, 3, 3),
    "backbone.stages.3.op_list.4.main.point_conv.norm.weight": (256,),
    "backbone.stages.4.op_list.0.main.inverted_conv.conv.weight": (6144, 256, 1, 1),
    "backbone.stages.4.op_list.1.context_module.main.qkv.conv.weight": (1536, 512, 1, 1),
    "backbone.stages.4.op_list.1.context_module.main.aggreg.0.0.weight": (1536, 1, 5, 5),
    "backbone.stages.4.op_list.1.context_module.main.aggreg.0.1.weight": (1536, 32, 1, 1),
    "backbone.stages.4.op_list.1.context_module.main.proj.conv.weight": (512, 1024, 1, 1),
    "backbone.stages.4.op_list.4.context_module.main.proj.norm.weight": (512,),
    "backbone.stages.4.op_list.4.local_module.main.inverted_conv.conv.weight": (3072, 512, 1, 1),
    "backbone.stages.4.op_list.4.local_module.main.depth_conv.conv.bias": (3072,),
    "backbone.stages.4.op_list.4.local_module.main.point_conv.norm.weight": (512,),
    "neck.input_ops.0.op_list.0.conv.weight": (256, 512, 1, 1),
    "neck.input_ops.1.op_list.0.conv.weight": (256, 256, 1, 1),
    "neck.input_ops.2.op_list.0.norm.running_mean": (256,),
    "neck.middle.op_list.3.main.spatial_conv.conv.weight": (256, 256, 3, 3),
    "neck.middle.op_list.3.main.point_conv.norm.weight": (256,),
    "neck.output_ops.0.op_list.0.conv.weight": (256, 256, 1, 1),
    "neck.output_ops.0.op_list.0.conv.bias": (256,),
    "norm.weight": (256,),
    "norm.bias": (256,),
}
# Convolutions that EfficientViT builds without a norm (fewer_norm) have no norm keys.
L0_ABSENT = (
    "backbone.stages.3.op_list.0.main.inverted_conv.norm.weight",
    "backbone.stages.4.op_list.1.context_module.main.qkv.norm.weight",
    "backbone.stages.4.op_list.1.context_module.main.qkv.conv.bias",
    "backbone.stages.1.op_list.0.main.spatial_conv.conv.bias",
    "neck.output_ops.0.op_list.0.norm.weight",
)


def test_l0_encoder_has_the_official_key_layout():
    with torch.device("meta"):
        state = EfficientViTSamEncoder(PUBLISHED["l0"]).state_dict()
    for key, shape in L0_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    for key in L0_ABSENT:
        assert key not in state, key


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_models_have_the_published_sizes(name):
    """Each published architecture, built here, has the parameter count its authors
    publish (to their rounding), and reads back from its own state dict."""
    config = SamConfig(encoder="efficientvit", efficientvit=PUBLISHED[name])
    with torch.device("meta"):
        sam = build_sam(config)
    params = sum(p.numel() for p in sam.parameters()) / 1e6
    assert abs(params - PUBLISHED_PARAMS_M[name]) < 0.051, params
    state = {f"image_encoder.{k}": v for k, v in sam.image_encoder.state_dict().items()}
    assert efficientvit_config_from_state_dict(state) == PUBLISHED[name]
    assert PUBLISHED[name]["input_size"] == (512 if name.startswith("l") else 1024)


def test_l0_costs_the_published_35_gmac():
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        encoder = EfficientViTSamEncoder(PUBLISHED["l0"])
        with FlopCounterMode(display=False) as counter:
            out = encoder(torch.empty(1, 3, 512, 512))
    assert tuple(out.shape) == (1, 256, 64, 64)
    assert 34.5e9 < counter.get_total_flops() / 2 < 35.5e9  # multiply-accumulates


def _attention_by_formula(qkv: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """ReLU linear attention written out: out_n = sum_m v_m (k_m . q_n) / sum_m k_m . q_n."""
    b, c, h, w = qkv.shape
    heads = qkv.view(b, c // (3 * dim), 3 * dim, h * w)
    q, k, v = heads[:, :, :dim].relu(), heads[:, :, dim : 2 * dim].relu(), heads[:, :, 2 * dim :]
    weights = torch.einsum("bhdm,bhdn->bhmn", k, q)  # (key m, query n)
    out = torch.einsum("bhdm,bhmn->bhdn", v, weights) / (weights.sum(2, keepdim=True) + eps)
    return out.reshape(b, -1, h, w)


@pytest.mark.parametrize("side", [6, 2])  # 36 pixels > dim 8: linear; 4 <= 8: quadratic
def test_lite_mla_is_relu_linear_attention(side):
    torch.manual_seed(0)
    mla = LiteMLA(16, dim=8, scales=(3,)).eval()
    qkv = torch.randn(2, 2 * 3 * 16, side, side)  # two scales of 2 heads of q, k, v
    with torch.no_grad():
        # Linear attention sums over every pixel (and the heads' 16 channels).
        terms = max(side * side, 16)
        assert_close(mla.attend(qkv), _attention_by_formula(qkv, 8, mla.eps), terms=terms)
        # And the whole module: qkv, multi-scale aggregation, attention, projection.
        x = torch.randn(1, 16, side, side)
        base = mla.qkv(x)
        multi = torch.cat([base, mla.aggreg[0](base)], dim=1)
        expected = mla.proj(_attention_by_formula(multi, 8, mla.eps))
        assert_close(mla(x), expected, terms=terms, depth=2)


def test_lite_mla_attends_in_float32_under_bf16_autocast():
    """As EfficientViT does: the normaliser sums over every pixel, so the attention's
    products stay float32 when the rest of the encoder runs in bf16."""
    torch.manual_seed(0)
    mla = LiteMLA(32, dim=8).eval()
    qkv = torch.randn(1, 2 * 3 * 32, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = mla.attend(qkv)
    assert out.dtype == torch.float32
    assert_close(out, _attention_by_formula(qkv, 8, mla.eps), terms=32 * 32)


@pytest.mark.parametrize("bias", [False, True])
def test_conv_layer_folds_its_batch_norm(bias):
    torch.manual_seed(0)
    layer = ConvLayer(4, 6, 3, 2, bias=bias, act=True).eval()
    layer.norm.running_mean.normal_()
    layer.norm.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(layer.norm.weight)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        expected = torch.nn.functional.gelu(layer.norm(layer.conv(x)), approximate="tanh")
        assert_close(layer(x), expected, terms=4 * 9)  # a 3 x 3 convolution of 4 channels


@pytest.mark.parametrize("config", [TINY_EFFICIENTVIT_SAM, TINY_EFFICIENTVIT_XL_SAM])
def test_tiny_efficientvit_sam_loads_from_its_file(tmp_path, config):
    path = write_tiny_efficientvit_sam(tmp_path / "efficientvit_sam.pt", config=config)
    state = read_state_dict(path)
    model, loaded = load_sam(path)
    assert loaded.encoder == "efficientvit" and loaded.img_size == 1024
    assert loaded.efficientvit == config.efficientvit
    assert loaded.as_dict()["efficientvit"]["neck_stages"] == config.efficientvit["neck_stages"]
    assert "embed_dim" not in loaded.as_dict()  # the ViT fields do not apply
    reference = build_sam(config)
    reference.load_state_dict(state)
    side = config.efficientvit["input_size"]
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        out = model.image_encoder(x)
        assert out.shape == (1, 32, 64, 64)
        assert_close(out, reference.eval().image_encoder(x), terms=64 * 64, depth=4)


def test_embedding_sees_the_image_at_512_px_as_efficientvit_sam_does(tmp_path):
    """The backbone gets the image resized to 512 px on its long side, normalised and
    zero-padded (EfficientViT-SAM's SamResize, ToTensor, Normalize, SamPad, written
    out here with PIL and numpy); prompts and masks stay in the 1,024 px frame."""
    model, _ = load_sam(write_tiny_efficientvit_sam(tmp_path / "e.pt"))
    sam = PromptableSam(model)
    assert (sam.input_size, sam.encoder_size) == (1024, 512)
    seen = []
    model.image_encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    rgb = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    embedding = sam.embed(rgb)

    small = np.asarray(Image.fromarray(rgb).resize((341, 512), Image.BILINEAR), np.float32)
    mean = np.array([123.675, 116.28, 103.53], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)
    expected = np.zeros((3, 512, 512), np.float32)
    expected[:, :512, :341] = ((small - mean) / std).transpose(2, 0, 1)
    assert seen[0].shape == (1, 3, 512, 512)
    assert_close(seen[0][0], expected, terms=1)  # one subtraction and division per pixel
    assert embedding.input_size == (1024, 683)  # SAM's frame, as its predictor sets it
    assert embedding.original_size == (300, 200)
    low, _ = sam.decode_points(embedding, np.array([[100.0, 150.0]]))
    assert sam.upscale(low[:, 0], embedding).shape == (1, 300, 200)


def test_truncated_efficientvit_sam_is_a_clear_error(tmp_path):
    state = read_state_dict(write_tiny_efficientvit_sam(tmp_path / "e.pt"))
    state.pop("image_encoder.neck.input_ops.0.op_list.0.conv.weight")
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="EfficientViT-SAM"):
        load_sam(tmp_path / "broken.pt")
    state = read_state_dict(write_tiny_efficientvit_sam(tmp_path / "e.pt"))
    state.pop("image_encoder.backbone.stages.4.op_list.2.local_module.main.point_conv.conv.weight")
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_sam(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("write", "encoder", "input_size"),
    [(write_tiny_efficientvit_sam, "efficientvit", 512), (write_tiny_mobile_sam, "tinyvit", 1024)],
)
def test_segment_with_a_light_sam(
    tmp_path, tiny_clip_path, fast_sam_params, write, encoder, input_size
):
    """EfficientViT-SAM and MobileSAM through the whole pipeline, from their files."""
    from napari_slip import segment
    from napari_slip.testing import blobs_image

    path = write(tmp_path / "light_sam.pt")
    image, _ = blobs_image()
    result = segment(
        image,
        "blob",
        sam=str(path),
        clip=str(tiny_clip_path),
        device="cpu",
        sam_params=fast_sam_params,
        mode="threshold",
        threshold=-1,
    )
    architecture = result.provenance["sam"]["architecture"]
    assert architecture["encoder"] == encoder
    assert architecture[encoder].get("input_size", 1024) == input_size
    # Random weights: plumbing only. Every candidate is kept and painted.
    assert result.n_objects >= 1
    assert np.unique(result.labels).tolist() == list(range(result.n_objects + 1))


def test_efficientvit_sam_is_offered_by_name(capsys, tmp_path, monkeypatch):
    from napari_slip.cli import main

    for size in ("l0", "l1", "l2", "xl0", "xl1"):
        w = SAM_MODELS[f"efficientvit_{size}"]
        assert w.url == (
            "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"
            f"efficientvit_sam_{size}.pt"
        )
        assert w.sha256 is None  # none published
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "efficientvit_l0" in out and SAM_MODELS["efficientvit_l0"].url in out
    assert out.startswith("CPU: ") and "precision 'auto' on the CPU gives" in out
