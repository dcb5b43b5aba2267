"""SAM image embeddings on disk, keyed by image content, so reopening an image is instant.

A vit_b/l/h embedding is 4 MB (256 x 64 x 64 floats). Files live in the cache folder's
``embeddings/`` and the oldest are removed past a size limit (1 GB by default).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from ..models.download import cache_dir
from ..models.promptable import ImageEmbedding
from ..runtime.atomic import atomic_write
from ..runtime.json_files import parse_json

DEFAULT_LIMIT = 1 << 30


def embedding_path(sam_sha256: str, precision: str, image_key: str) -> Path:
    return cache_dir() / "embeddings" / f"{sam_sha256[:16]}-{precision}-{image_key}.safetensors"


def save_embedding(
    path: Path, embedding: ImageEmbedding, limit_bytes: int = DEFAULT_LIMIT
) -> None:
    """Write an embedding atomically (a temporary name unique to this writer), then prune."""
    from safetensors.torch import save_file

    meta = {
        "original_size": json.dumps(list(embedding.original_size)),
        "input_size": json.dumps(list(embedding.input_size)),
    }
    tensors = {"features": embedding.features.detach().float().cpu().contiguous()}
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    except OSError:
        return  # a full or read-only disk only costs the cache
    prune(path.parent, limit_bytes)


def load_embedding(path: Path, device: torch.device | str = "cpu") -> ImageEmbedding | None:
    """The embedding stored at ``path``, or None if it is missing or unreadable.

    An unreadable file is left alone (another process may be writing it under its
    final name only once complete, so a bad file is a stale one: it gets replaced by
    the next save).
    """
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            features = fh.get_tensor("features")
            meta = fh.metadata()
        embedding = ImageEmbedding(
            features=features.to(device),
            original_size=tuple(parse_json(meta["original_size"], kind=list)),
            input_size=tuple(parse_json(meta["input_size"], kind=list)),
        )
    except Exception:
        return None  # corrupt or foreign: recompute rather than fail
    with contextlib.suppress(OSError):  # recently used files are pruned last
        os.utime(path)
    return embedding


def prune(folder: Path, limit_bytes: int = DEFAULT_LIMIT) -> None:
    """Delete the least recently used embeddings until the folder is under the limit."""
    files = []
    for p in folder.glob("*.safetensors"):
        try:
            files.append((p.stat().st_mtime, p.stat().st_size, p))
        except OSError:  # removed by another process meanwhile
            continue
    files.sort()
    total = sum(size for _, size, _ in files)
    for _, size, p in files:
        if total <= limit_bytes:
            break
        total -= size
        p.unlink(missing_ok=True)
