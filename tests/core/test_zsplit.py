"""Objects stacked along Z stay apart: linking cuts a chain where its sections'
signal has a valley (a neck, or a dim gap), and keeps an elongated object whole.
Through the public API with each plane's true sections as proposals (linking alone
is judged), on 16-bit anisotropic stacks, and on a dense stack."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.params import StackParams
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.pipeline.zsplit import split_stacked
from napari_slip.testing.dense import VOXEL, dense_nuclei_stack, true_sections

SHAPE = (24, 64, 64)


@pytest.fixture(scope="module")
def seg(tiny_clip_path):
    # Label proposals never load SAM: the path is never read.
    return Segmenter("/no/such/sam.pth", str(tiny_clip_path), "cpu", disk_cache=False)


def _ellipsoid(centre, axes, shape=SHAPE):
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    d = sum(((g - c) / a) ** 2 for g, c, a in zip((zz, yy, xx), centre, axes, strict=True))
    return d <= 1


def _image(labels, brightness, rng, gap=None):
    """16-bit counts: each label's brightness, a dim band where ``gap`` (Z planes)
    says, an uneven background and noise."""
    counts = np.where(labels > 0, np.asarray(brightness)[labels], 0.0)
    if gap is not None:
        counts[gap] *= 0.3
    counts += 200 + 100 * np.linspace(0, 1, labels.shape[2])[None, None, :]
    return np.clip(rng.poisson(counts) + rng.normal(0, 10, counts.shape), 0, 65535).astype(
        np.uint16
    )


def _segment(seg, image, truth, valley=None):
    params = StackParams() if valley is None else StackParams(split_valley=valley)
    return seg.segment(
        image,
        "nucleus",
        labels=true_sections(truth),
        axes="ZYX",
        pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5},
        mode="threshold",
        threshold=-1,
        stack_params=params,
    ).labels


def _objects_of(labels, truth):
    """For each true object, the ids of the result covering it (by majority)."""
    out = {}
    for k in np.unique(truth)[1:]:
        ids, counts = np.unique(labels[truth == k], return_counts=True)
        out[int(k)] = int(ids[np.argmax(counts)])
    return out


def test_two_nuclei_stacked_with_a_neck_come_back_as_two(seg):
    rng = np.random.default_rng(0)
    truth = np.zeros(SHAPE, np.int32)
    truth[_ellipsoid((6, 32, 32), (5, 14, 14))] = 1
    truth[_ellipsoid((16.5, 33, 31), (5, 13, 13)) & (truth == 0)] = 2  # touching below
    image = _image(truth, [0, 900, 1100], rng)
    merged = _segment(seg, image, truth, valley=0.0)  # overlap linking alone: one object
    assert len(np.unique(merged[truth > 0])) == 1
    labels = _segment(seg, image, truth)
    objects = _objects_of(labels, truth)
    assert objects[1] != objects[2]
    for k in (1, 2):  # each one whole: every plane of it under one id
        shown = labels[(truth == k) & (labels > 0)]
        assert set(shown.tolist()) == {objects[k]} and len(shown) >= 0.95 * (truth == k).sum()


def test_two_nuclei_with_a_dim_gap_and_no_neck_come_back_as_two(seg):
    """Flat faces in contact (the sections keep their size across the contact), the
    contact planes dimmer: the dim gap alone separates them."""
    rng = np.random.default_rng(1)
    zz = np.arange(SHAPE[0])[:, None, None]
    disc = _ellipsoid((0, 32, 32), (1, 14, 14), (1, 64, 64))
    truth = np.zeros(SHAPE, np.int32)
    truth[(zz >= 3) & (zz < 11) & disc] = 1
    truth[(zz >= 11) & (zz < 19) & disc] = 2
    gap = (slice(10, 12), slice(None), slice(None))
    image = _image(truth, [0, 1000, 1000], rng, gap=gap)
    assert len(np.unique(_segment(seg, image, truth, valley=0.0)[truth > 0])) == 1
    objects = _objects_of(_segment(seg, image, truth), truth)
    assert objects[1] != objects[2]


def test_an_elongated_nucleus_with_no_neck_stays_one(seg):
    rng = np.random.default_rng(2)
    truth = _ellipsoid((12, 32, 32), (10, 9, 12)).astype(np.int32)  # 20 planes deep
    textured = np.where(truth > 0, 900 * (1 + 0.15 * rng.normal(0, 1, SHAPE)), 0)
    image = np.clip(rng.poisson(np.maximum(textured, 0) + 200), 0, 65535).astype(np.uint16)
    labels = _segment(seg, image, truth)
    assert len(np.unique(labels[truth > 0])) == 1 and (labels[truth > 0] > 0).all()


def test_a_dense_anisotropic_stack_is_recovered(seg):
    """A dense stack (nuclei touching along every axis, 4x anisotropy, 16-bit, uneven
    background, noise): >= 0.95 of the nuclei come back as one object each (IoU >=
    0.5) with each plane's true sections given; without splitting, fewer."""
    from napari_slip.core.pipeline.linking import overlaps

    image, truth = dense_nuclei_stack(3, shape=(32, 80, 80))
    assert image.dtype == np.uint16 and truth.max() > 100

    def recovered(labels):
        ia, ib, inter = overlaps(truth, labels)
        size_t, size_l = np.bincount(truth.ravel()), np.bincount(labels.ravel())
        ious = inter / (size_t[ia] + size_l[ib] - inter)
        return len(set(ia[ious >= 0.5].tolist())) / int(truth.max())

    def segment(valley):
        return seg.segment(
            image,
            "nucleus",
            labels=true_sections(truth),
            axes="ZYX",
            pixel_size=dict(zip("ZYX", VOXEL, strict=True)),
            mode="threshold",
            threshold=-1,
            stack_params=StackParams(split_valley=valley),
        ).labels

    split = recovered(segment(StackParams().split_valley))
    assert split >= 0.95
    assert recovered(segment(0.0)) < split - 0.05


