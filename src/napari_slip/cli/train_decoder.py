"""``napari-slip train-decoder``: a text-conditioned decoder trained on labelled images."""

from __future__ import annotations

import argparse
import sys

from ..core.params import DEFAULT_CLIP, DecoderParams
from ._args import _device_argument, add_arguments, from_args
from ._progress import _progress_printer


def add_parser(sub) -> None:
    td = sub.add_parser(
        "train-decoder",
        help="train a text-conditioned decoder on labelled images (a dataset folder)",
        description="Train a small decoder that reads a frozen CLIP and outputs the mask of "
        "what a text describes (seed 003, CLIPSeg's design). DATA is a dataset folder: "
        "images/, labels/ and classes.csv with columns image,label,class. Segment with "
        "--decoder and the same --clip.",
    )
    td.add_argument("data", help="dataset folder (images/, labels/, classes.csv)")
    td.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help=f"CLIP MODEL:TAG or checkpoint it reads (default {DEFAULT_CLIP})",
    )
    td.add_argument("-o", "--output", required=True, help="decoder to write (.safetensors)")
    td.add_argument("--overwrite", action="store_true", help="replace an existing decoder file")
    td.add_argument(
        "--paraphrases",
        metavar="CSV",
        help="extra phrases per class, a CSV with columns class,phrase (used as prompts "
        "while training)",
    )
    add_arguments(
        td,
        DecoderParams,
        only=[n for n in DecoderParams.names() if n != "augment"],
        types={"window": int},
    )
    td.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="do not also learn from mirrored views (default: they are learnt from too)",
    )
    _device_argument(td)
    td.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from ..core.io import Outputs
    from ..core.training.datasets import read_paraphrases
    from ..core.training.decoder import train_decoder

    Outputs({"decoder": args.output}, [args.data, args.clip], args.overwrite).check(
        {"decoder": "--output"}
    )
    params = from_args(DecoderParams, args)
    paraphrases = read_paraphrases(args.paraphrases) if args.paraphrases else None
    path = train_decoder(
        args.data,
        args.clip,
        args.output,
        params,
        paraphrases=paraphrases,
        device=args.device,
        progress=_progress_printer(args.quiet),
    )
    from ..core.models.decoder import load_decoder

    val = (load_decoder(path).metadata.get("metrics") or {}).get("val") or {}
    shown = f" (validation IoU {val['mean_iou']:.3f})" if val.get("mean_iou") is not None else ""
    print(f"napari-slip: Saved the decoder to {path}{shown}.", file=sys.stderr)
    return 0
