"""Helpers for the engine's progress generators (one place, not a loop per caller)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from .progress import Progress

T = TypeVar("T")


def drain(
    gen: Generator[Progress, Any, T], callback: Callable[[Progress], None] | None = None
) -> T:
    """Run a progress generator to completion and return its value.

    Parameters
    ----------
    gen
        A generator yielding :class:`Progress` and returning a result.
    callback
        Called with every progress event, e.g. ``print``.

    The allocator is tuned for the work while it runs
    (:func:`~napari_slip.core.runtime.perf.heavy_work_allocator`).
    """
    from .perf import heavy_work_allocator

    with heavy_work_allocator():
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(event)


def drain_cached(gen: Generator[Progress, Any, T]) -> T | None:
    """Run a generator only as far as no heavy work is announced.

    At the first event with ``heavy=True`` the generator is closed and None returned;
    otherwise its result is returned, computed from caches (plus text encodings).

    .. deprecated:: 0.x
        Nothing in napari-slip uses it any more; drain the generator and stop at the
        first event whose ``heavy`` is True yourself. It will be removed.
    """
    import warnings

    warnings.warn(
        "drain_cached() is deprecated and will be removed: stop at the first heavy "
        "Progress event yourself.",
        DeprecationWarning,
        stacklevel=2,
    )
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.heavy:
            gen.close()
            return None


def relabel(
    gen: Generator[Progress, Any, T], message: Callable[[Progress], str] | None = None
) -> Generator[Progress, None, T]:
    """Forward a generator's events (rewriting their messages) and return its value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        yield event if message is None else event.with_message(message(event))
