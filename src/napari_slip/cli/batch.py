"""``napari-slip batch``: every image of files, folders and globs; resumable; Dask."""

from __future__ import annotations

import argparse
import sys

from ..core.batch_cluster import CONNECT_TIMEOUT, WORKER_TIMEOUT
from ._options import _segment_options, run_config
from ._progress import _progress_printer


def add_parser(sub) -> None:
    bat = sub.add_parser(
        "batch",
        help="segment every image of files, folders and globs (resumable; Dask)",
        description="Segment every image of INPUTS (files, folders searched recursively, "
        "globs; .tif, .png, .jpg, OME-TIFF, .zarr) into OUT_DIR: a label image per input "
        "at its relative name (.tif), objects.csv with an image column, and summary.json. "
        "Run it again to resume: inputs done with the same parameters are skipped.",
    )
    bat.add_argument("inputs", nargs="+", help="image files, folders or globs")
    bat.add_argument("--prompt", "-p", help="what to segment, e.g. 'nucleus' (or --concept)")
    bat.add_argument("-o", "--output", required=True, help="output folder")
    bat.add_argument(
        "--workers",
        type=int,
        help="worker processes of a local Dask cluster (default: one per 2 cores and 4 GB; "
        "1 runs in this process)",
    )
    bat.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask cluster, e.g. tcp://host:8786 (see docs/batch.md)",
    )
    bat.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="how long --scheduler has to answer (default: %(default)s)",
    )
    bat.add_argument(
        "--worker-timeout",
        type=float,
        default=WORKER_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the first worker of --scheduler, saying so every few "
        "seconds (default: %(default)s)",
    )
    bat.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in OUT_DIR that no earlier batch there wrote (a batch's own "
        "outputs are always updated; inputs are never replaced)",
    )
    _segment_options(bat, proposals_from=False)
    bat.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from ..core.batches import BatchConfig, iter_batch
    from ..core.runtime.generators import drain

    # Every check (models, combinations) once, before any image.
    config = BatchConfig.from_run(
        run_config(args, args.proposals or "sam"), axes=args.axes, pixel_size=args.pixel_size
    )
    progress = _progress_printer(args.quiet)
    gen = iter_batch(
        args.inputs,
        args.output,
        config,
        workers=args.workers,
        scheduler=args.scheduler,
        overwrite=args.overwrite,
        connect_timeout=args.connect_timeout,
        worker_timeout=args.worker_timeout,
    )
    try:
        summary = drain(gen, progress)
    except KeyboardInterrupt:
        gen.close()
        progress.close()
        print(
            "napari-slip: interrupted; images written so far are kept and a new run "
            "resumes after them.",
            file=sys.stderr,
        )
        return 130
    progress.close()
    for name, error in summary.failed.items():
        print(f"napari-slip: {name}: {error}", file=sys.stderr)
    print(
        f"napari-slip: {summary.sentence()} Wrote {summary.out_dir / 'objects.csv'} and "
        f"{summary.out_dir / 'summary.json'}.",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0
