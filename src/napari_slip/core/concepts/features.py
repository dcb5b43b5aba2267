"""What a concept knows of an object: measurements of its shape, intensities and texture
(as ilastik's object features and scikit-image's ``regionprops`` compute them), and its
CLIP crop embedding. Features, never pixels: a concept file holds these numbers only.

Measurements are taken on the image as the models see it (the engine's normalised
8-bit RGB, :class:`~..pipeline.images.PreparedImage`), so they mean the same on every
image normalised the same way: a 16-bit stack and its 8-bit export give one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The measurement columns, in order, by group (``Concept(features=...)`` picks groups).
GROUPS: dict[str, tuple[str, ...]] = {
    "shape": (
        "log_area",
        "log_perimeter",
        "compactness",
        "eccentricity",
        "axis_ratio",
        "solidity",
        "extent",
        "holes",
    ),
    "intensity": (
        "mean",
        "std",
        "p10",
        "p90",
        "contrast",
        "edge_contrast",
        "red",
        "green",
    ),
    "texture": (
        "gradient",
        "laplacian",
        "local_std",
        "roughness",
        "fine_energy",
        "coarse_energy",
    ),
}
MEASUREMENTS: tuple[str, ...] = tuple(n for names in GROUPS.values() for n in names)
#: Every feature group: the measurement groups and ``clip`` (the crop embedding).
FEATURE_GROUPS = (*GROUPS, "clip")
#: How far around an object its surroundings are read (pixels), for contrasts.
RING = 3


@dataclass
class ObjectFeatures:
    """Features of N objects.

    Attributes
    ----------
    measurements
        (N, len(MEASUREMENTS)) float64, the columns of :data:`MEASUREMENTS`.
    clip
        (N, D) L2-normalised CLIP crop embeddings.
    """

    measurements: np.ndarray
    clip: np.ndarray

    def __len__(self) -> int:
        return len(self.measurements)

    def take(self, indices) -> ObjectFeatures:
        indices = np.asarray(indices, dtype=np.int64)
        return ObjectFeatures(self.measurements[indices], self.clip[indices])


def _perimeter(mask: np.ndarray) -> float:
    """Crofton-style estimate: 4-neighbour boundary edges times pi/4."""
    padded = np.pad(mask, 1)
    edges = np.count_nonzero(padded[1:, :] != padded[:-1, :])
    edges += np.count_nonzero(padded[:, 1:] != padded[:, :-1])
    return max(1.0, edges * np.pi / 4)


def _moments(mask: np.ndarray) -> tuple[float, float]:
    """The major and minor axis lengths of the ellipse with the mask's second moments."""
    yy, xx = np.nonzero(mask)
    if len(yy) < 2:
        return 1.0, 1.0
    cov = np.cov(np.stack([yy, xx]).astype(np.float64)) + np.eye(2) / 12
    low, high = np.linalg.eigvalsh(cov)
    return 4 * np.sqrt(max(high, 1e-9)), 4 * np.sqrt(max(low, 1e-9))


def _solidity(mask: np.ndarray, area: int) -> float:
    from scipy.spatial import ConvexHull, QhullError

    yy, xx = np.nonzero(mask)
    if area < 3:
        return 1.0
    # Pixel corners, so a one-pixel-wide object has a hull of its own area.
    points = np.concatenate(
        [np.stack([yy + dy, xx + dx], axis=1) for dy in (0, 1) for dx in (0, 1)]
    ).astype(np.float64)
    try:
        hull = ConvexHull(points).volume
    except QhullError:
        return 1.0
    return float(min(1.0, area / max(hull, 1.0)))


