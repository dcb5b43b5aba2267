"""Synthetic scenes with instance labels, for training and judging the fixture SAM.

Two kinds, mixed: coloured shapes on varied backgrounds (the photo-like case) and
fluorescence-like nuclei (bright, soft-edged, noisy blobs on a dark background, some
touching). Every object is one label; the label image is the ground truth of a scene.
"""

from __future__ import annotations

import numpy as np

from ..core.training.synthetic import SYNTHETIC_CLASSES, _shape_mask, _texture, gradient_background


def shapes_scene(rng: np.random.Generator, size: int = 256, n=(3, 9), radius=(8, 28)):
    """Coloured, textured shapes on a gradient background: (rgb uint8, labels int32)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    rgb = gradient_background(rng, size, colours=(20, 220), noise=10)
    labels = np.zeros((size, size), np.int32)
    kinds = list(SYNTHETIC_CLASSES)
    label = 0
    for _ in range(int(rng.integers(n[0], n[1] + 1))):
        kind = kinds[int(rng.integers(len(kinds)))]
        for _attempt in range(30):
            r = rng.uniform(*radius)
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            mask = _shape_mask(kind, yy, xx, cy, cx, r)
            if mask.sum() > 20 and not (labels[mask] > 0).any():
                break
        else:
            continue
        label += 1
        labels[mask] = label
        colour = rng.uniform(0, 255, 3)
        # Keep every object visibly different from the background under it.
        while np.abs(colour - rgb[mask].mean(0)).max() < 60:
            colour = rng.uniform(0, 255, 3)
        tex = _texture(SYNTHETIC_CLASSES[kind][1], yy, xx, rng.uniform(0, 6))[..., None]
        rgb = np.where(mask[..., None], colour * (1 - 0.3 * tex) + rng.normal(0, 5, 3), rgb)
    return np.clip(rgb, 0, 255).astype(np.uint8), labels


def _paint_nucleus(rng, intensity, labels, mask, d, label: int, texture: float):
    """Label ``mask`` and paint a bright, soft-edged, textured nucleus there (``d``: the
    squared normalised distance from its centre)."""
    labels[mask] = label
    bright = rng.uniform(110, 240)
    profile = bright * (1 - 0.35 * d) * (1 + texture * rng.normal(0, 1, d.shape))
    return np.where(mask, profile, intensity)


def _with_noise(rng, intensity):
    """Camera noise on a fluorescence-like image, clipped to 8 bits' range."""
    return np.clip(intensity + rng.normal(0, 6, intensity.shape), 0, 255)


