"""``napari-slip learn``: a concept from a labelled folder (the fine-tuning format)."""

from __future__ import annotations

import argparse
import sys
import time

from ..core.params import DEFAULT_CLIP
from ._args import _device_argument
from ._progress import _progress_printer


def add_parser(sub) -> None:
    learn = sub.add_parser(
        "learn",
        help="learn a concept (classes shown by examples) from a labelled folder",
        description="Learn a concept from DATA, a dataset folder (images/, labels/ and "
        "classes.csv with columns image,label,class): every labelled object, or --shots K "
        "per class, becomes an example (its features, never its pixels). Use it with "
        "napari-slip segment/batch --concept, segment(image, concept) or in napari.",
    )
    learn.add_argument("data", help="dataset folder (images/, labels/, classes.csv)")
    learn.add_argument("-o", "--output", required=True, help="concept to write (.concept)")
    learn.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help=f"CLIP MODEL:TAG or checkpoint whose embeddings the concept holds "
        f"(default {DEFAULT_CLIP}); segment with the same CLIP",
    )
    learn.add_argument("--shots", type=int, metavar="K", help="only K objects per class")
    learn.add_argument("--seed", type=int, default=0, help="which K objects (default 0)")
    learn.add_argument(
        "--features",
        default="auto",
        help="feature groups: auto (chosen by leave-one-out on the examples), or a comma "
        "list of shape, intensity, texture, clip (default: auto)",
    )
    learn.add_argument(
        "--no-text",
        dest="text",
        action="store_false",
        help="examples alone (default: each class name is also a CLIP text, a prior that "
        "fades as examples come)",
    )
    learn.add_argument("--name", help="the concept's name (default: its classes)")
    learn.add_argument("--overwrite", action="store_true", help="replace an existing file")
    _device_argument(learn)
    learn.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.concepts.concept import check_features
    from ..core.errors import InputError
    from ..core.io import Outputs
    from ..core.pipeline.segmenter import Segmenter
    from ..core.runtime.generators import drain
    from ..core.training.concept_learning import iter_learn

    out = Path(args.output)
    if out.suffix != ".concept":
        raise InputError(f"--output must end in .concept, not {out.name!r}.")
    Outputs({"concept": out}, [args.data, args.clip], args.overwrite).check(
        {"concept": "--output"}
    )
    features = check_features(args.features)
    segmenter = Segmenter(clip=args.clip, device=args.device)
    start = time.perf_counter()
    learn = iter_learn(
        args.data,
        segmenter,
        shots=args.shots,
        seed=args.seed,
        features=features,
        text=args.text,
        name=args.name,
    )
    printer, skipped = _progress_printer(args.quiet), []

    def progress(event) -> None:
        if event.stage == "skipped":  # said even with --quiet: objects left out
            skipped.append(event.message)
        else:
            printer(event)

    concept = drain(learn, progress)
    for line in skipped:
        print(f"napari-slip: warning: {line}", file=sys.stderr)
    concept.save(out)
    print(
        f"napari-slip: Learnt {concept!r} in {time.perf_counter() - start:.1f} s "
        f"(features {'+'.join(concept.chosen_features())}); saved {out}.",
        file=sys.stderr,
    )
    return 0
