"""``napari-slip``: the command line over the engine.

napari-slip segment IMAGE --prompt TEXT -o LABELS.tif [options]
napari-slip models
napari-slip finetune DATA --base NAME_OR_PATH -o OUT.safetensors [options]
napari-slip evaluate DATA --clip A [--clip B ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .core.errors import SlipError


def _parse_channels(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"channels must be comma-separated integers, not {text!r}"
        ) from None


def _parse_limits(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"contrast limits must be LOW,HIGH, not {text!r}"
        ) from None
    return low, high


def build_parser() -> argparse.ArgumentParser:
    from .core.models import DEFAULT_CLIP, DEFAULT_SAM
    from .core.selection import MODES

    parser = argparse.ArgumentParser(
        prog="napari-slip",
        description="Segment objects from a text prompt: SAM proposes masks, CLIP picks.",
    )
    parser.add_argument("--version", action="version", version=f"napari-slip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser(
        "segment",
        help="segment one image from a text prompt",
        description="Segment what PROMPT describes in IMAGE and write a label image.",
    )
    seg.add_argument("image", help="image file (.tif, .png, .jpg)")
    seg.add_argument("--prompt", "-p", required=True, help="what to segment, e.g. 'nucleus'")
    seg.add_argument("-o", "--output", required=True, help="label image to write (.tif or .png)")
    seg.add_argument("--table", help="per-object table to write (.csv)")
    seg.add_argument("--provenance", help="provenance to write (.json)")
    seg.add_argument(
        "--mode", choices=MODES, default="best", help="selection mode (default: best)"
    )
    seg.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="score floor; the cosine cut-off in threshold mode (default 0.25 there)",
    )
    seg.add_argument(
        "--distractors", default="", help="comma-separated phrases that compete with the prompt"
    )
    seg.add_argument(
        "--background", default="background", help="background phrase in distractors mode"
    )
    seg.add_argument("--top-k", type=int, default=3, help="objects kept in topk mode")
    seg.add_argument(
        "--sam", default=DEFAULT_SAM, help=f"SAM name or checkpoint path (default {DEFAULT_SAM})"
    )
    seg.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help=f"CLIP MODEL:TAG or checkpoint path (default {DEFAULT_CLIP})",
    )
    seg.add_argument(
        "--proposals-from",
        metavar="LABELS",
        help="label image whose labels are the proposals (no SAM)",
    )
    seg.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    seg.add_argument(
        "--template",
        action="append",
        dest="templates",
        help="prompt template with {} (repeatable; default 'a photo of {}.')",
    )
    img = seg.add_argument_group("image normalisation")
    img.add_argument("--channel-axis", type=int, help="channel axis of a multichannel image")
    img.add_argument(
        "--channels", type=_parse_channels, help="up to three channels shown as R,G,B, e.g. 0,2"
    )
    img.add_argument("--contrast-limits", type=_parse_limits, help="LOW,HIGH intensity range")
    sam = seg.add_argument_group("SAM proposals")
    sam.add_argument("--points-per-side", type=int, default=32)
    sam.add_argument(
        "--points-per-batch",
        type=int,
        default=None,
        help="points decoded together (default 16 on a CPU, 64 on a GPU)",
    )
    sam.add_argument("--pred-iou-thresh", type=float, default=0.88)
    sam.add_argument("--stability-score-thresh", type=float, default=0.95)
    sam.add_argument("--box-nms-thresh", type=float, default=0.7)
    sam.add_argument(
        "--min-area", type=int, default=0, help="drop masks smaller than this (pixels)"
    )
    sam.add_argument(
        "--skip-covered",
        action="store_true",
        help="skip grid points inside masks already found (faster; may miss nested objects)",
    )
    sam.add_argument(
        "--max-side",
        type=int,
        default=2048,
        help="SAM works on a copy at most this long (masks come back at full size); 0: off",
    )
    sam.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="auto: bf16 on CPUs with native bf16, fp16 on CUDA; fp32: exact",
    )
    crops = seg.add_argument_group("crops")
    crops.add_argument(
        "--fill", default="black", help="outside-mask fill: black, white, gray, mean, none"
    )
    crops.add_argument(
        "--margin", type=float, default=0.1, help="context margin, fraction of box size"
    )
    seg.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    sub.add_parser("models", help="list known models, whether each is cached, and where")

    ft = sub.add_parser(
        "finetune",
        help="fine-tune CLIP on your images (captions CSV or dataset folder)",
        description="Fine-tune CLIP on image-caption pairs (a CSV with columns image,caption) "
        "or a dataset folder (images/, labels/, classes.csv with columns image,label,class).",
    )
    ft.add_argument("data", help="captions .csv or dataset folder")
    ft.add_argument(
        "--base", default=DEFAULT_CLIP, help=f"CLIP to start from (default {DEFAULT_CLIP})"
    )
    ft.add_argument("-o", "--output", required=True, help="checkpoint to write (.safetensors)")
    ft.add_argument("--epochs", type=int, default=20)
    ft.add_argument("--lr", type=float, default=1e-5, help="learning rate (default 1e-5)")
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument(
        "--train",
        choices=("all", "last", "proj"),
        default="last",
        help="what to train: everything, the last blocks and projections "
        "(default), or the projections only (fastest on a CPU)",
    )
    ft.add_argument("--last-blocks", type=int, default=2, help="blocks per tower for --train last")
    ft.add_argument("--val-fraction", type=float, default=0.2, help="share of images held out")
    ft.add_argument("--patience", type=int, default=5, help="early stopping patience (epochs)")
    ft.add_argument("--template", default="a photo of {}.", help="how a class becomes text")
    ft.add_argument(
        "--grid", action="store_true", help="try learning rates x trained parts and keep the best"
    )
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    ft.add_argument("--fill", default="black", help="crop fill (as when segmenting)")
    ft.add_argument("--margin", type=float, default=0.1, help="crop margin (as when segmenting)")
    ft.add_argument("--quiet", "-q", action="store_true")

    ev = sub.add_parser(
        "evaluate",
        help="compare CLIPs on a dataset folder (hit rate, IoU, Dice, precision, recall)",
        description="For every (image, class present in it) query, segment the class name "
        "and compare the selection with the labelled objects of that class.",
    )
    ev.add_argument("data", help="dataset folder (images/, labels/, classes.csv)")
    ev.add_argument(
        "--clip",
        action="append",
        required=True,
        help="a CLIP to evaluate (repeat to compare several)",
    )
    ev.add_argument("--proposals", choices=("labels", "sam"), default="labels")
    ev.add_argument("--sam", default=DEFAULT_SAM, help="SAM for --proposals sam")
    ev.add_argument("--mode", choices=MODES, default="best")
    ev.add_argument("--threshold", type=float, default=None)
    ev.add_argument("--top-k", type=int, default=3)
    ev.add_argument("--template", action="append", dest="templates")
    ev.add_argument("--json", help="write the report as JSON, keyed by CLIP")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    ev.add_argument("--quiet", "-q", action="store_true")
    return parser


def _progress_printer(quiet: bool):
    def show(event) -> None:
        if not quiet:
            print(f"napari-slip {event}", file=sys.stderr, flush=True)

    return show


def _download_printer(quiet: bool):
    last = [-1]

    def show(done: int, total: int) -> None:
        if quiet:
            return
        pct = int(100 * done / total) if total else -1
        if pct != last[0] and (pct % 5 == 0 or pct < 0):
            last[0] = pct
            size = f"{done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else "")
            print(f"napari-slip [download] {size}", file=sys.stderr, flush=True)

    return show


def run_segment(args: argparse.Namespace) -> int:
    from .core.io import read_image, write_labels
    from .core.proposals import SamProposalParams
    from .core.segmenter import Segmenter

    out = Path(args.output)
    if out.suffix.lower() not in (".tif", ".tiff", ".png"):
        raise SlipError(f"--output must end in .tif or .png, not {out.name!r}.")
    image = read_image(args.image)
    labels = read_image(args.proposals_from) if args.proposals_from else None
    segmenter = Segmenter(
        args.sam,
        args.clip,
        args.device,
        sam_params=SamProposalParams(
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_score_thresh,
            box_nms_thresh=args.box_nms_thresh,
            min_area=args.min_area,
            skip_covered=args.skip_covered,
            max_side=args.max_side or None,
        ),
        crop_params=_crop_params(args),
        templates=args.templates,
        background=args.background,
        download_progress=_download_printer(args.quiet),
        precision=args.precision,
    )
    norm = {
        k: v
        for k, v in (
            ("channel_axis", args.channel_axis),
            ("channels", args.channels),
            ("contrast_limits", args.contrast_limits),
        )
        if v is not None
    }
    result = segmenter.segment(
        image,
        args.prompt,
        mode=args.mode,
        threshold=args.threshold,
        top_k=args.top_k,
        distractors=args.distractors,
        labels=labels,
        progress=_progress_printer(args.quiet),
        **norm,
    )
    write_labels(out, result.labels)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        result.table.to_csv(args.table, index=False)
    if args.provenance:
        Path(args.provenance).write_text(json.dumps(result.provenance, indent=2, default=str))
    print(f"napari-slip: {result.message}; wrote {out}", file=sys.stderr)
    return 0


def run_models(_args: argparse.Namespace) -> int:
    from .core.download import cache_dir
    from .core.models import list_models

    rows = list_models()
    print(f"cache folder: {cache_dir()}  (set NAPARI_SLIP_CACHE to move it)")
    width = max(len(r.name) for r in rows)
    for r in rows:
        state = "cached " if r.cached else "missing"
        print(f"{r.kind:<16} {r.name:<{width}}  {state}  {r.path}")
        if r.description:
            print(f"{'':<16} {'':<{width}}           {r.description}")
    return 0


def _crop_params(args: argparse.Namespace):
    """``--fill`` (a name or R,G,B) and ``--margin`` as CropParams."""
    from .core.crops import CropParams

    fill = args.fill
    if "," in fill:
        try:
            fill = tuple(int(v) for v in fill.split(","))
        except ValueError:
            raise SlipError(
                f"--fill must be a name or R,G,B numbers, not {args.fill!r}."
            ) from None
    return CropParams(fill=fill, margin=args.margin)


def run_finetune(args: argparse.Namespace) -> int:
    from .core.finetune import FinetuneParams, finetune

    params = FinetuneParams(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        train=args.train,
        last_blocks=args.last_blocks,
        val_fraction=args.val_fraction,
        patience=args.patience,
        template=args.template,
        seed=args.seed,
    )
    path = finetune(
        args.data,
        args.base,
        args.output,
        params,
        grid=args.grid,
        device=args.device,
        crop_params=_crop_params(args),
        progress=_progress_printer(args.quiet),
    )
    print(f"napari-slip: wrote {path}", file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .core.evaluate import evaluate, format_report

    report = evaluate(
        args.data,
        args.clip,
        proposals=args.proposals,
        sam=args.sam,
        device=args.device,
        mode=args.mode,
        threshold=args.threshold,
        top_k=args.top_k,
        templates=args.templates,
        progress=_progress_printer(args.quiet),
    )
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


COMMANDS = {
    "segment": run_segment,
    "models": run_models,
    "finetune": run_finetune,
    "evaluate": run_evaluate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-slip`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SlipError as exc:
        print(f"napari-slip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-slip: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
