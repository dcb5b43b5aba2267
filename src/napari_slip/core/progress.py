"""Progress events yielded by the engine's long-running generators.

Scripts drain the generators (``for _ in gen: pass`` or :func:`drain`); the napari
widget wraps them in a thread worker and turns each event into a progress-bar update.
Yielding between batches is also what makes cancelling prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: The stages a run goes through, in order; the widget shows their names.
STAGES = ("loading models", "embedding", "proposals", "crops", "scoring", "selection")


@dataclass(frozen=True)
class Progress:
    """One step of long work.

    Attributes
    ----------
    stage
        One of :data:`STAGES` (or a caller-defined stage such as ``"slice"``).
    done, total
        Units of work finished and expected in this stage (``total`` 0 if unknown).
    message
        A short human-readable line.
    """

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""

    def __str__(self) -> str:
        count = f" {self.done}/{self.total}" if self.total else ""
        msg = f": {self.message}" if self.message else ""
        return f"[{self.stage}]{count}{msg}"


#: Stages that announce image work (loading models, SAM, CLIP on crops) before it starts.
IMAGE_WORK = ("loading models", "embedding", "proposals", "scoring")


def drain_cached(gen: Generator[Progress, Any, T]) -> T | None:
    """Run a segmentation generator only as far as its caches carry it.

    The engine announces every piece of image work with a progress event before
    starting it; at the first such event the generator is closed and None returned.
    Otherwise the result is returned, computed from caches alone (plus text encodings).
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if event.stage in IMAGE_WORK:
            gen.close()
            return None


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
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event)
