"""A synthetic domain for proving and demonstrating fine-tuning.

Objects of a few classes that differ in shape, colour and texture, scattered on varied
backgrounds, written as a dataset folder (images/, labels/, classes.csv). Pretrained
CLIP has no reason to know these class names; fine-tuning must teach it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

#: class name -> (base colour RGB, texture)
SYNTHETIC_CLASSES: dict[str, tuple[tuple[int, int, int], str]] = {
    "circle": ((220, 60, 50), "smooth"),
    "square": ((60, 90, 220), "stripes"),
    "triangle": ((60, 190, 80), "dots"),
    "cross": ((230, 200, 40), "checker"),
    "ring": ((200, 60, 200), "smooth"),
    "diamond": ((40, 200, 210), "stripes"),
}


def _shape_mask(kind: str, yy, xx, cy, cx, r) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r**2
    if kind == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if kind == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if kind == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if kind == "diamond":
        return np.abs(dy) + np.abs(dx) * 1.3 <= r
    # cross
    arm = r * 0.35
    return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))


def _texture(kind: str, yy, xx, phase: float) -> np.ndarray:
    if kind == "stripes":
        return (np.sin((xx + yy) * 0.9 + phase) > 0).astype(np.float32)
    if kind == "dots":
        return ((np.sin(xx * 1.3 + phase) > 0.6) & (np.sin(yy * 1.3) > 0.6)).astype(np.float32)
    if kind == "checker":
        return (((xx // 3) + (yy // 3)) % 2).astype(np.float32)
    return np.zeros_like(xx, dtype=np.float32)


def gradient_background(
    rng: np.random.Generator, size: int, colours=(20, 200), noise: float = 12
) -> np.ndarray:
    """A varied float RGB background: a random colour gradient plus noise."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c0, c1 = rng.uniform(*colours, 3), rng.uniform(*colours, 3)
    angle = rng.uniform(0, np.pi)
    t = ((np.cos(angle) * xx + np.sin(angle) * yy) / (size * 1.5) + 0.5)[..., None]
    return c0 * (1 - t) + c1 * t + rng.normal(0, noise, (size, size, 3))


def synthetic_image(
    rng: np.random.Generator,
    size: int = 128,
    classes: tuple[str, ...] = tuple(SYNTHETIC_CLASSES),
    n_objects: tuple[int, int] = (4, 7),
):
    """One image: (rgb uint8, labels int32, {label: class})."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    rgb = gradient_background(rng, size)
    labels = np.zeros((size, size), np.int32)
    names: dict[int, str] = {}
    n = int(rng.integers(n_objects[0], n_objects[1] + 1))
    # At least two classes per image, so choosing the right object is not trivial.
    kinds = list(rng.choice(classes, size=2, replace=False)) + list(rng.choice(classes, n - 2))
    label = 0
    for kind in kinds:
        for _ in range(30):  # find a free spot
            r = rng.uniform(9, 15)
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            mask = _shape_mask(kind, yy, xx, cy, cx, r)
            if mask.any() and not (labels[mask] > 0).any():
                break
        else:
            continue
        label += 1
        labels[mask] = label
        names[label] = str(kind)
        colour, texture = SYNTHETIC_CLASSES[kind]
        colour = np.clip(np.array(colour) + rng.normal(0, 15, 3), 0, 255)
        tex = _texture(texture, yy, xx, rng.uniform(0, 6))[..., None]
        rgb = np.where(mask[..., None], colour * (1 - 0.45 * tex) + rng.normal(0, 6, 3), rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8), labels, names


def make_synthetic_dataset(
    folder: str | os.PathLike,
    n_images: int = 40,
    size: int = 128,
    seed: int = 0,
    classes: tuple[str, ...] = tuple(SYNTHETIC_CLASSES),
) -> Path:
    """Write a synthetic dataset folder; returns its path."""
    import tifffile
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / "classes.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "class"])
        for i in range(n_images):
            rgb, labels, names = synthetic_image(rng, size, classes)
            name = f"img_{i:03d}"
            Image.fromarray(rgb).save(folder / "images" / f"{name}.png")
            tifffile.imwrite(folder / "labels" / f"{name}.tif", labels.astype(np.uint16))
            for label, cls in sorted(names.items()):
                writer.writerow([f"{name}.png", label, cls])
    return folder