def nuclei_scene(rng: np.random.Generator, size: int = 256, n=(4, 14), radius=(7, 20)):
    """Fluorescence-like nuclei, grayscale as RGB: (rgb uint8, labels int32)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    intensity = rng.normal(18, 4, (size, size)).astype(np.float32)
    labels = np.zeros((size, size), np.int32)
    label = 0
    for _ in range(int(rng.integers(n[0], n[1] + 1))):
        for _attempt in range(30):
            ry, rx = rng.uniform(*radius, 2)
            cy, cx = rng.uniform(max(ry, rx) + 1, size - max(ry, rx) - 1, 2)
            theta = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (np.cos(theta) * dx + np.sin(theta) * dy) / rx
            v = (-np.sin(theta) * dx + np.cos(theta) * dy) / ry
            d = u**2 + v**2
            mask = d <= 1
            # Nuclei may touch (one pixel apart) but never overlap.
            if mask.sum() > 20 and not (labels[mask] > 0).any():
                break
        else:
            continue
        label += 1
        intensity = _paint_nucleus(rng, intensity, labels, mask, d, label, texture=0.15)
    intensity = _with_noise(rng, intensity)
    rgb = np.repeat(intensity.astype(np.uint8)[..., None], 3, axis=-1)
    return rgb, labels


def scene(rng: np.random.Generator, size: int = 256):
    """One scene of either kind (half each): (rgb uint8, labels int32)."""
    return shapes_scene(rng, size) if rng.random() < 0.5 else nuclei_scene(rng, size)


def scenes(n: int, seed: int, size: int = 256):
    """``n`` scenes from ``seed``: lists of rgb images and label images."""
    rng = np.random.default_rng(seed)
    pairs = [scene(rng, size) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def nuclei_mosaic(
    seed: int, shape: tuple[int, int] = (1024, 1024), spacing: int = 34, radius=(7, 13)
):
    """A large fluorescence-like field of small nuclei: (rgb uint8, labels int32).

    Nuclei sit on a jittered lattice (``spacing`` pixels apart), so thousands fit a
    big image and many cross any tile border. Drawn locally, so a 4,096 px field takes
    seconds. Used to judge tiling (:mod:`napari_slip.core.pipeline.tiles`).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    intensity = rng.normal(18, 4, (h, w)).astype(np.float32)
    labels = np.zeros((h, w), np.int32)
    r_max = radius[1]
    jitter = max(0.0, (spacing - 2 * r_max - 2) / 2)
    label = 0
    for cy0 in range(r_max + 1, h - r_max - 1, spacing):
        for cx0 in range(r_max + 1, w - r_max - 1, spacing):
            if rng.random() < 0.15:
                continue  # gaps, like a real field
            cy = float(np.clip(cy0 + rng.uniform(-jitter, jitter), r_max + 1, h - r_max - 2))
            cx = float(np.clip(cx0 + rng.uniform(-jitter, jitter), r_max + 1, w - r_max - 2))
            ry, rx = rng.uniform(*radius, 2)
            theta = rng.uniform(0, np.pi)
            y0, x0 = int(cy) - r_max - 1, int(cx) - r_max - 1
            yy, xx = np.mgrid[y0 : y0 + 2 * r_max + 3, x0 : x0 + 2 * r_max + 3].astype(np.float32)
            dy, dx = yy - cy, xx - cx
            u = (np.cos(theta) * dx + np.sin(theta) * dy) / rx
            v = (-np.sin(theta) * dx + np.cos(theta) * dy) / ry
            d = u**2 + v**2
            mask = (d <= 1) & (labels[y0 : y0 + d.shape[0], x0 : x0 + d.shape[1]] == 0)
            if mask.sum() <= 20:
                continue
            label += 1
            labels[y0 : y0 + d.shape[0], x0 : x0 + d.shape[1]][mask] = label
            bright = rng.uniform(110, 240)
            profile = bright * (1 - 0.35 * d) * (1 + 0.15 * rng.normal(0, 1, d.shape))
            window = intensity[y0 : y0 + d.shape[0], x0 : x0 + d.shape[1]]
            window[mask] = profile[mask]
    intensity = np.clip(intensity + rng.normal(0, 6, intensity.shape), 0, 255)
    rgb = np.repeat(intensity.astype(np.uint8)[..., None], 3, axis=-1)
    return rgb, labels


def nuclei_stack(
    seed: int,
    size: int = 256,
    depth: int = 8,
    n=(8, 14),
    radius=(10, 22),
    z_radius=(1.5, 4.0),
):
    """A fluorescence-like z-stack of 3D nuclei (ellipsoids of different depths, some
    touching): (image uint8 (Z, Y, X), labels int32 (Z, Y, X), one id per nucleus).

    Each nucleus has its own centre plane and depth, so it spans 1 to ``depth`` planes
    and its sections grow and shrink; neighbours may touch but never overlap. Used to
    judge linking (:mod:`napari_slip.core.pipeline.linked`).
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:depth, :size, :size].astype(np.float32)
    labels = np.zeros((depth, size, size), np.int32)
    intensity = rng.normal(18, 4, labels.shape).astype(np.float32)
    label = 0
    for _ in range(int(rng.integers(n[0], n[1] + 1))):
        for _attempt in range(40):
            r = rng.uniform(*radius)
            rz = rng.uniform(*z_radius)
            cz = rng.uniform(0, depth - 1)
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            d = ((zz - cz) / rz) ** 2 + ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
            mask = d <= 1
            if mask.sum() > 60 and not (labels[mask] > 0).any():
                break
        else:
            continue
        label += 1
        intensity = _paint_nucleus(rng, intensity, labels, mask, d, label, texture=0.1)
    return _with_noise(rng, intensity).astype(np.uint8), labels
