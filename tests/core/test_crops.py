"""Crops: the mask's pixels, a filled outside, square, and no leaking neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.params import CropParams
from napari_slip.core.pipeline.crops import make_crops
from napari_slip.core.pipeline.proposals import proposals_from_labels


def _scene():
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    labels = np.zeros((40, 60), dtype=np.int32)
    labels[10:30, 10:20] = 1  # a red object
    rgb[10:30, 10:20] = (255, 0, 0)
    labels[12:28, 21:40] = 2  # its green neighbour, inside object 1's margin
    rgb[12:28, 21:40] = (0, 255, 0)
    return rgb, labels


def test_outside_mask_is_filled_so_neighbours_do_not_leak():
    rgb, labels = _scene()
    props = proposals_from_labels(labels)
    crop = make_crops(rgb, props, CropParams(fill="white", margin=0.5))[0]
    assert crop.shape[0] == crop.shape[1]
    colours = {tuple(c) for c in crop.reshape(-1, 3)}
    assert colours == {(255, 0, 0), (255, 255, 255)}


def test_plain_box_crop_with_fill_none_shows_the_leak():
    rgb, labels = _scene()
    crop = make_crops(rgb, proposals_from_labels(labels), CropParams(fill="none", margin=0.5))[0]
    assert (crop == (0, 255, 0)).all(axis=-1).any()


def test_margin_zero_is_the_box_padded_to_a_square():
    rgb, labels = _scene()
    crop = make_crops(rgb, proposals_from_labels(labels), CropParams(fill="black", margin=0))[0]
    assert crop.shape == (20, 20, 3)
    assert (crop[:, 5:15] == (255, 0, 0)).all() and (crop[:, :5] == 0).all()


def test_mean_and_rgb_fills():
    rgb, labels = _scene()
    props = proposals_from_labels(labels)
    mean = rgb.reshape(-1, 3).mean(0).round().astype(np.uint8)
    crop = make_crops(rgb, props, CropParams(fill="mean", margin=0))[0]
    assert tuple(crop[0, 0]) == tuple(mean)
    crop = make_crops(rgb, props, CropParams(fill=(1, 2, 3), margin=0))[0]
    assert tuple(crop[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("kwargs", [{"fill": "purple"}, {"fill": (1, 2)}, {"margin": -1}])
def test_bad_crop_options_are_refused(kwargs):
    with pytest.raises(InputError):
        CropParams(**kwargs)
