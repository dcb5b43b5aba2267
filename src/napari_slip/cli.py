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
import time
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .core.errors import SlipError


class _UsageError(Exception):
    """A command-line mistake, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the full usage is one ``--help`` away)."""

    def error(self, message: str):
        raise _UsageError(f"{message} (see {self.prog} --help)")


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


def _parse_fill(text: str) -> str | tuple[int, ...]:
    """``--fill``: a name or R,G,B, checked by CropParams."""
    from .core.params import CropParams

    fill: str | tuple[int, ...] = text
    if "," in text:
        try:
            fill = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"fill must be a name or R,G,B numbers, not {text!r}"
            ) from None
    try:
        return CropParams(fill=fill).fill
    except SlipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device_argument(parser) -> None:
    from .core.params import DEVICES

    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where models run (default: auto)"
    )


def _segment_options(seg, proposals_from: bool = True) -> None:
    """The options of ``segment`` that ``batch`` shares: selection, models, image,
    SAM, tiles, crops."""
    from .core.params import (
        DEFAULT_CLIP,
        DEFAULT_SAM,
        PRECISIONS,
        PROPOSALS,
        CropParams,
        GuidedParams,
        NormalisationParams,
        SamProposalParams,
        SelectionParams,
        TileParams,
        add_arguments,
        parse_phrases,
    )

    add_arguments(seg, SelectionParams, types={"distractors": parse_phrases})
    seg.add_argument(
        "--sam", default=DEFAULT_SAM, help=f"SAM name or checkpoint path (default {DEFAULT_SAM})"
    )
    seg.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help=f"CLIP MODEL:TAG or checkpoint path (default {DEFAULT_CLIP})",
    )
    seg.add_argument(
        "--proposals",
        choices=PROPOSALS if proposals_from else [p for p in PROPOSALS if p != "labels"],
        default=None,
        help="where candidates come from: SAM's grid"
        + (", a label image (--proposals-from)" if proposals_from else "")
        + ", the relevance map's regions (no SAM), or SAM at points the map places (fast) "
        "(default: sam" + (", or labels with --proposals-from)" if proposals_from else ")"),
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
    add_arguments(sam, SamProposalParams, types={"max_side": int})
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


def build_parser() -> argparse.ArgumentParser:
    from .core.params import (
        DEFAULT_CLIP,
        DEFAULT_SAM,
        CropParams,
        DecoderParams,
        FinetuneParams,
        SelectionParams,
        add_arguments,
    )

    parser = _Parser(
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
    seg.add_argument(
        "-o", "--output", required=True, help="label image to write (.tif, .png or .zarr)"
    )
    seg.add_argument("--table", help="per-object table to write (.csv)")
    seg.add_argument("--provenance", help="provenance to write (.json)")
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

    bat = sub.add_parser(
        "batch",
        help="segment every image of files, folders and globs (resumable; Dask)",
        description="Segment every image of INPUTS (files, folders searched recursively, "
        "globs; .tif, .png, .jpg, OME-TIFF, .zarr) into OUT_DIR: a label image per input "
        "at its relative name (.tif), objects.csv with an image column, and summary.json. "
        "Run it again to resume: inputs done with the same parameters are skipped.",
    )
    bat.add_argument("inputs", nargs="+", help="image files, folders or globs")
    bat.add_argument("--prompt", "-p", required=True, help="what to segment, e.g. 'nucleus'")
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
        "--overwrite",
        action="store_true",
        help="replace files in OUT_DIR that no earlier batch there wrote (a batch's own "
        "outputs are always updated; inputs are never replaced)",
    )
    _segment_options(bat, proposals_from=False)
    bat.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

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
    return parser


class StageProgress:
    """Progress on stderr: one bar per stage on a terminal, plain lines elsewhere.

    On a terminal the current stage's bar is redrawn in place with its rate and the
    time left; in a log file (not a terminal) each stage gets a line when it starts and
    one when it ends, never a line per batch.
    """

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.stage: str | None = None
        self.start = 0.0
        self.last = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _finish(self) -> None:
        if self.stage is None:
            return
        took = time.perf_counter() - self.start
        if self.tty:
            self._write("\n")
        else:
            self._write(f"napari-slip: {self.stage} done in {took:.1f} s\n")
        self.stage = None

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if event.stage != self.stage:
            self._finish()
            self.stage, self.start = event.stage, time.perf_counter()
            if not self.tty:
                what = f" ({event.message})" if event.message else ""
                self._write(f"napari-slip: {event.stage}{what}\n")
        self.last = event
        if self.tty:
            self._write("\r" + self.bar(event, time.perf_counter() - self.start) + "\033[K")

    @staticmethod
    def bar(event, elapsed: float, width: int = 24) -> str:
        """``stage [#####.....] done/total  rate/s  ETA``."""
        if not event.total:
            return f"{event.stage:<15} {event.message}"
        frac = min(max(event.done / event.total, 0.0), 1.0)
        filled = round(frac * width)
        rate = event.done / elapsed if elapsed > 0 else 0.0
        left = (event.total - event.done) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s left" if left == left else "--"
        return (
            f"{event.stage:<15} [{'#' * filled}{'.' * (width - filled)}] "
            f"{event.done}/{event.total}  {rate:.1f}/s  {eta}"
        )

    def close(self) -> None:
        self._finish()


def _progress_printer(quiet: bool) -> StageProgress:
    return StageProgress(quiet)


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
    from .core.io import Outputs, _write_labels_to, open_image, read_image
    from .core.params import (
        CropParams,
        GuidedParams,
        NormalisationParams,
        SamProposalParams,
        SelectionParams,
        TileParams,
        from_args,
    )
    from .core.pipeline.segmenter import Segmenter
    from .core.runtime.generators import drain

    out = Path(args.output)
    if out.suffix.lower() not in (".tif", ".tiff", ".png", ".zarr"):
        raise SlipError(f"--output must end in .tif, .png or .zarr, not {out.name!r}.")
    relevance_out = args.relevance_out
    if relevance_out and Path(relevance_out).suffix.lower() not in (".tif", ".tiff"):
        raise SlipError(f"--relevance-out must end in .tif, not {Path(relevance_out).name!r}.")
    outputs = Outputs(
        {
            "labels": out,
            "table": args.table,
            "provenance": args.provenance,
            "relevance": relevance_out,
        },
        inputs=[args.image, args.proposals_from, args.sam, args.clip, args.decoder],
        overwrite=args.overwrite,
    )
    # Before any model work: a run must not end in "cannot write" or destroy an input.
    outputs.check(
        {
            "labels": "--output",
            "table": "--table",
            "provenance": "--provenance",
            "relevance": "--relevance-out",
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
    tile_params = from_args(TileParams, args)
    # Tiled runs read the image region by region (tif and zarr), never whole.
    image = open_image(args.image, lazy=tile_params.tiles != "off")
    labels = read_image(args.proposals_from) if args.proposals_from else None
    progress = _progress_printer(args.quiet)
    segmenter = Segmenter(
        args.sam,
        args.clip,
        args.device,
        sam_params=from_args(SamProposalParams, args, max_side=args.max_side or None),
        crop_params=from_args(CropParams, args),
        tile_params=tile_params,
        templates=args.templates,
        background=args.background,
        download_progress=_download_printer(args.quiet),
        precision=args.precision,
        decoder=args.decoder,
        guided_params=from_args(GuidedParams, args),
    )
    norm = {
        k: v for k, v in vars(args).items() if k in NormalisationParams.names() and v is not None
    }
    selection = {
        "mode": args.mode,
        "threshold": args.threshold,
        "top_k": args.top_k,
        "distractors": args.distractors,
        "relevance_weight": args.relevance_weight,
    }
    # Refuse a bad prompt or selection before any model work.
    SelectionParams(**selection, background=args.background)
    if not args.prompt.strip():
        raise SlipError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
    if args.decoder:
        _ = segmenter.decoder  # the file and its CLIP are checked before any image work
    source = None
    if proposals in ("relevance", "guided"):
        segmenter.set_image(image, **norm)
        image, norm = None, {}
        source = segmenter.proposal_source(proposals, args.prompt)
    candidates = drain(segmenter.iter_candidates(image, source, labels=labels, **norm), progress)
    relevance = None
    if relevance_out or args.relevance_weight:
        relevance = drain(segmenter.iter_relevance(args.prompt), progress)
    progress.close()
    zarr_out = out.suffix.lower() == ".zarr"
    # A .zarr output is painted straight into its (staged) store: no full-size array.
    result = (
        None
        if zarr_out
        else segmenter.select(candidates, args.prompt, relevance=relevance, **selection)
    )
    state = {}

    def write_labels(tmp):
        if zarr_out:
            state["result"] = segmenter.select(
                candidates, args.prompt, labels_out=tmp, relevance=relevance, **selection
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
            "relevance": lambda tmp: _write_relevance(tmp, relevance),
        }
    )
    result = done()
    written = [str(p) for p in written]
    print(f"napari-slip: {_sentence(result)} Wrote {_and(written)}.", file=sys.stderr)
    return 0


def _write_relevance(path, relevance) -> None:
    import numpy as np
    import tifffile

    tifffile.imwrite(path, np.asarray(relevance, dtype=np.float32))


def run_batch(args: argparse.Namespace) -> int:
    from .core.batches import iter_batch, make_config
    from .core.params import (
        CropParams,
        GuidedParams,
        NormalisationParams,
        SamProposalParams,
        TileParams,
        from_args,
    )
    from .core.runtime.generators import drain

    norm = {
        k: v for k, v in vars(args).items() if k in NormalisationParams.names() and v is not None
    }
    config = make_config(
        args.prompt,
        args.sam,
        args.clip,
        args.device,
        mode=args.mode,
        threshold=args.threshold,
        top_k=args.top_k,
        distractors=args.distractors,
        background=args.background,
        relevance_weight=args.relevance_weight,
        sam_params=from_args(SamProposalParams, args, max_side=args.max_side or None),
        crop_params=from_args(CropParams, args),
        tile_params=from_args(TileParams, args),
        templates=args.templates,
        precision=args.precision,
        proposals=args.proposals,
        decoder=args.decoder,
        guided_params=from_args(GuidedParams, args),
        **norm,
    )
    progress = _progress_printer(args.quiet)
    gen = iter_batch(args.inputs, args.output, config, workers=args.workers,
                     scheduler=args.scheduler, overwrite=args.overwrite)  # fmt: skip
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


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(result) -> str:
    """The run's outcome as a sentence."""
    n = result.n_objects
    prompt = result.provenance.get("prompt", "")
    if n:
        return f"Found {n} object{'s' if n != 1 else ''} matching {prompt!r}."
    reason = result.message.split(": ", 1)[-1].rstrip(".")
    n_cand = len(result.candidate_table)
    best = (
        f" The best of {n_cand} candidates scored {result.candidate_table['score'].max():.3f}."
        if n_cand
        else ""
    )
    return f"Nothing found for {prompt!r}: {reason}.{best}"


def run_models(_args: argparse.Namespace) -> int:
    from .core.models.download import cache_dir
    from .core.models.registry import available_devices, list_models
    from .core.runtime.perf import describe_machine

    rows = list_models()
    print(describe_machine())
    print(f"devices: {', '.join(available_devices())}")
    print(f"cache folder: {cache_dir()}  (set NAPARI_SLIP_CACHE to move it)")
    width = max(len(r.name) for r in rows)
    for r in rows:
        state = "cached " if r.cached else "missing"
        print(f"{r.kind:<16} {r.name:<{width}}  {state}  {r.path}")
        if r.description:
            print(f"{'':<16} {'':<{width}}           {r.description}")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from .core.io import Outputs
    from .core.params import CropParams, FinetuneParams, from_args
    from .core.training.finetune import finetune

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


def run_train_decoder(args: argparse.Namespace) -> int:
    from .core.io import Outputs
    from .core.params import DecoderParams, from_args
    from .core.training.datasets import read_paraphrases
    from .core.training.decoder import train_decoder

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
    from .core.models.decoder import load_decoder

    val = (load_decoder(path).metadata.get("metrics") or {}).get("val") or {}
    shown = f" (validation IoU {val['mean_iou']:.3f})" if val.get("mean_iou") is not None else ""
    print(f"napari-slip: Saved the decoder to {path}{shown}.", file=sys.stderr)
    return 0


def run_evaluate_decoder(args: argparse.Namespace) -> int:
    from .core.models.decoder import load_decoder
    from .core.models.hub import default_hub
    from .core.models.registry import resolve_device
    from .core.training.datasets import read_dataset_folder
    from .core.training.decoder import evaluate_decoder, format_decoder_report

    if len(args.clip) != 1:
        raise SlipError("--decoder is evaluated with one --clip: the one it was trained on.")
    items = read_dataset_folder(args.data)
    device = resolve_device(args.device)
    clip = default_hub().clip(args.clip[0], device, "fp32", _download_printer(args.quiet))
    report = evaluate_decoder(clip, load_decoder(args.decoder, device), items)
    report = {"decoder": str(args.decoder), "clip": args.clip[0], **report}
    print(format_decoder_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from .core.training.evaluate import evaluate, format_report

    if args.decoder:
        return run_evaluate_decoder(args)

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
    "batch": run_batch,
    "models": run_models,
    "finetune": run_finetune,
    "train-decoder": run_train_decoder,
    "evaluate": run_evaluate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-slip`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"napari-slip: error: {exc}", file=sys.stderr)
        return 2
    from .core.runtime.perf import tune_allocator

    tune_allocator()  # opt-in, process-wide: the command line owns its process
    try:
        return COMMANDS[args.command](args)
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

    from .core.models.download import cache_dir

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


if __name__ == "__main__":
    sys.exit(main())