def measure_object(region: np.ndarray, mask: np.ndarray, inner: tuple[slice, slice]) -> np.ndarray:
    """The measurements of one object.

    ``region`` is (h, w, 3) uint8 around the object (its box grown by :data:`RING`),
    ``mask`` the object's mask within the box, ``inner`` where the box lies in the region.
    """
    from scipy import ndimage

    rgb = region.astype(np.float64) / 255.0
    gray = rgb.mean(axis=2)
    full = np.zeros(gray.shape, dtype=bool)
    full[inner] = mask
    area = int(mask.sum())
    values = gray[full]
    perimeter = _perimeter(mask)
    major, minor = _moments(mask)
    filled = int(ndimage.binary_fill_holes(mask).sum())
    ring = ndimage.binary_dilation(full, iterations=RING) & ~full
    outside = gray[ring] if ring.any() else values
    edge = full & ~ndimage.binary_erosion(full, iterations=2)
    core = full & ~edge
    mean = float(values.mean())
    total = rgb[full].sum(axis=1) + 1e-6
    chroma = rgb[full] / total[:, None]
    smooth = ndimage.gaussian_filter(gray, 1.0)
    coarse = ndimage.gaussian_filter(gray, 3.0)
    gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1))
    laplacian = ndimage.laplace(smooth)
    local_mean = ndimage.uniform_filter(gray, 3)
    local_std = np.sqrt(np.maximum(ndimage.uniform_filter(gray**2, 3) - local_mean**2, 0))
    near = np.abs(np.diff(gray, axis=1))[full[:, 1:] & full[:, :-1]]
    far = np.abs(gray[:, 3:] - gray[:, :-3])[full[:, 3:] & full[:, :-3]]
    spread = float(values.std()) + 1e-3
    out = [
        np.log(area),
        np.log(perimeter),
        perimeter**2 / (4 * np.pi * area),
        np.sqrt(max(0.0, 1 - (minor / major) ** 2)),
        minor / major,
        _solidity(mask, area),
        area / mask.size,
        (filled - area) / area,
        mean,
        spread,
        float(np.percentile(values, 10)),
        float(np.percentile(values, 90)),
        mean - float(outside.mean()),
        (float(gray[core].mean()) if core.any() else mean) - float(gray[edge].mean()),
        float(chroma[:, 0].mean()),
        float(chroma[:, 1].mean()),
        float(gradient[full].mean()),
        float(np.abs(laplacian[full]).mean()),
        float(local_std[full].mean()),
        (float(near.mean()) / (float(far.mean()) + 1e-3)) if near.size and far.size else 1.0,
        float(np.abs(gray - smooth)[full].mean()) / spread,
        float(np.abs(smooth - coarse)[full].mean()) / spread,
    ]
    return np.asarray(out, dtype=np.float64)


def measure_objects(image, proposals) -> np.ndarray:
    """(N, len(MEASUREMENTS)) measurements of ``proposals`` on ``image`` (a prepared
    image: anything with ``read(y0, x0, y1, x1)`` and ``shape``)."""
    h, w = image.shape[:2]
    out = np.zeros((len(proposals), len(MEASUREMENTS)), dtype=np.float64)
    for i, (box, mask) in enumerate(zip(proposals.boxes, proposals.masks, strict=True)):
        y0, x0, y1, x1 = (int(v) for v in box)
        if not mask.any():
            continue
        ry0, rx0 = max(0, y0 - RING), max(0, x0 - RING)
        ry1, rx1 = min(h, y1 + RING), min(w, x1 + RING)
        region = np.asarray(image.read(ry0, rx0, ry1, rx1))
        inner = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
        out[i] = measure_object(region, mask, inner)
    return out


def features_of(candidates, image) -> ObjectFeatures:
    """The features of a run's candidates (their measurements are computed once and
    kept with the candidates, so re-selection and corrections cost nothing here)."""
    kept = getattr(candidates, "measurements", None)
    if kept is None or len(kept) != len(candidates):
        kept = measure_objects(image, candidates.proposals)
        candidates.measurements = kept
    return ObjectFeatures(kept, np.asarray(candidates.embeddings, dtype=np.float32))


__all__ = [
    "FEATURE_GROUPS",
    "GROUPS",
    "MEASUREMENTS",
    "ObjectFeatures",
    "features_of",
    "measure_object",
    "measure_objects",
]
