"""The napari-slip engine: no Qt or napari import anywhere below this package."""

from .._compat import preload_triton
from .clip import ClipModel, load_clip_checkpoint, read_clip_metadata, save_clip_checkpoint
from .crops import CropParams, make_crops
from .download import cache_dir, checkpoint_dir, download
from .errors import (
    Cancelled,
    CheckpointError,
    ChecksumError,
    InputError,
    SlipError,
    WeightsUnavailableError,
)
from .images import PreparedImage, prepare_image
from .models import (
    CLIP_PRETRAINED,
    DEFAULT_CLIP,
    DEFAULT_SAM,
    SAM_MODELS,
    available_devices,
    find_clip_checkpoints,
    list_models,
    load_clip_model,
    load_sam_model,
)
from .progress import Progress, drain
from .proposals import Proposals, SamProposalParams, proposals_from_labels
from .results import SegmentationResult
from .sam import SamConfig, build_sam, load_sam
from .segmenter import Segmenter, segment
from .selection import MODES, Selection, select

# Before anything imports torchvision (all such imports are lazy): see napari_slip._compat.
preload_triton()

__all__ = [
    "CLIP_PRETRAINED",
    "DEFAULT_CLIP",
    "DEFAULT_SAM",
    "MODES",
    "SAM_MODELS",
    "Cancelled",
    "CheckpointError",
    "ChecksumError",
    "ClipModel",
    "CropParams",
    "InputError",
    "PreparedImage",
    "Progress",
    "Proposals",
    "SamConfig",
    "SamProposalParams",
    "SegmentationResult",
    "Segmenter",
    "Selection",
    "SlipError",
    "WeightsUnavailableError",
    "available_devices",
    "build_sam",
    "cache_dir",
    "checkpoint_dir",
    "download",
    "drain",
    "find_clip_checkpoints",
    "list_models",
    "load_clip_checkpoint",
    "load_clip_model",
    "load_sam",
    "load_sam_model",
    "make_crops",
    "prepare_image",
    "proposals_from_labels",
    "read_clip_metadata",
    "save_clip_checkpoint",
    "segment",
    "select",
]
