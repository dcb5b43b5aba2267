"""Dense z-stacks as hard as real tissue, to judge 3D linking: ellipsoidal nuclei
packed on a jittered lattice, so that most touch their neighbours in the plane and
along Z (many stacked directly above one another), anisotropic voxels, 16-bit
counts with an uneven, depth-attenuated background, a blur longer along Z than
across, and photon and camera noise.

Where two nuclei's ellipsoids would overlap, each voxel goes to the nucleus it is
deeper inside, so contacts are flattened faces (no neck between them) and free
sides stay rounded (a neck); every nucleus is dimmer near its border (so a contact
is a dim gap once blurred).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Voxel sizes (Z, Y, X) in micrometres: a confocal stack's 4x anisotropy.
VOXEL = (2.0, 0.5, 0.5)


def dense_nuclei_stack(
    seed: int,
    shape: tuple[int, int, int] = (32, 128, 128),
    voxel: tuple[float, float, float] = VOXEL,
    radius: tuple[float, float] = (4.0, 5.5),
    elongation: tuple[float, float] = (1.0, 1.35),
    packing: float = 0.92,
    jitter: float = 0.22,
    empty: float = 0.08,
) -> tuple[np.ndarray, np.ndarray]:
    """A dense stack: (image uint16 (Z, Y, X), labels int32 (Z, Y, X), one id per
    nucleus, ids 1..n).

    Parameters
    ----------
    seed
        The random seed (the same seed, the same stack).
    shape, voxel
        Voxels and their sizes (Z, Y, X) in micrometres.
    radius, elongation
        A nucleus's radius across (micrometres) and its Z semi-axis as a multiple of
        it, each drawn uniformly from the range.
    packing
        Lattice spacing as a share of the mean diameter (below 1: neighbours touch).
    jitter
        Random shift of each lattice site, as a share of the spacing.
    empty
        Share of lattice sites left empty (holes in the tissue).
    """
    rng = np.random.default_rng(seed)
    voxel = np.asarray(voxel, dtype=float)
    extent = np.asarray(shape) * voxel
    r_mean = float(np.mean(radius))
    spacing = packing * 2 * r_mean * np.array([float(np.mean(elongation)), 1.0, 1.0])
    sites = [
        np.arange(spacing[a] / 2 - spacing[a] / 4, extent[a] + spacing[a] / 4, spacing[a])
        for a in range(3)
    ]
    labels = np.zeros(shape, np.int32)
    depth = np.full(shape, np.inf, np.float32)
    label = 0
    for z in sites[0]:
        for y in sites[1]:
            for x in sites[2]:
                if rng.random() < empty:
                    continue
                centre = np.array([z, y, x]) + rng.uniform(-jitter, jitter, 3) * spacing
                r = rng.uniform(*radius)
                axes = np.array([r * rng.uniform(*elongation), r, r * rng.uniform(0.8, 1.0)])
                label += 1
                _claim(labels, depth, label, centre, axes, rng.uniform(0, np.pi), voxel)
    labels = _kept(labels, min_voxels=30)
    return _image(rng, labels, voxel), labels


def _claim(labels, depth, label, centre, axes, angle, voxel) -> None:
    """Give ``label`` every voxel of its ellipsoid (``axes`` Z, Y, X in micrometres,
    turned by ``angle`` in the plane) that it is deeper inside than any other."""
    lo = np.maximum(np.floor((centre - axes.max()) / voxel).astype(int), 0)
    hi = np.minimum(np.ceil((centre + axes.max()) / voxel).astype(int) + 1, labels.shape)
    if np.any(hi <= lo):
        return
    zz, yy, xx = np.meshgrid(
        *((np.arange(lo[a], hi[a]) + 0.5) * voxel[a] - centre[a] for a in range(3)),
        indexing="ij",
    )
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    d = (zz / axes[0]) ** 2 + (v / axes[1]) ** 2 + (u / axes[2]) ** 2
    box = tuple(slice(lo[a], hi[a]) for a in range(3))
    mine = (d <= 1) & (d < depth[box])
    labels[box][mine] = label
    depth[box][mine] = d[mine]


def _kept(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Each nucleus's largest connected piece if it has ``min_voxels``, ids 1..n."""
    out = np.zeros_like(labels)
    label = 0
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        pieces, n = ndimage.label(labels[box] == index)
        if not n:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        if sizes.max() < min_voxels:
            continue
        label += 1
        out[box][pieces == 1 + int(np.argmax(sizes))] = label
    return out


