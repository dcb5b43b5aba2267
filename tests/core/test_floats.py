"""The suite's float comparison (tests/floats.py) passes rounding noise of another
summation order and fails real differences."""

from __future__ import annotations

import numpy as np
import pytest

from ..floats import assert_close, tolerance


def test_another_summation_order_passes_and_a_real_difference_fails():
    rng = np.random.default_rng(0)
    terms = rng.normal(size=(64, 4096)).astype(np.float32) * 300
    forward = terms.sum(axis=1, dtype=np.float32)
    pairwise = terms[:, ::-1].reshape(64, 64, 64).sum(axis=2).sum(axis=1)  # another order
    assert not np.array_equal(forward, pairwise)
    scale = float(np.abs(terms).max())
    assert_close(forward, pairwise, terms=4096, scale=scale)
    wrong = pairwise.copy()
    wrong[3] += 1e-3 * scale
    with pytest.raises(AssertionError, match="1 of 64 values differ"):
        assert_close(forward, wrong, terms=4096, scale=scale)
    with pytest.raises(AssertionError):
        assert_close(forward, np.where(np.arange(64) == 5, np.nan, pairwise), terms=4096)


def test_the_tolerance_grows_with_terms_scale_and_precision():
    base = tolerance([1.0], terms=100)
    assert tolerance([1.0], terms=400) == pytest.approx(2 * base)
    assert tolerance([10.0], terms=100) == pytest.approx(10 * base)
    assert tolerance([1.0], terms=100, dtype=np.float16) > 1000 * base
    with pytest.raises(ValueError, match="terms"):
        tolerance([1.0], terms=0)
