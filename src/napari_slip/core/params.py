"""Parameter dataclasses: the one source of defaults, choices and help texts.

The engine's arguments, the command line's flags (``napari_slip.cli._args``) and the
widget's fields read their defaults, ranges and choices from these classes, so a
default lives in exactly one place. Each class validates itself on construction and
raises :class:`~napari_slip.core.errors.InputError` naming the bad value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .params_base import (
    _check_unit,
    _Params,
    check_options,
    option,
    parse_phrases,
)
from .params_training import LOSSES, TRAINABLE, DecoderParams, FinetuneParams
from .proposal_kinds import PROPOSALS

#: The models used when none is named (registry names: see ``napari-slip models``).
DEFAULT_SAM = "vit_b"
DEFAULT_CLIP = "ViT-B-32:laion2b_s34b_b79k"
#: Where models run. ``auto``: CUDA if available, else Apple's MPS, else the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Arithmetic of inference. ``auto``: bf16 on CPUs with native bf16, fp16 on CUDA.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
#: Selection modes (see :func:`napari_slip.core.pipeline.selection.select`).
MODES = ("best", "threshold", "distractors", "topk")
#: Named crop fills (``(r, g, b)`` tuples are allowed too).
FILLS = ("black", "white", "gray", "mean", "none")
#: Default cosine floor of ``threshold`` mode (CLIP cosines of matches are ~0.2-0.35).
DEFAULT_THRESHOLD = 0.25


#: What :meth:`SamProposalParams.exact` sets: SAM's own generator.
EXACT_SAM = {"skip_covered": False, "max_side": None, "input_side": None}


@dataclass(frozen=True)
class SamProposalParams(_Params):
    """Options of SAM's automatic mask generation (SAM's own names and defaults).

    ``SamProposalParams.exact()`` is SAM's own generator (every grid point, the image
    not shrunk first); the defaults differ from it only in ``max_side``.
    """

    points_per_side: int = option(
        32, "grid density: points per image side", bounds=(1, 256), label="Points/side"
    )
    #: None: on a CPU the batch ``precision="auto"`` measured for it (else 16), 64 on a GPU.
    points_per_batch: int | None = option(
        None, "points decoded together (default: measured on a CPU, else 16; 64 on a GPU)"
    )
    pred_iou_thresh: float = option(
        0.88, "drop masks whose predicted IoU is not above this", bounds=(0, 1), label="Min IoU"
    )
    stability_score_thresh: float = option(
        0.95, "drop masks less stable than this", bounds=(0, 1), label="Min stability"
    )
    stability_score_offset: float = option(1.0, "logit offset of the stability score")
    box_nms_thresh: float = option(0.7, "box IoU above which the weaker mask is dropped")
    min_area: int = option(
        0, "drop masks smaller than this many pixels", bounds=(0, 10**9), label="Min area (px)"
    )
    max_area_share: float = option(
        1.0,
        "drop masks covering more than this share of the image SAM sees (its whole-image "
        "and background masks; of a tile, when tiled)",
        bounds=(0.01, 1),
        label="Max area (share)",
        new=True,
    )
    skip_covered: bool = option(
        False,
        "skip grid points inside masks already found (faster; may miss nested objects)",
        label="Skip covered points",
    )
    max_side: int | None = option(
        2048, "SAM works on a copy at most this long; masks come back at full size (0: off)"
    )
    input_side: int | None = option(
        None,
        "the square SAM sees an image in, in pixels (a multiple of 16, at most the "
        "model's own; default: the model's own, 1,024 for SAM's): smaller is less work "
        "(512: a quarter per point) and shows SAM the objects smaller",
        new=True,
        label="SAM input side",
        presets=(768, 512, 384, 256),
    )

    @classmethod
    def exact(cls, **overrides) -> SamProposalParams:
        """SAM's automatic mask generator exactly: every grid point is decoded and the
        image is not shrunk first (SAM's encoder sees it at the model's input size).
        With ``precision="fp32"`` the masks are SAM's own."""
        return cls(**{**EXACT_SAM, **overrides})

    def __post_init__(self) -> None:
        if self.points_per_side < 1:
            raise InputError(f"points_per_side must be at least 1; got {self.points_per_side}.")
        if self.max_side is not None and self.max_side < 64:
            raise InputError(f"max_side must be at least 64 pixels; got {self.max_side}.")
        side = self.input_side
        if side is not None and (isinstance(side, bool) or not isinstance(side, int)):
            raise InputError(f"input_side must be a whole number of pixels; got {side!r}.")
        if side is not None and (side < 64 or side % 16):
            raise InputError(
                f"input_side must be a multiple of 16 pixels, at least 64; got {side}."
            )
        if self.points_per_batch is not None and self.points_per_batch < 1:
            raise InputError(f"points_per_batch must be at least 1; got {self.points_per_batch}.")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            _check_unit(name, getattr(self, name))
        if self.min_area < 0:
            raise InputError(f"min_area must not be negative; got {self.min_area}.")
        self._check_bounds()


