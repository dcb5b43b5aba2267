"""Concepts, measured (run by hand, not a test): how well do a few examples classify
held-out objects where text and colour do not help, and how fast is learning?

    python benchmarks/bench_concepts.py [--seeds 5] [--json benchmarks/results/NAME.json]

Domains:

1. ``shapes-textures``: ``napari_slip.testing.concept_scenes`` (grayscale 16-bit,
   192 x 192 px, 8-14 objects of three classes, round / elongated-striped /
   spiky-speckled, random sizes and orientations, one overlapping intensity range for
   every class, blur, Poisson and Gaussian noise). Examples from 4 training images,
   accuracy on every object of 8 held-out images.
2. ``fine-tuning``: the fine-tuning format's synthetic domain
   (``napari_slip.core.training.synthetic``: coloured, textured shapes), the same way.

The objects are given as label proposals (``labels=``), so what is measured is the
classification alone: every object is a candidate, each gets its most probable class or
"none" (counted wrong). Through the plain Python API (``Concept.add_labels`` and
``Segmenter.segment(image, concept, labels=...)``) as a notebook calls it.

CLIP: no pretrained weights can be downloaded on the machines this runs on, so the CLIP
is open_clip's ViT-B-32 with *random* weights (the "base" CLIP of the issue, untrained
in the strongest sense): its text rows show chance, and its ``clip`` feature group is a
random projection of the crop's pixels. With pretrained weights the text rows and the
``clip`` group will differ; the measurement groups do not depend on CLIP.

Also timed: learning (features of every object of the 4 images, then the fit), one
correction in the widget's path (``Corrections.add_at`` on a scene of ~300 candidates,
SAM's decode excluded: label proposals), ``napari-slip learn`` on a folder, and SAM's
single-point decode on a 1,024 px vit_b embedding (random weights: the decoder's
arithmetic does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURE_SETS = {
    "auto": ("auto",),
    "shape": ("shape",),
    "shape+texture": ("shape", "texture"),
    "measurements": ("shape", "intensity", "texture"),
    "all": ("shape", "intensity", "texture", "clip"),
    "clip": ("clip",),
}


def build_clip(folder: Path) -> Path:
    """open_clip ViT-B-32 with random weights, saved as a napari-slip checkpoint."""
    import open_clip
    import torch

    from napari_slip.core.models.clip import build_clip, save_clip_checkpoint

    torch.manual_seed(0)
    config = open_clip.get_model_config("ViT-B-32")
    path = folder / "vit_b32_random.safetensors"
    save_clip_checkpoint(
        build_clip(config).eval(), config, path, {"note": "random weights (benchmark)"}
    )
    return path


def domain_scenes(name: str, n: int, seed: int):
    if name == "shapes-textures":
        from napari_slip.testing.concept_scenes import concept_scenes

        return concept_scenes(n, seed)
    from napari_slip.core.training.synthetic import SYNTHETIC_CLASSES, synthetic_image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rgb, labels, names = synthetic_image(rng, 160, tuple(SYNTHETIC_CLASSES))
        out.append((rgb, labels.astype(np.int32), dict(names)))
    return out


def accuracy(seg, concept, scenes) -> float:
    from napari_slip.testing.concept_scenes import classification_accuracy

    return classification_accuracy(seg, concept, scenes)


def pick(train, shots: int, rng) -> list[dict[int, str]]:
    """``shots`` objects per class over the training images: {label: class} per image."""
    pool = [(i, k, v) for i, (_, _, names) in enumerate(train) for k, v in names.items()]
    out = [{} for _ in train]
    for cls in sorted({v for _, _, v in pool}):
        mine = [p for p in pool if p[2] == cls]
        for j in rng.choice(len(mine), min(shots, len(mine)), replace=False):
            i, k, v = mine[j]
            out[i][int(k)] = v
    return out


def learn(seg, classes, train, chosen, features, text: bool):
    from napari_slip import Concept

    concept = Concept(sorted(classes), texts=None if text else False, features=features)
    for (image, labels, _), examples in zip(train, chosen, strict=True):
        if examples:
            concept.add_labels(image, labels, examples, segmenter=seg)
    concept.chosen_features()  # the fit (and the feature choice) is part of learning
    return concept


def measure_domain(seg, name: str, seeds: int) -> dict:
    from napari_slip import Concept

    train = domain_scenes(name, 4, seed=11)
    test = domain_scenes(name, 8, seed=12)
    classes = sorted({v for _, _, names in train for v in names.values()})
    n_test = sum(len(names) for _, _, names in test)
    text_only = Concept(classes)
    text_only.bind_clip(seg.clip_spec, seg.model_set.load("clip").sha256)
    rows = {"text only": {"0": accuracy(seg, text_only, test)}}
    times = []
    for label, features in FEATURE_SETS.items():
        for text in (False, True) if label == "auto" else (False,):
            key = f"{label}{' + text' if text else ''}"
            rows[key] = {}
            for shots in (1, 3, 5):
                accs, chosen_sets = [], []
                for s in range(seeds):
                    chosen = pick(train, shots, np.random.default_rng(s))
                    start = time.perf_counter()
                    concept = learn(seg, classes, train, chosen, features, text)
                    times.append(time.perf_counter() - start)
                    accs.append(accuracy(seg, concept, test))
                    chosen_sets.append("+".join(concept.chosen_features()))
                rows[key][str(shots)] = float(np.mean(accs))
                if label == "auto":
                    rows[key][f"{shots}_chosen"] = sorted(set(chosen_sets))
            print(
                f"  {name:16s} {key:20s} "
                + "  ".join(
                    f"{k}: {v:.3f}" for k, v in rows[key].items() if not k.endswith("chosen")
                ),
                flush=True,
            )
    print(f"  {name}: text only {rows['text only']['0']:.3f} (chance {1 / len(classes):.3f})")
    return {
        "classes": classes,
        "test_objects": n_test,
        "accuracy": rows,
        "learn_seconds_median": float(np.median(times)),
        "learn_seconds_max": float(np.max(times)),
    }


def correction_time(seg) -> dict:
    """One click's re-scoring on ~300 candidates (label proposals: no SAM decode)."""
    from napari_slip import Concept
    from napari_slip.core.edits.corrections import Corrections
    from napari_slip.testing.concept_scenes import concept_scene

    rng = np.random.default_rng(3)
    image, labels, names = concept_scene(rng, size=720, n=(300, 320), radius=(6.0, 10.0))
    concept = Concept(["round", "elongated", "spiky"], texts=False)
    first = {k: v for k, v in list(names.items())[:6]}
    concept.add_labels(image, labels, first, segmenter=seg)
    result = seg.segment(image, concept, labels=labels)
    corrections = Corrections(seg, result, concept)
    times = []
    for k in list(names)[6:16]:
        ys, xs = np.nonzero(labels == k)
        start = time.perf_counter()
        corrections.add_at(float(ys[len(ys) // 2]), float(xs[len(xs) // 2]))
        times.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(times)
    return {
        "candidates": len(result.candidates),
        "clicks": len(times),
        "median_ms": float(np.median(ms)),
        "max_ms": float(ms.max()),
    }


def learn_cli_time(clip: Path, folder: Path) -> dict:
    from napari_slip.testing.concept_scenes import write_concept_folder

    data = write_concept_folder(folder / "data", 20, seed=21)
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_slip.cli",
            "learn",
            str(data),
            "-o",
            str(folder / "x.concept"),
            "--clip",
            str(clip),
            "-q",
        ],
        check=True,
    )
    return {"images": 20, "seconds": time.perf_counter() - start}


def sam_decode_time() -> dict:
    """SAM vit_b's decode of one point on a 1,024 px embedding (random weights)."""
    import torch
    from segment_anything import sam_model_registry

    from napari_slip.core.models.promptable import PromptableSam

    torch.manual_seed(0)
    sam = PromptableSam(sam_model_registry["vit_b"]().eval())
    rgb = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    out = {}
    for precision in ("fp32", "bf16"):
        embedding = sam.embed(rgb, precision)
        sam.decode_points(embedding, np.array([[512.0, 512.0]]), precision)  # warm
        times = []
        for i in range(10):
            start = time.perf_counter()
            sam.decode_points(embedding, np.array([[100.0 + 50 * i, 300.0]]), precision)
            times.append(time.perf_counter() - start)
        out[precision] = 1000 * float(np.median(times))
    return {"median_ms": out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from napari_slip import Segmenter
    from napari_slip.core.runtime.perf import cpu_info

    cpu = dict(cpu_info())
    print(f"CPU: {cpu} ({platform.machine()}, python {platform.python_version()})")
    out: dict = {"cpu": cpu, "seeds": args.seeds, "clip": "ViT-B-32, random weights"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = build_clip(tmp)
        seg = Segmenter(clip=str(clip), device="cpu")
        out["domains"] = {
            d: measure_domain(seg, d, args.seeds) for d in ("shapes-textures", "fine-tuning")
        }
        out["correction"] = correction_time(seg)
        print(f"  one correction: {out['correction']}")
        out["learn_cli"] = learn_cli_time(clip, tmp)
        print(f"  napari-slip learn: {out['learn_cli']}")
    out["sam_decode"] = sam_decode_time()
    print(f"  SAM vit_b single-point decode at 1024 px: {out['sam_decode']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
