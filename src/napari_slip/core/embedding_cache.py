"""SAM image embeddings on disk, keyed by image content, so reopening an image is instant.

A vit_b/l/h embedding is 4 MB (256 x 64 x 64 floats). Files live in the cache folder's
``embeddings/`` and the oldest are removed past a size limit (1 GB by default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .download import cache_dir

DEFAULT_LIMIT = 1 << 30


def embedding_path(sam_sha256: str, precision: str, image_key: str) -> Path:
    return cache_dir() / "embeddings" / f"{sam_sha256[:16]}-{precision}-{image_key}.safetensors"


def save_embedding(path: Path, predictor, limit_bytes: int = DEFAULT_LIMIT) -> None:
    """Write a predictor's features atomically, then prune the folder to the limit."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "original_size": json.dumps(list(predictor.original_size)),
        "input_size": json.dumps(list(predictor.input_size)),
    }
    tmp = path.with_name(path.name + ".part")
    try:
        save_file(
            {"features": predictor.features.detach().float().cpu().contiguous()},
            str(tmp),
            metadata=meta,
        )
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return  # a full or read-only disk only costs the cache
    prune(path.parent, limit_bytes)


def load_embedding(path: Path, sam: torch.nn.Module):
    """A ``SamPredictor`` with features read from ``path``, or None if unusable."""
    from safetensors import safe_open
    from segment_anything import SamPredictor

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            features = fh.get_tensor("features")
            meta = fh.metadata()
        predictor = SamPredictor(sam)
        predictor.features = features.to(predictor.device)
        predictor.original_size = tuple(json.loads(meta["original_size"]))
        predictor.input_size = tuple(json.loads(meta["input_size"]))
        predictor.is_image_set = True
    except Exception:
        path.unlink(missing_ok=True)  # corrupt: recompute rather than fail
        return None
    os.utime(path)  # recently used files are pruned last
    return predictor


def prune(folder: Path, limit_bytes: int = DEFAULT_LIMIT) -> None:
    """Delete the least recently used embeddings until the folder is under the limit."""
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    for p in files:
        if total <= limit_bytes:
            break
        total -= p.stat().st_size
        p.unlink(missing_ok=True)
