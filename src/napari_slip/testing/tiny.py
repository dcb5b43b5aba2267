"""Tiny random models and synthetic images for tests, docs and offline trials.

Real weights cannot always be downloaded (CI, air-gapped machines). These helpers
write small randomly initialised SAM and CLIP checkpoints in the real file formats, so
the whole pipeline can run and be checked through the real loaders. Their selections
are meaningless: use them to test plumbing, never to judge quality.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import numpy as np

from ..core.models.sam import SamConfig

TINY_SAM = SamConfig(
    img_size=256,
    patch_size=16,
    embed_dim=32,
    depth=2,
    num_heads=2,
    window_size=4,
    global_attn_indexes=(1,),
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
)
#: TINY_SAM with SAM's real prompt-encoder and decoder width (256): its decoder folds the
#: image-side projections into the prompt's tokens as vit_b/l/h's does (TINY_SAM's 32
#: is too narrow for that to save work).
TINY_SAM_FULL_WIDTH = dataclasses.replace(TINY_SAM, prompt_embed_dim=256, iou_head_hidden_dim=256)
#: The prompt encoder and decoder of the tiny light SAMs, in SAM's 1,024 px frame.
_TINY_LIGHT = {
    "img_size": 1024,
    "prompt_embed_dim": 32,
    "decoder_mlp_dim": 64,
    "iou_head_hidden_dim": 32,
}
#: A tiny MobileSAM: TinyViT encoder (4 stages, MobileSAM's key layout) at 1,024 px.
TINY_MOBILE_SAM = SamConfig(
    **_TINY_LIGHT,
    encoder="tinyvit",
    tinyvit={
        "dims": (8, 16, 16, 24),
        "depths": (1, 1, 2, 1),
        "heads": (0, 2, 2, 3),
        "windows": (0, 7, 14, 7),
        "mlp_ratio": 2.0,
        "mbconv_ratio": 2.0,
        "num_classes": 10,
    },
)
_TINY_EFFICIENTVIT_L = {
    "blocks": ["res", "fmb", "fmb", "mb", "att"],
    "down_blocks": ["", "fmb", "fmb", "mb", "mb"],
    "widths": [8, 8, 16, 16, 32],
    "depths": [1, 1, 1, 1, 2],
    "expands": [1, 2, 2, 2, 2],
    "down_expands": [0, 4, 4, 4, 4],
    "fewer_norm": [False, False, False, True, True],
    "scales": [[], [], [], [], [5]],
    "qkv_dim": 8,
    "neck_stages": [4, 3, 2],
    "neck_width": 16,
    "neck_depth": 2,
    "neck_block": "fmb",
    "neck_expand": 1,
    "input_size": 512,
}
#: A tiny EfficientViT-SAM in the L models' layout: five stages, linear attention in
#: the last, a neck on stages 4, 3, 2; the backbone sees 512 px of SAM's 1,024.
TINY_EFFICIENTVIT_SAM = SamConfig(
    **_TINY_LIGHT,
    encoder="efficientvit",
    efficientvit=_TINY_EFFICIENTVIT_L,
)
#: ... and in the XL models' layout: six stages (no stage-0 blocks), attention with
#: 3x3 aggregation in the last two, a neck on stages 5, 4, 3; the backbone sees 1,024.
TINY_EFFICIENTVIT_XL_SAM = SamConfig(
    **_TINY_LIGHT,
    encoder="efficientvit",
    efficientvit={
        **_TINY_EFFICIENTVIT_L,
        "blocks": ["res", "fmb", "fmb", "fmb", "att", "att"],
        "down_blocks": ["", "fmb", "fmb", "fmb", "mb", "mb"],
        "widths": [8, 8, 16, 16, 32, 32],
        "depths": [0, 1, 1, 1, 1, 1],
        "expands": [1, 2, 2, 2, 2, 3],
        "down_expands": [0, 4, 4, 4, 4, 4],
        "fewer_norm": [False, False, False, False, True, True],
        "scales": [[], [], [], [], [3], [3]],
        "neck_stages": [5, 4, 3],
        "neck_expand": 2,
        "input_size": 1024,
    },
)
TINY_CLIP: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_sam(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random SAM (input size 256) as a ``.pth`` state dict."""
    import torch

    from ..core.models.sam import build_sam

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_sam(TINY_SAM).state_dict(), path)
    return path


