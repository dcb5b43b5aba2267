"""``napari-slip segment``: one image, one prompt, a label image (and its table)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.errors import SlipError
from ._options import _segment_options, run_config
from ._progress import _and, _download_printer, _progress_printer, _sentence


def add_parser(sub) -> None:
    seg = sub.add_parser(
        "segment",
        help="segment one image from a text prompt",
        description="Segment what PROMPT describes in IMAGE and write a label image.",
    )
    seg.add_argument("image", help="image file (.tif, .png, .jpg)")
    seg.add_argument("--prompt", "-p", help="what to segment, e.g. 'nucleus' (or --concept)")
    seg.add_argument(
        "-o", "--output", required=True, help="label image to write (.tif, .png or .zarr)"
    )
    seg.add_argument("--table", help="per-object table to write (.csv)")
    seg.add_argument("--provenance", help="provenance to write (.json)")
    seg.add_argument(
        "--geojson",
        metavar="OUT.geojson",
        help="also write the objects' outlines for QuPath (GeoJSON polygons with their "
        "measurements and class)",
    )
    seg.add_argument(
        "--rois",
        metavar="OUT.zip",
        help="also write the objects' outlines as ImageJ ROIs (a .zip for Fiji's ROI Manager)",
    )
    seg.add_argument(
        "--relevance-out",
        metavar="MAP.tif",
        help="also write where the prompt matches: a float32 relevance map (.tif)",
    )
    seg.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (inputs are never overwritten)",
    )
    _segment_options(seg)
    seg.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from ..core.export import write_geojson, write_rois
    from ..core.io import (
        Outputs,
        _write_labels_to,
        open_image,
        read_image,
        write_stack_labels_to,
    )
    from ..core.pipeline.dispatch import ImageInputs, image_axes, iter_segment_image
    from ..core.pipeline.segmenter import Segmenter
    from ..core.runtime.generators import drain

    out = Path(args.output)
    if out.suffix.lower() not in (".tif", ".tiff", ".png", ".zarr"):
        raise SlipError(f"--output must end in .tif, .png or .zarr, not {out.name!r}.")
    relevance_out = args.relevance_out
    if relevance_out and Path(relevance_out).suffix.lower() not in (".tif", ".tiff"):
        raise SlipError(f"--relevance-out must end in .tif, not {Path(relevance_out).name!r}.")
    for flag, path, suffix in (
        ("--geojson", args.geojson, ".geojson"),
        ("--rois", args.rois, ".zip"),
    ):
        if path and Path(path).suffix.lower() != suffix:
            raise SlipError(f"{flag} must end in {suffix}, not {Path(path).name!r}.")
    outputs = Outputs(
        {
            "labels": out,
            "table": args.table,
            "provenance": args.provenance,
            "relevance": relevance_out,
            "geojson": args.geojson,
            "rois": args.rois,
        },
        inputs=[args.image, args.proposals_from, args.sam, args.clip, args.decoder, args.concept],
        overwrite=args.overwrite,
    )
    # Before any model work: a run must not end in "cannot write" or destroy an input.
    outputs.check(
        {
            "labels": "--output",
            "table": "--table",
            "provenance": "--provenance",
            "relevance": "--relevance-out",
            "geojson": "--geojson",
            "rois": "--rois",
        }
    )
    proposals = args.proposals or ("labels" if args.proposals_from else "sam")
    if proposals == "labels" and not args.proposals_from:
        raise SlipError("--proposals labels needs the label image: --proposals-from LABELS.")
    if proposals != "labels" and args.proposals_from:
        raise SlipError(
            f"--proposals-from gives label proposals; it cannot be combined with "
            f"--proposals {proposals}."
        )
    config = run_config(args, proposals)  # every option and combination, before any model
    # Tiled runs read the image region by region (tif and zarr), never whole.
    image = open_image(args.image, lazy=config.tile_params.tiles != "off")
    labels = read_image(args.proposals_from) if args.proposals_from else None
    # A stack's axes: given, or its file's; refused with the choices before any model.
    axes = image_axes(image, config, args.axes, args.pixel_size, args.image)
    stack = bool(axes.lead)
    if stack and out.suffix.lower() == ".png":
        raise SlipError("A stack's labels are written as .tif or .zarr, not .png.")
    progress = _progress_printer(args.quiet)
    models = config.models
    segmenter = Segmenter(
        models.sam,
        models.clip,
        models.device,
        precision=models.precision,
        download_progress=_download_printer(args.quiet),
    )
    run_models = segmenter.scope(config).models  # the run's: nothing set on the segmenter
    # Every model file first (all missing ones in one line), then the decoder's CLIP.
    drain(run_models.iter_resolve(config.needs_sam), progress)
    if models.decoder:  # the file and its CLIP are checked before any image work
        drain(run_models.iter_load("decoder"), progress)

    def segment(labels_out=None):
        inputs = ImageInputs(axes=axes, labels=labels, labels_out=labels_out)
        run = iter_segment_image(segmenter, image, config, inputs)
        result = drain(run, progress)
        progress.close()
        return result

    zarr_out = out.suffix.lower() == ".zarr" and not stack
    # A .zarr output is painted straight into its (staged) store: no full-size array.
    result = None if zarr_out else segment()
    state = {}

    def write_labels(tmp):
        if zarr_out:
            state["result"] = segment(labels_out=tmp)
        elif stack:
            write_stack_labels_to(
                tmp, result.labels, out.suffix.lower(), result.axes, result.scale, result.unit
            )
        elif _reordered(axes) and out.suffix.lower() in (".tif", ".tiff"):
            # The plane was read in another order (--axes XY): the labels are rows (Y)
            # by columns (X), and the file says so.
            write_stack_labels_to(
                tmp, result.labels, out.suffix.lower(), "YX", axes.scale, axes.unit
            )
        else:
            _write_labels_to(tmp, result.labels, out.suffix.lower())

    def done():
        return state.get("result", result)

    written = outputs.write(
        {
            "labels": write_labels,
            # Nothing found: the table lists the candidates and their scores instead.
            "table": lambda tmp: (done().table if done().found else done().candidate_table).to_csv(
                tmp, index=False
            ),
            "provenance": lambda tmp: Path(tmp).write_text(
                json.dumps(done().provenance, indent=2, default=str)
            ),
            "relevance": lambda tmp: _write_relevance(tmp, done().relevance),
            "geojson": lambda tmp: write_geojson(
                tmp, done().labels, done().table, _axes_of(done()), _name_of(done())
            ),
            "rois": lambda tmp: write_rois(tmp, done().labels, _axes_of(done())),
        }
    )
    result = done()
    written = [str(p) for p in written]
    print(f"napari-slip: {_sentence(result)} Wrote {_and(written)}.", file=sys.stderr)
    return 0


def _reordered(axes) -> bool:
    """Whether a plane's file order is not rows then columns (``--axes XY``)."""
    return "".join(a for a in axes.letters if a in "YX") != "YX"


def _axes_of(result) -> str:
    """A result's axes letters (a stack's; "" for one plane)."""
    return getattr(result, "axes", "") or ""


def _name_of(result) -> str:
    """What the objects are called in exported outlines: the prompt."""
    prompt = getattr(result, "prompt", "") or result.provenance.get("prompt")
    return str(prompt or "object")


def _write_relevance(path, relevance) -> None:
    import numpy as np
    import tifffile

    tifffile.imwrite(path, np.asarray(relevance, dtype=np.float32))
