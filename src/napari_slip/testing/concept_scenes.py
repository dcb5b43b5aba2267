"""A synthetic microscopy domain where neither text nor colour helps: grayscale 16-bit
images whose classes differ by shape and texture only.

Classes (random sizes and orientations, intensities drawn from one overlapping range,
then blur and noise):

- ``round``: a near-circular body with a smooth interior;
- ``elongated``: a long ellipse striped across its long axis;
- ``spiky``: a star-shaped body with a speckled interior;
- ``ring`` (not among :data:`CLASSES`): a hollow disc, an object no example shows.

Used by the concept tests and ``benchmarks/bench_concepts.py``; also written as a
labelled folder in the fine-tuning format (``images/``, ``labels/``, ``classes.csv``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ("round", "elongated", "spiky")


def _shape(kind: str, rng: np.random.Generator, size: float):
    """(mask, texture) of one object on a (2r+1)^2 grid."""
    r = int(np.ceil(size * (1.9 if kind == "elongated" else 1.35))) + 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if kind == "round":
        a, b = size * rng.uniform(0.95, 1.1), size * rng.uniform(0.85, 1.0)
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        texture = 0.08 * np.cos(np.hypot(u, v) / size * np.pi)
    elif kind == "elongated":
        a, b = size * rng.uniform(1.6, 1.9), size * rng.uniform(0.45, 0.6)
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        period = rng.uniform(3.0, 4.5)
        texture = 0.35 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    elif kind == "ring":  # not a class of the benchmark: what "none of them" must catch
        a = size * rng.uniform(1.0, 1.15)
        rr = np.hypot(u, v)
        mask = rr <= a
        texture = np.where(rr < 0.6 * a, -0.6, 0.3)
    else:
        spikes = int(rng.integers(5, 9))
        theta = np.arctan2(v, u)
        radius = size * (0.75 + 0.45 * np.cos(spikes * theta))
        mask = np.hypot(u, v) <= radius
        texture = 0.45 * rng.standard_normal(mask.shape)
    return mask, texture


def concept_scene(
    rng: np.random.Generator, size: int = 192, n=(8, 14), radius=(7.0, 13.0), classes=CLASSES
):
    """(image uint16, labels int32, {label id: class name}) of one scene."""
    from scipy import ndimage

    background = rng.uniform(200, 600)
    image = np.full((size, size), background)
    image += ndimage.gaussian_filter(rng.standard_normal((size, size)), 12) * 400
    labels = np.zeros((size, size), dtype=np.int32)
    names: dict[int, str] = {}
    target = int(rng.integers(n[0], n[1] + 1))
    tries = 0
    while len(names) < target and tries < 400:
        tries += 1
        kind = classes[len(names) % len(classes)] if tries < 200 else rng.choice(classes)
        mask, texture = _shape(kind, rng, rng.uniform(*radius))
        h = mask.shape[0]
        y, x = rng.integers(0, size - h, size=2)
        region = labels[y : y + h, x : x + h]
        grown = ndimage.binary_dilation(mask, iterations=2)
        if (region[grown] > 0).any():
            continue
        label = len(names) + 1
        region[mask] = label
        level = rng.uniform(1500, 4000)  # one range for every class
        image[y : y + h, x : x + h][mask] = level * (1 + texture[mask])
        names[label] = str(kind)
    image = ndimage.gaussian_filter(image, rng.uniform(0.6, 1.2))
    image = rng.poisson(np.maximum(image, 0) / 4.0) * 4.0 + rng.normal(0, 40, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels, names


def concept_scenes(n: int, seed: int, size: int = 192):
    rng = np.random.default_rng(seed)
    return [concept_scene(rng, size) for _ in range(n)]


def classification_accuracy(segmenter, concept, scenes) -> float:
    """The share of the scenes' objects (given as label proposals) whose class the
    concept gets right ("none" counts wrong): what the concept tests and benchmark
    measure."""
    right = total = 0
    for image, labels, names in scenes:
        table = segmenter.segment(image, concept, labels=labels).table
        got = dict(zip(table["source_id"], table["class"], strict=True))
        right += sum(got.get(k) == v for k, v in names.items())
        total += len(names)
    return right / max(total, 1)


def write_concept_folder(folder, n: int, seed: int, size: int = 192) -> Path:
    """A labelled folder in the fine-tuning format (``images/``, ``labels/``,
    ``classes.csv`` with ``image,label,class``)."""
    import tifffile

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, labels, names) in enumerate(concept_scenes(n, seed, size)):
        name = f"scene{i:03d}"
        tifffile.imwrite(folder / "images" / f"{name}.tif", image)
        tifffile.imwrite(folder / "labels" / f"{name}.tif", labels)
        rows += [(name, label, cls) for label, cls in names.items()]
    with open(folder / "classes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "class"])
        writer.writerows(rows)
    return folder


__all__ = [
    "CLASSES",
    "classification_accuracy",
    "concept_scene",
    "concept_scenes",
    "write_concept_folder",
]