def write_tiny_mobile_sam(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random MobileSAM (TinyViT encoder, input 1,024) as a ``.pth``."""
    return _write_light_sam(TINY_MOBILE_SAM, path, seed)


def write_tiny_efficientvit_sam(
    path: str | os.PathLike, seed: int = 0, config: SamConfig = TINY_EFFICIENTVIT_SAM
) -> Path:
    """Write a tiny random EfficientViT-SAM (by default in the L models' layout: the
    backbone at 512 px in SAM's 1,024 px frame) as a ``.pt``."""
    return _write_light_sam(config, path, seed)


def _write_light_sam(config: SamConfig, path: str | os.PathLike, seed: int) -> Path:
    import torch

    from ..core.models.sam import build_sam

    torch.manual_seed(seed)
    model = build_sam(config)
    for m in model.modules():  # batch norms with statistics, biases off zero
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if hasattr(m, "attention_biases"):
            torch.nn.init.normal_(m.attention_biases, std=0.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def write_tiny_clip(
    path: str | os.PathLike,
    seed: int = 0,
    metadata: dict | None = None,
    config: dict | None = None,
) -> Path:
    """Write a tiny random CLIP in napari-slip's checkpoint format."""
    import torch

    from ..core.models.clip import build_clip, save_clip_checkpoint

    config = copy.deepcopy(config or TINY_CLIP)
    torch.manual_seed(seed)
    meta = {"base_model": "tiny-random", "prompt_template": "a photo of {}."}
    meta.update(metadata or {})
    return save_clip_checkpoint(build_clip(config), config, path, meta)


def blobs_image(size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A grayscale uint16 image with four bright round objects, and its label image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    centres = [(24, 24, 10), (24, 70, 8), (70, 30, 12), (68, 72, 6)]
    for i, (cy, cx, r) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    image = (rng.normal(800, 40, (size, size)) + (labels > 0) * 3000).astype(np.uint16)
    return image, labels


#: A few words for the tiny BERT's vocabulary (WordPiece: whole words and pieces).
_TINY_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "of",
    "photo",
    "micrograph",
    "nucleus",
    "cell",
    "mitotic",
    "apoptotic",
    "body",
    "membrane",
    "blob",
    "the",
    "##s",
    "##ing",
    "star",
    "ring",
    ".",
]


def write_tiny_biomedclip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """BiomedCLIP's layout at a tiny width, random weights: a timm ViT/16 image tower
    (``vit_tiny_patch16_224``), a 2-layer Hugging Face BERT text tower with BiomedCLIP's
    MLP projection and CLS pooler, context 256, embedding 512, in the files its hub
    repository and its BERT's hold (``open_clip_config.json``,
    ``open_clip_pytorch_model.bin``, ``text/config.json``, ``text/vocab.txt``).
    Returns ``folder``."""
    import json

    import torch
    from transformers import BertConfig

    from ..core.models.clip import build_clip

    folder = Path(folder)
    text = folder / "text"
    text.mkdir(parents=True, exist_ok=True)
    (text / "vocab.txt").write_text("\n".join(_TINY_VOCAB) + "\n")
    BertConfig(
        vocab_size=len(_TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    ).to_json_file(str(text / "config.json"))
    model_cfg = {
        "embed_dim": 512,  # BiomedCLIP's own
        "vision_cfg": {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    local = json.loads(json.dumps(model_cfg))
    local["text_cfg"]["hf_model_name"] = local["text_cfg"]["hf_tokenizer_name"] = str(text)
    torch.manual_seed(seed)
    model = build_clip(local)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
