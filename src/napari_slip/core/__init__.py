"""The napari-slip engine: no Qt or napari import anywhere below this package.

The package is grouped by role:

- ``models/``: weights registry and downloads, SAM and CLIP loaders, the promptable
  SAM interface, and the process-wide :class:`ModelHub`.
- ``pipeline/``: images, proposal sources, crops, scoring, selection, results, the
  per-image session and the :class:`Segmenter`.
- ``concepts/``: classes shown by examples, their features and few-shot classifier,
  ``.concept`` files.
- ``training/``: CLIP fine-tuning, the text-conditioned decoder's training, datasets,
  evaluation, the synthetic domain.
- ``runtime/``: progress events and generator helpers, precision and allocator
  tuning, the on-disk embedding cache.
- ``params``: the parameter dataclasses (defaults, choices, validation); ``errors``,
  ``io``.

Everything below is importable from here; names load lazily, so ``import
napari_slip.core`` does not import torch until a model or a pipeline step is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "batches": ("BatchConfig", "BatchSummary", "batch", "collect_inputs", "iter_batch"),
    "errors": (
        "Cancelled",
        "CheckpointError",
        "ChecksumError",
        "InputError",
        "SlipError",
        "WeightsUnavailableError",
    ),
    "params": (
        "DEFAULT_CLIP",
        "DEFAULT_SAM",
        "DEVICES",
        "MODES",
        "PRECISIONS",
        "PROPOSALS",
        "CropParams",
        "DecoderParams",
        "GuidedParams",
        "NormalisationParams",
        "SamProposalParams",
        "SelectionParams",
        "TileParams",
    ),
    "concepts": ("Concept", "ConceptQuery"),
    "edits": ("Edit", "LabelEditor", "NothingToDo", "edit"),
    "edits.more": ("Suggestion", "suggest"),
    "runtime.progress": ("Progress",),
    "runtime.generators": ("drain", "drain_cached"),
    "runtime.perf": ("tune_allocator",),
    "models.clip": (
        "ClipModel",
        "load_clip_checkpoint",
        "read_clip_metadata",
        "save_clip_checkpoint",
    ),
    "models.download": ("cache_dir", "checkpoint_dir", "download"),
    "models.sam": ("SamConfig", "build_sam", "load_sam"),
    "models.registry": (
        "CLIP_PRETRAINED",
        "SAM_MODELS",
        "available_devices",
        "load_clip_model",
        "load_sam_model",
    ),
    "models.hub": ("ModelHub", "default_hub"),
    "models.decoder": ("LoadedDecoder", "TextDecoder", "load_decoder"),
    "models.listing": ("find_clip_checkpoints", "find_decoders", "list_models"),
    "models.promptable": ("ImageEmbedding", "PromptableSam"),
    "pipeline.crops": ("make_crops",),
    "pipeline.images": ("LazyImage", "PreparedImage", "prepare_image"),
    "pipeline.proposals": ("Proposals", "proposals_from_labels"),
    "pipeline.sources": (
        "GuidedSource",
        "LabelSource",
        "ProposalSource",
        "RelevanceSource",
        "SamGridSource",
    ),
    "training.decoder": ("evaluate_decoder", "train_decoder"),
    "pipeline.tiles": ("TiledSamSource", "merge_tiles", "tile_grid"),
    "pipeline.session": ("Candidates",),
    "pipeline.results": ("SegmentationResult",),
    "pipeline.segmenter": ("Segmenter",),
    "pipeline.api": ("segment",),
    "pipeline.selection": ("Selection", "select"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
