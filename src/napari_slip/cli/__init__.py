"""``napari-slip``: the command line over the engine, one module per command.

napari-slip segment IMAGE --prompt TEXT -o LABELS.tif [options]
napari-slip batch INPUTS... --prompt TEXT -o OUT_DIR [options]
napari-slip models
napari-slip finetune DATA --base NAME_OR_PATH -o OUT.safetensors [options]
napari-slip train-decoder DATA --clip NAME_OR_PATH -o DECODER.safetensors [options]
napari-slip evaluate DATA --clip A [--clip B ...] [--json OUT.json]
napari-slip learn DATA -o NAME.concept --clip NAME_OR_PATH [--shots K] [--seed N]

Each command module has ``add_parser(sub)`` and ``run(args) -> exit code``; a new
command is a new module here and one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .._version import __version__
from ..core.errors import SlipError
from . import batch, evaluate, finetune, learn, models, segment, train_decoder
from ._args import _Parser, _UsageError
from ._progress import StageProgress

#: Command name -> its module.
COMMANDS = {
    "segment": segment,
    "batch": batch,
    "models": models,
    "finetune": finetune,
    "train-decoder": train_decoder,
    "evaluate": evaluate,
    "learn": learn,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = _Parser(
        prog="napari-slip",
        description="Segment objects from a text prompt: SAM proposes masks, CLIP picks.",
    )
    parser.add_argument("--version", action="version", version=f"napari-slip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-slip`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"napari-slip: error: {exc}", file=sys.stderr)
        return 2
    from ..core.runtime.perf import tune_allocator

    tune_allocator()  # opt-in, process-wide: the command line owns its process
    from ..core.models import autotune

    autotune.in_foreground()  # 'auto' is measured only when asked: models --measure
    try:
        return COMMANDS[args.command].run(args)
    except SlipError as exc:
        print(f"napari-slip: error: {exc.for_surface('cli')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-slip: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "napari-slip: error: out of memory; try a smaller --max-side, --tiles on, or "
            "fewer --points-per-batch.",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:  # a bug of ours: one line here, the traceback in the log
        log = _log_traceback(args.command)
        print(
            f"napari-slip: error: unexpected {type(exc).__name__}: {exc} (a bug: the "
            f"traceback is in {log}; please report it).",
            file=sys.stderr,
        )
        return 3


def _log_traceback(command: str) -> Path:
    """Append the current exception's traceback to the log in the cache folder."""
    import datetime
    import traceback

    from ..core.models.download import cache_dir

    try:
        log = cache_dir() / "napari-slip.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            f.write(f"--- {stamp} napari-slip {command} ({__version__})\n")
            f.write(traceback.format_exc())
        return log
    except OSError:
        traceback.print_exc()
        return Path("stderr above")


__all__ = ["COMMANDS", "StageProgress", "build_parser", "main"]
