"""Every kind of model file napari-slip knows, listed in one place.

``napari-slip models``, the widget's pickers and :func:`napari_slip.list_models` read
from here: SAM and CLIP registry names (:mod:`.registry`), fine-tuned CLIP checkpoints
(:mod:`.clip`) and trained decoders (:mod:`.decoder`) found in the checkpoint folder.
A new kind of model file is one reader in its own module and a few lines here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from .clip import read_clip_metadata
from .download import checkpoint_dir
from .registry import (
    CLIP_PRETRAINED,
    SAM_MODELS,
    clip_cache_target,
    clip_cached_file,
    sam_cache_path,
)


@dataclass(frozen=True)
class ModelEntry:
    """One row of :func:`list_models`."""

    kind: str  # "sam", "clip" or "clip-checkpoint"
    name: str
    cached: bool
    path: str
    description: str = ""


def find_checkpoints(
    read: Callable[[Path], dict], folders: list[str | os.PathLike] | None = None
) -> list[tuple[Path, dict]]:
    """``(path, read(path))`` of every ``.safetensors`` file in the checkpoint folder (and
    ``folders``) that ``read`` accepts; files it refuses (``CheckpointError``) are
    skipped silently."""
    found = []
    seen = set()
    for folder in [checkpoint_dir(), *(folders or [])]:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            if path.resolve() in seen:
                continue
            try:
                meta = read(path)
            except CheckpointError:
                continue
            seen.add(path.resolve())
            found.append((path, meta))
    return found


def find_clip_checkpoints(
    folders: list[str | os.PathLike] | None = None,
) -> list[tuple[Path, dict]]:
    """Our CLIP checkpoints in the checkpoint folder (and ``folders``), with metadata.

    Files that are not napari-slip checkpoints are skipped silently.
    """
    return find_checkpoints(read_clip_metadata, folders)


def describe_checkpoint(meta: dict) -> str:
    """A one-line summary of what a checkpoint was trained on."""
    parts = []
    if meta.get("base_model"):
        parts.append(f"from {meta['base_model']}")
    classes = meta.get("class_names")
    if isinstance(classes, list) and classes:
        shown = ", ".join(map(str, classes[:5])) + (" ..." if len(classes) > 5 else "")
        parts.append(f"classes: {shown}")
    if meta.get("date"):
        parts.append(str(meta["date"])[:10])
    return "; ".join(parts) or "fine-tuned CLIP"


def find_decoders(folders: list[str | os.PathLike] | None = None) -> list[tuple[Path, dict]]:
    """Trained decoders in the checkpoint folder (and ``folders``), with metadata."""
    from .decoder import read_decoder_metadata

    return find_checkpoints(read_decoder_metadata, folders)


def list_models(checkpoint_folders: list[str | os.PathLike] | None = None) -> list[ModelEntry]:
    """Every model napari-slip knows: SAM names, CLIP names, fine-tuned checkpoints and
    trained decoders."""
    rows = []
    for name, w in SAM_MODELS.items():
        path = sam_cache_path(name)
        checksum = (
            f"sha256 {w.sha256[:16]}..."
            if w.sha256
            else f"xxh128 {w.xxh128}"
            if w.xxh128
            else "no published checksum"
        )
        rows.append(
            ModelEntry(
                "sam",
                name,
                path.is_file(),
                str(path),
                f"{w.description}, {w.size_mb} MB; {w.url} ({checksum})",
            )
        )
    for spec in CLIP_PRETRAINED:
        cached = clip_cached_file(spec)
        url, target = clip_cache_target(spec)
        rows.append(
            ModelEntry(
                "clip",
                spec,
                cached is not None,
                str(cached or target),
                f"open_clip pretrained; {url} (or any local copy: --clip {spec}=PATH)",
            )
        )
    from .hubclip import HUB_CLIPS, hub_folder, missing_files

    for name, hub in HUB_CLIPS.items():
        files = hub.files(hub_folder(name))
        urls = ", ".join(u for u, _ in files)
        rows.append(
            ModelEntry(
                "clip",
                name,
                not missing_files(name),
                str(hub_folder(name)),
                f"{hub.description}; https://huggingface.co/{hub.repo} ({urls})",
            )
        )
    for path, meta in find_clip_checkpoints(checkpoint_folders):
        rows.append(
            ModelEntry("clip-checkpoint", path.stem, True, str(path), describe_checkpoint(meta))
        )
    from .decoder import describe_decoder

    for path, meta in find_decoders(checkpoint_folders):
        rows.append(ModelEntry("decoder", path.stem, True, str(path), describe_decoder(meta)))
    return rows


__all__ = [
    "ModelEntry",
    "describe_checkpoint",
    "find_checkpoints",
    "find_clip_checkpoints",
    "find_decoders",
    "list_models",
]