def _image(rng: np.random.Generator, labels: np.ndarray, voxel: np.ndarray) -> np.ndarray:
    """16-bit counts: nuclei of different brightness, dimmer within a micrometre of
    their border, textured; an uneven background fading with depth; an anisotropic
    blur; photon and camera noise."""
    shape = labels.shape
    boundary = np.zeros(shape, bool)
    for axis in range(3):
        step = np.diff(labels, axis=axis) != 0
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        boundary[tuple(lower)] |= step
        boundary[tuple(upper)] |= step
    inside = ndimage.distance_transform_edt(~boundary, sampling=voxel)
    bright = rng.uniform(500, 1500, int(labels.max()) + 1)
    rim = 0.55 + 0.45 * np.clip(inside / 1.0, 0, 1)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), (0.5, 1.5, 1.5))
    texture /= max(float(texture.std()), 1e-6)
    signal = np.where(labels > 0, bright[labels] * rim * (1 + 0.12 * texture), 0.0)
    zz, yy, xx = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    background = 180 + 220 * (0.6 * yy + 0.4 * xx) ** 1.5
    counts = (signal + background) * np.exp(-0.6 * zz)  # deeper is dimmer
    sigma = (0.9 / voxel[0], 0.35 / voxel[1], 0.35 / voxel[2])  # the PSF, micrometres
    counts = ndimage.gaussian_filter(counts, sigma)
    counts = rng.poisson(np.maximum(counts, 0)).astype(np.float64)
    counts += rng.normal(100, 15, shape)  # camera offset and read noise
    return np.clip(counts, 0, 65535).astype(np.uint16)


def true_sections(labels: np.ndarray, drop_plane: int | None = None) -> np.ndarray:
    """Each plane's objects numbered plane by plane (as a 2D segmentation of every
    plane gives them): the truth's sections, with no link between planes; with
    ``drop_plane``, that plane's objects missing (a plane where detection failed)."""
    out = np.zeros_like(labels)
    offset = 0
    for z in range(len(labels)):
        if z == drop_plane:
            continue
        ids = np.unique(labels[z])[1:]
        lut = np.zeros(int(labels.max()) + 1, np.int32)
        lut[ids] = np.arange(1, len(ids) + 1) + offset
        out[z] = lut[labels[z]]
        offset += len(ids)
    return out


def dense_planes(n: int, seed: int, size: int = 256) -> tuple[list, list]:
    """``n`` planes of dense stacks as a 2D SAM sees them, to train a fixture SAM on
    (lists of (size, size, 3) uint8 RGB and int32 labels): stacks from seeds
    ``seed * 1000`` on (never the benchmarks' seeds, 0-99), each plane prepared as a
    run prepares it (percentile contrast) and enlarged to ``size`` as SAM enlarges a
    128 px plane (bilinear; labels nearest)."""
    from ..core.pipeline.images import prepare_image

    rng = np.random.default_rng(seed)
    rgbs, labels = [], []
    stack = 0
    while len(rgbs) < n:
        image, truth = dense_nuclei_stack(seed * 1000 + stack)
        stack += 1
        for z in rng.permutation(len(image))[: max(1, len(image) // 2)]:
            if len(rgbs) == n:
                break
            rgb = prepare_image(image[z]).rgb
            zoom = size / rgb.shape[0]
            big = ndimage.zoom(rgb.astype(np.float32), (zoom, zoom, 1), order=1)
            rgbs.append(np.clip(np.rint(big), 0, 255).astype(np.uint8))
            labels.append(ndimage.zoom(truth[z], zoom, order=0).astype(np.int32))
    return rgbs, labels


__all__ = ["VOXEL", "dense_nuclei_stack", "dense_planes", "true_sections"]
