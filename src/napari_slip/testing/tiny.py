"""Tiny random models and synthetic images for tests, docs and offline trials.

Real weights cannot always be downloaded (CI, air-gapped machines). These helpers
write small randomly initialised SAM and CLIP checkpoints in the real file formats, so
the whole pipeline can run and be checked through the real loaders. Their selections
are meaningless: use them to test plumbing, never to judge quality.
"""

from __future__ import annotations

import copy
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
#: A tiny MobileSAM: TinyViT encoder (4 stages, MobileSAM's key layout) at 1,024 px.
TINY_MOBILE_SAM = SamConfig(
    img_size=1024,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
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
    import torch

    from ..core.models.sam import build_sam

    torch.manual_seed(seed)
    model = build_sam(TINY_MOBILE_SAM)
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
