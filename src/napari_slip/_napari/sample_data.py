"""Sample images that ship inside installed packages (nothing is downloaded)."""

from __future__ import annotations

import numpy as np


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def coffee():
    """A photo of a coffee cup (scikit-image)."""
    return [(_skimage("coffee"), {"name": "coffee", "rgb": True}, "image")]


def astronaut():
    """A photo of an astronaut with a flag and a helmet (scikit-image)."""
    return [(_skimage("astronaut"), {"name": "astronaut", "rgb": True}, "image")]


def cell():
    """A grayscale micrograph of a cell (scikit-image)."""
    return [(_skimage("cell"), {"name": "cell"}, "image")]


def ihc():
    """Immunohistochemistry-stained tissue, RGB (scikit-image)."""
    return [(_skimage("immunohistochemistry"), {"name": "ihc", "rgb": True}, "image")]


def make_nuclei_stack(shape=(8, 192, 192), n=14, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 16-bit fluorescence z-stack of ellipsoidal nuclei, and its labels."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(1, n + 1):
        cz = rng.uniform(1, shape[0] - 2)
        cy, cx = rng.uniform(20, shape[1] - 20), rng.uniform(20, shape[2] - 20)
        rz, ry, rx = rng.uniform(2, 4), rng.uniform(9, 16), rng.uniform(9, 16)
        inside = ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        labels[inside & (labels == 0)] = i
    signal = np.where(labels > 0, 2500.0, 0.0)
    texture = rng.normal(0, 300, shape) * (labels > 0)
    image = 400 + signal + texture + rng.normal(0, 60, shape)
    return np.clip(image, 0, 65535).astype(np.uint16), labels


def nuclei_stack():
    """A synthetic 16-bit nuclei z-stack with its ground-truth labels."""
    image, labels = make_nuclei_stack()
    return [
        (image, {"name": "nuclei", "contrast_limits": (0, 4000)}, "image"),
        (labels, {"name": "nuclei ground truth", "visible": False}, "labels"),
    ]
