"""Comparing floats that were computed two ways (another kernel, another order of
summation, another CPU).

Rounding error grows with the magnitude of the values summed and with the number of
terms in each sum, and its size differs between CPU kinds: AVX2, AVX-512 and AMX
block matrix products differently. A bare ``atol=1e-4`` holds on its author's CPU
and fails on another (CI once failed on an AMX CPU: one gradient element of 32,768
off by 1.5e-4). So every comparison of computed floats says how many terms went
into each value, and the tolerance follows from that:

    tol = FACTOR * eps(dtype) * sqrt(terms) * scale

``eps`` is the machine epsilon of the precision computed in, ``sqrt(terms)`` the
typical growth of a sum's rounding error with its length (random-walk), and
``scale`` the magnitude the values are computed at: by default the largest
magnitude among the compared values (an element near zero is computed from terms
as large as the others), or the caller's where known. ``FACTOR`` covers a few
chained operations (a matmul, a softmax, a second matmul, their backward pass);
``depth`` multiplies it for longer chains such as whole networks.
"""

from __future__ import annotations

import math

import numpy as np

#: Rounding slack for one short chain of operations (see the module's docstring).
FACTOR = 16.0


def tolerance(
    values, *, terms: int, dtype=np.float32, scale: float | None = None, depth: int = 1
) -> float:
    """The absolute tolerance for ``values`` computed with sums of ``terms`` terms."""
    if terms < 1:
        raise ValueError(f"terms must be at least 1; got {terms}")
    if scale is None:
        scale = float(np.max(np.abs(values))) if np.size(values) else 0.0
    eps = float(np.finfo(dtype).eps)
    return FACTOR * depth * eps * math.sqrt(terms) * max(scale, eps)


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close(
    actual,
    expected,
    *,
    terms: int,
    dtype=np.float32,
    scale: float | None = None,
    depth: int = 1,
) -> None:
    """Assert ``actual`` matches ``expected`` within the rounding of ``terms``-term
    sums in ``dtype`` at the values' ``scale`` (numpy arrays or torch tensors)."""
    a, e = _numpy(actual), _numpy(expected)
    assert a.shape == e.shape, f"shapes differ: {a.shape} != {e.shape}"
    if scale is None:
        scale = max(float(np.abs(e).max(initial=0.0)), float(np.abs(a).max(initial=0.0)))
    tol = tolerance(e, terms=terms, dtype=dtype, scale=scale, depth=depth)
    err = np.abs(a - e)
    worst = float(err.max(initial=0.0))
    if not worst <= tol:  # also fails on NaN
        where = np.unravel_index(int(np.nanargmax(err)), err.shape) if err.size else ()
        raise AssertionError(
            f"{int((err > tol).sum())} of {err.size} values differ by more than {tol:.3g} "
            f"(scale {scale:.3g}, {terms} terms, {np.dtype(dtype).name}); worst "
            f"{worst:.3g} at {where}: {a[where]!r} vs {e[where]!r}"
        )
