"""Image normalisation: dtypes, colour, channels, limits, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.pipeline.images import prepare_image


def test_uint16_grayscale_is_stretched_by_percentiles():
    img = np.linspace(1000, 5000, 100 * 100).reshape(100, 100).astype(np.uint16)
    out = prepare_image(img)
    assert out.rgb.shape == (100, 100, 3) and out.rgb.dtype == np.uint8
    assert out.rgb[..., 0].min() == 0 and out.rgb[..., 0].max() == 255
    assert np.array_equal(out.rgb[..., 0], out.rgb[..., 2])
    assert out.normalisation["method"].startswith("percentiles")


def test_contrast_limits_override_percentiles():
    img = np.array([[0, 100], [200, 300]], dtype=np.float32)
    out = prepare_image(img, contrast_limits=(100, 200))
    assert out.rgb[..., 0].tolist() == [[0, 0], [255, 255]]
    assert out.normalisation["limits"] == [[100.0, 200.0]]


def test_uint8_rgb_is_kept_and_rgba_drops_alpha():
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    assert np.array_equal(prepare_image(rgb).rgb, rgb)
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(prepare_image(rgba).rgb, rgb)


def test_multichannel_picks_channels_into_rgb():
    img = np.zeros((4, 8, 8), dtype=np.uint16)
    for c in range(4):
        img[c, c, :] = 1000
    out = prepare_image(img, channel_axis=0, channels=[3, 1], contrast_limits=(0, 1000))
    assert out.rgb[3, 0].tolist() == [255, 0, 0]
    assert out.rgb[1, 0].tolist() == [0, 255, 0]
    assert out.rgb[:, :, 2].max() == 0
    assert out.normalisation["channels"] == [3, 1]


def test_float_nan_does_not_break_normalisation():
    img = np.random.default_rng(0).random((20, 20))
    img[0, 0] = np.nan
    out = prepare_image(img)
    assert out.rgb.dtype == np.uint8 and out.rgb[0, 0, 0] == 0


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((5, 64, 64), {}, r"shape \(5, 64, 64\)"),
        ((2, 3, 64, 64), {}, r"shape \(2, 3, 64, 64\)"),
        ((64,), {}, r"shape \(64,\)"),
        ((4, 64, 64), {"channel_axis": 0, "channels": [5]}, "has 4 channels"),
        ((4, 64, 64), {"channel_axis": 0, "channels": [0, 1, 2, 3]}, "one to three"),
        ((64, 64), {"contrast_limits": (1, 2, 3)}, "contrast_limits"),
    ],
)
def test_unsupported_input_names_the_problem(shape, kwargs, match):
    with pytest.raises(InputError, match=match):
        prepare_image(np.zeros(shape, dtype=np.uint16), **kwargs)