def test_split_cuts_profiles_at_their_valleys_only():
    """On per-part values: a chain of two humps is cut between the two weakest
    neighbours; one hump, a plateau with noise, or a chain of two stays whole."""

    def cut(profile, ratio=0.5):
        n = len(profile)
        objects = np.concatenate([[-1], np.zeros(n, np.int64)])
        depth = np.concatenate([[0], np.arange(n)])
        signal = np.concatenate([[0.0], profile])
        return split_stacked(objects, depth, signal, ratio)[1:].tolist()

    assert cut([10, 50, 90, 40, 12, 20, 70, 95, 60]) == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert cut([10, 50, 90, 40, 20, 12, 70, 95, 60]) == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert cut([20, 80, 30, 85, 25, 90, 30]) == [0, 0, 1, 1, 2, 2, 2]  # three stacked
    assert cut([10, 40, 80, 100, 90, 60, 20]) == [0] * 7  # one hump
    assert cut([90, 70, 95, 80, 100]) == [0] * 5  # noise on a plateau
    assert cut([10, 90]) == [0, 0]
    assert cut([10, 50, 90, 40, 12, 20, 70, 95, 60], ratio=0.1) == [0] * 9


def test_unusual_stacks_give_correct_objects(seg):
    """One plane; 100x anisotropy; empty planes inside a stack; objects touching
    everywhere: the objects come back right (no error, nothing merged or lost)."""
    rng = np.random.default_rng(4)
    truth = np.zeros(SHAPE, np.int32)
    truth[_ellipsoid((6, 32, 32), (5, 14, 14))] = 1
    truth[_ellipsoid((16.5, 33, 31), (5, 13, 13)) & (truth == 0)] = 2
    image = _image(truth, [0, 900, 1100], rng)
    options = {"axes": "ZYX", "mode": "threshold", "threshold": -1}
    one = seg.segment(image[6:7], "nucleus", labels=true_sections(truth[6:7]), **options)
    assert one.labels.shape == (1, 64, 64) and len(np.unique(one.labels)) == 2
    flat = seg.segment(
        image,
        "nucleus",
        labels=true_sections(truth),
        pixel_size={"Z": 50.0, "Y": 0.5, "X": 0.5},  # 100x anisotropy
        **options,
    )
    objects = _objects_of(flat.labels, truth)
    assert objects[1] != objects[2] and flat.table["volume_um3"].notna().all()
    gap = true_sections(truth)
    gap[9:14] = 0  # five planes with no object between the two nuclei
    labels = seg.segment(image, "nucleus", labels=gap, **options).labels
    assert len(np.unique(labels)) == 3  # two objects, not linked across the gap
    touching = np.ones((8, 32, 32), np.int32)
    touching[:, :, 16:] = 2
    touching[4:, :, :16] = 3  # every object touches the others in the plane and along Z
    counts = np.full(touching.shape, 900.0)
    counts[3:5, :, :16] *= 0.4  # where 1 meets 3, dimmer (their borders, blurred)
    counts = (counts + rng.normal(0, 10, counts.shape)).astype(np.uint16)
    labels = seg.segment(counts, "nucleus", labels=touching, **options).labels
    for k in (1, 2, 3):
        assert len(np.unique(labels[touching == k])) == 1
    assert len(np.unique(labels)) == 3
