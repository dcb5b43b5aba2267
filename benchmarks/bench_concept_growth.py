"""What a concept costs as its examples grow (run by hand, not a test): loading a
``.concept`` file and classifying 50 objects, and one click's concept work (the example
added, the objects classified again), at 10, 100, 1,000 and 8,000 examples.

    python benchmarks/bench_concept_growth.py [--json benchmarks/results/NAME.json]

Through the plain Python API as a notebook calls it (``Concept.load``,
``Concept.add``, ``Concept.classify``), with ``features="auto"`` (the default). The
examples are synthetic features (two classes told apart by one measurement, one
negative in four, 512-wide CLIP embeddings as ViT-B/32 gives): CLIP and SAM are not
involved, so what is measured is the concept's own work, the part that grows with its
examples. A click in the widget adds SAM's decode and CLIP's crop embedding to this
(see ``bench_edits.py``). Timings are the median of 5 repeats (clicks: of 20).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def grown(n: int, seed: int = 0):
    from napari_slip.core.concepts import Concept, ObjectFeatures
    from napari_slip.core.concepts.features import MEASUREMENTS

    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 3, n)  # one in four a negative
    labels[:4] = [0, 0, 1, 1]
    m = rng.normal(size=(n, len(MEASUREMENTS)))
    m[:, 0] += labels * 3
    clip = rng.normal(size=(n, 512)).astype(np.float32)
    feats = ObjectFeatures(m, clip / np.linalg.norm(clip, axis=1, keepdims=True))
    concept = Concept(["small", "large"], texts=False)
    concept.add(feats, [None if k < 0 else ["small", "large"][k % 2] for k in labels])
    return concept, feats


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--sizes", default="10,100,1000,8000")
    args = parser.parse_args()
    from napari_slip.core.concepts import Concept
    from napari_slip.core.runtime.perf import cpu_info

    cpu = dict(cpu_info())
    print(f"CPU: {cpu} ({platform.machine()}, python {platform.python_version()})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            concept, _ = grown(n)
            start = time.perf_counter()
            chosen = concept.chosen_features()
            choose = time.perf_counter() - start
            path = concept.save(Path(tmp) / f"c{n}.concept")
            _, objects = grown(50, seed=1)

            def load_and_classify(path=path, objects=objects):
                Concept.load(path).classify(objects)

            load = median_seconds(load_and_classify, 5)
            clicked, more = grown(n, seed=2)[0], grown(40, seed=3)[1]
            clicked.chosen_features()
            steps = iter(range(40))

            def click(clicked=clicked, more=more, objects=objects, steps=steps):
                i = next(steps)
                clicked.add(more.take([i]), "large")
                clicked.classify(objects)

            per_click = median_seconds(click, 20)
            row = {
                "examples": n,
                "chosen": list(chosen),
                "first_choice_s": round(choose, 4),
                "load_and_classify_50_s": round(load, 4),
                "click_s": round(per_click, 4),
            }
            rows.append(row)
            print(
                f"{n:>6} examples: first feature choice {choose * 1000:8.1f} ms, load + "
                f"classify 50 {load * 1000:7.1f} ms, a click {per_click * 1000:6.1f} ms "
                f"(chose {'+'.join(chosen)})"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2))
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
