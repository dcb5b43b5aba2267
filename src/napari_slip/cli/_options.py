"""The options ``segment`` and ``batch`` share, and the one run configuration they make."""

from __future__ import annotations

import argparse

from ..core.config import RunConfig
from ._args import (
    _device_argument,
    _parse_channels,
    _parse_fill,
    _parse_limits,
    _parse_pixel_size,
    add_arguments,
    from_args,
)


def _segment_options(seg, proposals_from: bool = True) -> None:
    """The options of ``segment`` that ``batch`` shares: selection, models, image,
    SAM, tiles, crops."""
    from ..core.params import (
        DEFAULT_CLIP,
        DEFAULT_SAM,
        PRECISIONS,
        CropParams,
        GuidedParams,
        NormalisationParams,
        SamProposalParams,
        SelectionParams,
        TileParams,
        parse_phrases,
    )
    from ..core.proposal_kinds import PROPOSAL_KINDS

    add_arguments(seg, SelectionParams, types={"distractors": parse_phrases})
    seg.add_argument(
        "--sam", default=DEFAULT_SAM, help=f"SAM name or checkpoint path (default {DEFAULT_SAM})"
    )
    seg.add_argument(
        "--clip",
        default=None,
        help=f"CLIP MODEL:TAG or checkpoint path (default {DEFAULT_CLIP}, or the CLIP a "
        "--concept was learnt with)",
    )
    offered = [k for k in PROPOSAL_KINDS.values() if proposals_from or not k.per_image]
    seg.add_argument(
        "--proposals",
        choices=[k.name for k in offered],
        default=None,
        help="where candidates come from: "
        + "; ".join(f"{k.name}: {k.help}" for k in offered).replace("labels=", "--proposals-from ")
        + " (default: sam"
        + (", or labels with --proposals-from)" if proposals_from else ")"),
    )
    if proposals_from:
        seg.add_argument(
            "--proposals-from",
            metavar="LABELS",
            help="label image whose labels are the proposals (no SAM)",
        )
    seg.add_argument(
        "--decoder",
        metavar="PATH",
        help="trained decoder (napari-slip train-decoder) whose map guides relevance, "
        "guided and --relevance-weight; it must match --clip",
    )
    guided = seg.add_argument_group("relevance and guided proposals")
    add_arguments(guided, GuidedParams)
    _device_argument(seg)
    seg.add_argument(
        "--template",
        action="append",
        dest="templates",
        help="prompt template with {} (repeatable; default 'a photo of {}.')",
    )
    img = seg.add_argument_group("image normalisation")
    add_arguments(
        img,
        NormalisationParams,
        only=("channel_axis", "channels", "contrast_limits"),
        types={"channels": _parse_channels, "contrast_limits": _parse_limits},
    )
    sam = seg.add_argument_group("SAM proposals")
    add_arguments(sam, SamProposalParams, types={"max_side": int, "input_side": int})
    tiles = seg.add_argument_group("tiles (large images)")
    add_arguments(tiles, TileParams, types={"tile_size": int})
    sam.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 on CPUs with native bf16, fp16 on CUDA; fp32: exact (default: auto)",
    )
    crops = seg.add_argument_group("crops")
    add_arguments(crops, CropParams, types={"fill": _parse_fill})
    concepts = seg.add_argument_group("concepts (classes shown by examples)")
    concepts.add_argument(
        "--concept",
        metavar="NAME.concept",
        help="find a concept (napari-slip learn, or 'Save concept...' in napari) instead of "
        "--prompt: a .concept file or the name of a saved one; each object gets its most "
        "probable class (table columns class, class_probability) or none",
    )
    concepts.add_argument(
        "--class",
        dest="concept_class",
        metavar="NAME",
        help="with --concept: keep objects of this class only",
    )
    stacks = seg.add_argument_group("stacks (z-stacks, time series)")
    stacks.add_argument(
        "--axes",
        metavar="AXES",
        help="the image's axes where its file does not record them (OME-TIFF, ImageJ "
        "TIFF and OME-Zarr do): ZYX, TYX, TZYX, CYX, ZCYX, TCZYX, YXS (T time, Z depth, "
        "C channels, S RGB samples)",
    )
    stacks.add_argument(
        "--pixel-size",
        metavar="Z=..,Y=..,X=..",
        type=_parse_pixel_size,
        help="pixel sizes in micrometres (default: the file's), for physical sizes in the table",
    )
    stacks.add_argument(
        "--per-plane",
        action="store_true",
        help="give each plane's objects their own ids (default: objects are linked "
        "across Z planes into 3D objects and across T frames into tracks)",
    )


def run_config(args: argparse.Namespace, proposals: str) -> RunConfig:
    """The run the arguments ask for, validated as a whole (before any model loads)."""
    from ..core.params import (
        CropParams,
        GuidedParams,
        NormalisationParams,
        SamProposalParams,
        SelectionParams,
        TileParams,
    )

    flat = {
        k: getattr(args, k)
        for k in (*SelectionParams.names(), *NormalisationParams.names())
        if getattr(args, k, None) is not None
    }
    prompt = prompt_of(args)
    if args.clip is None:  # a concept's own CLIP, where it can be had here
        from ..core.params import DEFAULT_CLIP

        args.clip = (None if isinstance(prompt, str) else prompt.clip_spec()) or DEFAULT_CLIP
    models = {k: getattr(args, k) for k in ("sam", "clip", "device", "precision", "decoder")}
    return RunConfig.build(
        prompt,
        "napari-slip",
        **models,
        **flat,
        proposals=proposals,
        templates=tuple(args.templates) if args.templates else None,
        sam_params=from_args(SamProposalParams, args, max_side=args.max_side or None),
        tile_params=from_args(TileParams, args),
        guided_params=from_args(GuidedParams, args),
        crop_params=from_args(CropParams, args),
        relevance=bool(getattr(args, "relevance_out", None)),
        link=not getattr(args, "per_plane", False),
        concept_class=args.concept_class,
    )


def prompt_of(args: argparse.Namespace):
    """``--prompt`` or the ``--concept`` (loaded and checked), exactly one of them."""
    from ..core.errors import InputError

    if args.concept and args.prompt is not None:
        raise InputError("Give --prompt or --concept, not both (a concept carries its texts).")
    if args.concept:
        from ..core.concepts.concept import resolve_concept

        return resolve_concept(args.concept)
    if args.prompt is None:
        raise InputError("Say what to find: --prompt TEXT, or --concept NAME.concept.")
    if args.concept_class:
        raise InputError("--class needs --concept.")
    return args.prompt
