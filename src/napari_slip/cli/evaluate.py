"""``napari-slip evaluate``: compare CLIPs (or a decoder) on a labelled dataset folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.errors import SlipError
from ..core.params import DEFAULT_SAM, SelectionParams
from ._args import _device_argument, add_arguments
from ._progress import _download_printer, _progress_printer


def add_parser(sub) -> None:
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
    ev.add_argument(
        "--proposals",
        choices=("labels", "sam"),
        default="labels",
        help="candidates: the labelled objects (judges CLIP alone) or SAM's masks (the "
        "whole pipeline) (default: %(default)s)",
    )
    ev.add_argument(
        "--sam", default=DEFAULT_SAM, help="SAM for --proposals sam (default: %(default)s)"
    )
    add_arguments(ev, SelectionParams, only=("mode", "threshold", "top_k"))
    ev.add_argument(
        "--template",
        action="append",
        dest="templates",
        help="prompt template with {} (repeatable; default: the checkpoint's own)",
    )
    ev.add_argument(
        "--decoder",
        metavar="PATH",
        help="report IoU and Dice of this trained decoder's masks (its map above 0.5) per "
        "class instead, with the one --clip it was trained on",
    )
    ev.add_argument("--json", help="write the report as JSON, keyed by CLIP")
    _device_argument(ev)
    ev.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _outputs(args: argparse.Namespace):
    """The --json report: checked before any work (not a folder, not an input; an
    existing one is replaced, as a report is), written atomically."""
    from ..core.io import Outputs

    inputs = [args.data, *args.clip, args.decoder, args.sam]
    outputs = Outputs({"json": args.json}, inputs, overwrite=True)
    outputs.check({"json": "--json"})
    return outputs


def run_evaluate_decoder(args: argparse.Namespace) -> int:
    from ..core.models.decoder import load_decoder
    from ..core.models.hub import default_hub
    from ..core.models.registry import resolve_device
    from ..core.training.datasets import read_dataset_folder
    from ..core.training.decoder import evaluate_decoder, format_decoder_report

    if args.json:
        _outputs(args)  # before any work
    if len(args.clip) != 1:
        raise SlipError("--decoder is evaluated with one --clip: the one it was trained on.")
    items = read_dataset_folder(args.data)
    device = resolve_device(args.device)
    clip = default_hub().clip(args.clip[0], device, "fp32", _download_printer(args.quiet))
    report = evaluate_decoder(clip, load_decoder(args.decoder, device), items)
    report = {"decoder": str(args.decoder), "clip": args.clip[0], **report}
    print(format_decoder_report(report))
    if args.json:
        _outputs(args).write(
            {"json": lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2))}
        )
    return 0


def run(args: argparse.Namespace) -> int:
    from ..core.training.evaluate import evaluate, format_report

    if args.decoder:
        return run_evaluate_decoder(args)
    if args.json:
        _outputs(args)  # before any work

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
        _outputs(args).write(
            {"json": lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2))}
        )
    return 0
