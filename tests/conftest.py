"""Shared fixtures: tiny random SAM and CLIP models saved as real checkpoint files.

No test touches the network: weights are built in-process, written with the same
formats users have (SAM .pth state dicts, our CLIP safetensors), and loaded back
through the real loaders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_slip.core.clip import build_clip, save_clip_checkpoint
from napari_slip.core.sam import SamConfig, build_sam

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
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache folder."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_sam_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_sam.pth"
    torch.save(build_sam(TINY_SAM).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_clip.safetensors"
    save_clip_checkpoint(
        build_clip(TINY_CLIP),
        TINY_CLIP,
        path,
        {"base_model": "tiny-random", "prompt_template": "a photo of {}."},
    )
    return path


@pytest.fixture
def fast_sam_params():
    """A sparse grid with SAM's quality filters off, so random weights yield masks."""
    from napari_slip.core.proposals import SamProposalParams

    return SamProposalParams(
        points_per_side=4,
        points_per_batch=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area=20,
    )


def blobs_image(size: int = 96, seed: int = 0):
    """A grayscale uint16 image with four bright objects, and its label image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), dtype=np.int32)
    centres = [(24, 24, 10), (24, 70, 8), (70, 30, 12), (68, 72, 6)]
    for i, (cy, cx, r) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    image = (rng.normal(800, 40, (size, size)) + (labels > 0) * 3000).astype(np.uint16)
    return image, labels
