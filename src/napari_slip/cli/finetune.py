"""``napari-slip finetune``: teach CLIP your own classes."""

from __future__ import annotations

import argparse
import sys

from ..core.params import DEFAULT_CLIP, CropParams, FinetuneParams
from ._args import _device_argument, _parse_fill, add_arguments, from_args
from ._progress import _progress_printer


def add_parser(sub) -> None:
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
    ft.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing checkpoint (never the --base one)",
    )
    add_arguments(
        ft,
        FinetuneParams,
        only=(
            "epochs",
            "lr",
            "batch_size",
            "train",
            "last_blocks",
            "val_fraction",
            "patience",
            "template",
            "seed",
        ),
    )
    ft.add_argument(
        "--grid", action="store_true", help="try learning rates x trained parts and keep the best"
    )
    _device_argument(ft)
    add_arguments(ft, CropParams, types={"fill": _parse_fill})
    ft.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from ..core.io import Outputs
    from ..core.training.finetune import finetune

    Outputs({"checkpoint": args.output}, [args.data, args.base], args.overwrite).check(
        {"checkpoint": "--output"}
    )
    params = from_args(FinetuneParams, args)
    path = finetune(
        args.data,
        args.base,
        args.output,
        params,
        grid=args.grid,
        device=args.device,
        crop_params=from_args(CropParams, args),
        progress=_progress_printer(args.quiet),
    )
    print(f"napari-slip: Saved the fine-tuned CLIP to {path}.", file=sys.stderr)
    return 0