#: When SAM works tile by tile: ``off`` (one pass over the image, shrunk above
#: ``max_side``), ``auto`` (tiles when the image is longer than ``max_side``), ``on``.
TILING = ("off", "auto", "on")


@dataclass(frozen=True)
class TileParams(_Params):
    """How a large image is cut into tiles for SAM (see :mod:`..pipeline.tiles`).

    Each tile is seen by SAM at full resolution. Neighbouring tiles share ``overlap``
    pixels; masks of two tiles that agree inside their shared band are one object,
    merged into one label. Make the overlap wider than the largest object, so that
    every object lies whole inside at least one tile.
    """

    tiles: str = option(
        "off",
        "SAM tile by tile at full resolution, for large images whose small objects vanish "
        "when shrunk: off, auto (above max-side) or on",
        TILING,
        label="Tiles",
    )
    tile_size: int | None = option(
        None, "tile side in pixels (default: SAM's own input size, 1024 for SAM)"
    )
    overlap: int = option(
        128,
        "pixels shared by neighbouring tiles (> the largest object; the default 128 is "
        "at most a quarter of the tile when the tile is SAM's own input size)",
        bounds=(0, 8192),
        label="Tile overlap (px)",
    )
    merge_iou: float = option(
        0.7, "masks of two tiles are one object when their IoU inside the shared band is above"
    )

    def __post_init__(self) -> None:
        if self.tiles not in TILING:
            raise InputError(f"tiles must be one of {', '.join(TILING)}; got {self.tiles!r}.")
        if self.tile_size is not None and self.tile_size < 64:
            raise InputError(f"tile_size must be at least 64 pixels; got {self.tile_size}.")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int):
            raise InputError(f"overlap must be a whole number of pixels; got {self.overlap!r}.")
        if self.overlap < 0:
            raise InputError(f"overlap must not be negative; got {self.overlap}.")
        if self.tile_size is not None and 2 * self.overlap >= self.tile_size:
            raise InputError(
                f"overlap ({self.overlap}) must be less than half the tile size "
                f"({self.tile_size})."
            )
        _check_unit("merge_iou", self.merge_iou)
        self._check_bounds()

    def overlap_for(self, size: int) -> int:
        """The overlap used with tiles of ``size`` px: the one given; the default at
        most a quarter of a tile of SAM's own input size (a 256 px SAM gets 64), so
        that the defaults hold for every SAM."""
        if self.tile_size is None and self.overlap == type(self).default("overlap"):
            return min(self.overlap, int(size) // 4)
        return self.overlap

    def checked_size(self, sam_input_size: int) -> int:
        """The tile side SAM works on (the given one, else SAM's input size), refused
        when the overlap is not under half of it. A run's config checks this before any
        model loads where SAM's size is known from its name; a SAM file's is known once
        loaded."""
        size = self.tile_size or int(sam_input_size)
        overlap = self.overlap_for(size)
        if 2 * overlap >= size:
            whose = "" if self.tile_size else ", SAM's input size"
            raise InputError(
                f"overlap ({overlap} px) must be less than half the tile ({size} px"
                f"{whose}): lower the overlap or raise the tile size."
            )
        return size

    @classmethod
    def choose(cls, params: TileParams | None = None, tiles: str | None = None) -> TileParams:
        """``params`` (default: the defaults) with its ``tiles`` mode set to ``tiles``
        where given: the ``tile_params=`` and ``tiles=`` arguments of the entry points."""
        params = params or cls()
        return params if tiles is None else cls(**{**params.as_dict(), "tiles": tiles})


@dataclass(frozen=True)
class CropParams(_Params):
    """How proposals become CLIP inputs.

    ``fill`` is the colour outside the mask: a name, ``"mean"`` (the image's mean
    colour), ``"none"`` (a plain box crop) or an ``(r, g, b)`` tuple of 0-255 values.
    ``margin`` is the context around the box, a fraction of the box's larger side.
    """

    fill: str | tuple[int, int, int] = option(
        "black", "colour outside the mask", FILLS, label="Crop fill"
    )
    margin: float = option(
        0.1,
        "context around the box, a fraction of its larger side",
        bounds=(0, 2),
        label="Crop margin",
    )

    def __post_init__(self) -> None:
        if isinstance(self.fill, str):
            if self.fill not in FILLS:
                raise InputError(
                    f"Unknown fill {self.fill!r}: use {', '.join(FILLS)} or (r, g, b)."
                )
        else:
            fill = tuple(int(v) for v in self.fill)
            if len(fill) != 3 or not all(0 <= v <= 255 for v in fill):
                raise InputError(f"fill must be three values 0-255; got {self.fill!r}.")
            object.__setattr__(self, "fill", fill)
        if not 0 <= self.margin <= 2:
            raise InputError(f"margin must be between 0 and 2; got {self.margin}.")
        self._check_bounds()


@dataclass(frozen=True)
class SelectionParams(_Params):
    """Which candidates are kept, given their similarity to the prompt."""

    mode: str = option("best", "how objects are chosen", MODES)
    threshold: float | None = option(
        None, "score floor; the cosine cut-off in threshold mode (default 0.25 there)"
    )
    top_k: int = option(3, "objects kept in topk mode")
    distractors: tuple[str, ...] = option((), "phrases that compete with the prompt")
    background: str = option("background", "the phrase every object competes with too")
    relevance_weight: float = option(
        0.0,
        "second opinion of the relevance map: a candidate's similarity gains this times "
        "its mean relevance (0-1) inside its mask",
        bounds=(0, 1),
    )

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(
                f"Unknown selection mode {self.mode!r}; use one of {', '.join(MODES)}."
            )
        object.__setattr__(self, "distractors", parse_phrases(self.distractors))
        if self.threshold is not None:
            try:
                value = float(self.threshold)
            except (TypeError, ValueError):
                raise InputError(f"threshold must be a number; got {self.threshold!r}.") from None
            if not math.isfinite(value) or not -1 <= value <= 1:
                raise InputError(
                    f"threshold must be between -1 and 1 (a cosine or a probability); "
                    f"got {self.threshold!r}."
                )
            object.__setattr__(self, "threshold", value)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise InputError(f"top_k must be a whole number of at least 1; got {self.top_k!r}.")
        if not isinstance(self.background, str):
            raise InputError(f"background must be a phrase; got {self.background!r}.")
        weight = self.relevance_weight
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not number or not 0 <= weight <= 1:
            raise InputError(f"relevance_weight must be between 0 and 1; got {weight!r}.")

    @property
    def floor(self) -> float | None:
        """The effective score floor (threshold mode has a default one)."""
        if self.mode == "threshold" and self.threshold is None:
            return DEFAULT_THRESHOLD
        return self.threshold


#: A Z-linked object is cut where its sections' signal falls below this share of the
#: humps on both sides (chosen by measurement: docs/stacks.md, "Dense stacks").
SPLIT_VALLEY = 0.7


@dataclass(frozen=True)
class StackParams(_Params):
    """How a stack's objects are made of its planes' objects (see
    :mod:`napari_slip.core.pipeline.linked`): linked across Z planes into 3D objects and
    across T frames into tracks, or kept plane by plane."""

    link: bool = option(True, "link objects across Z planes and T frames (False: per-plane ids)")
    min_overlap: float = option(
        0.5, "share of the smaller of two objects that must overlap to link them", bounds=(0.05, 1)
    )
    max_gap: int = option(
        1, "planes an object may be missed in and still be linked", bounds=(0, 5)
    )
    dedup_iou: float = option(
        0.8, "masks of one plane more alike than this IoU are one object", bounds=(0.3, 1)
    )
    split_valley: float = option(
        SPLIT_VALLEY,
        "cut a Z-linked object where its sections' signal dips below this share of the "
        "humps on both sides (objects stacked along Z; 0: never)",
        bounds=(0, 1),
    )
    grid_every: int = option(
        1,
        "SAM's full grid on every k-th plane along Z (else T); the planes between decode "
        "the previous plane's objects only (1: the full grid on every plane)",
        bounds=(1, 64),
        new=True,
    )

    def __post_init__(self) -> None:
        if not isinstance(self.link, bool):
            raise InputError(f"link must be True or False; got {self.link!r}.")
        for name in ("max_gap", "grid_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{name} must be a whole number; got {value!r}.")
        self._check_bounds()


@dataclass(frozen=True)
class NormalisationParams(_Params):
    """How an image's intensities become the 8-bit RGB the models see.

    See :func:`napari_slip.core.pipeline.images.prepare_image` for the meaning of each.
    """

    rgb: bool | None = option(None, "whether a trailing axis of 3 or 4 is colour")
    channel_axis: int | None = option(None, "channel axis of a multichannel image")
    channels: tuple[int, ...] | None = option(None, "up to three channels shown as R, G, B")
    contrast_limits: Any = option(None, "LOW,HIGH intensity range (default: percentiles)")  # noqa: RUF009
    percentiles: tuple[float, float] = option((1.0, 99.8), "percentiles used without limits")

    def kwargs(self) -> dict:
        """The options that differ from the defaults, as keyword arguments."""
        return {k: v for k, v in self.as_dict().items() if v != self.default(k)}


@dataclass(frozen=True)
class GuidedParams(_Params):
    """Options of the text-guided proposal modes (``proposals="relevance"`` and
    ``"guided"``).

    The relevance map (a trained decoder's probability, or without one CLIP's
    untrained map rescaled to 0-1 over the image) is thresholded at ``level``; each
    region above it is a candidate (``relevance``), or places SAM points: one at each
    region's peak and at local maxima, at most ``peaks``, plus a sparse
    ``safety_grid`` x ``safety_grid`` grid that catches what the map missed
    (``guided``).
    """

    level: float = option(0.5, "relevance (0-1) above which a pixel counts as matching")
    peaks: int = option(
        32, "at most this many SAM points placed on the relevance map", bounds=(0, 4096)
    )
    safety_grid: int = option(
        6, "a sparse grid of this many points per side is added (0: none)", bounds=(0, 256)
    )
    min_region: int = option(16, "regions of the map smaller than this many pixels are ignored")
    map: str = option(
        "naclip",
        "CLIP's training-free map (without a decoder): naclip (neighbourhood attention), "
        "clearclip, sclip, or maskclip (the value path)",
        ("naclip", "clearclip", "sclip", "maskclip"),
    )

    def __post_init__(self) -> None:
        if self.map not in self.choices("map"):
            raise InputError(
                f"Unknown relevance map {self.map!r}; use one of {', '.join(self.choices('map'))}."
            )
        _check_unit("level", self.level)
        if self.peaks < 0 or self.safety_grid < 0 or self.min_region < 0:
            raise InputError("peaks, safety_grid and min_region must not be negative.")
        if self.peaks == 0 and self.safety_grid == 0:
            raise InputError("Guided mode needs peaks or a safety grid: both are 0.")
        self._check_bounds()


__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_SAM",
    "DEFAULT_THRESHOLD",
    "DEVICES",
    "FILLS",
    "LOSSES",
    "MODES",
    "PRECISIONS",
    "PROPOSALS",
    "TILING",
    "TRAINABLE",
    "CropParams",
    "DecoderParams",
    "FinetuneParams",
    "GuidedParams",
    "NormalisationParams",
    "SamProposalParams",
    "SelectionParams",
    "StackParams",
    "TileParams",
    "check_options",
    "parse_phrases",
]
