"""Progress events yielded by the engine's long-running generators.

Scripts drain the generators (:func:`~.generators.drain`); the napari widget wraps
them in a thread worker and turns each event into a progress-bar update. Yielding
between batches is also what makes cancelling prompt.

An event with ``heavy=True`` announces work on the image or the models (loading
weights, SAM's encoder or decoder, CLIP on crops) *before* it starts: whoever drains
a generator can stop there, which is how "no heavy work on the GUI thread" is kept
and checked.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The stages of one segmentation run, in the order they come (tiled runs report
#: "tiles" instead of "embedding" and "proposals"; stacks add "slice", batches "batch").
#: Progress bars show the stage's name; ``tests/core/test_run_config.py`` checks that a
#: run reports these and no others.
STAGES = ("loading models", "embedding", "proposals", "scoring", "relevance", "selection")


@dataclass(frozen=True)
class Progress:
    """One step of long work.

    Attributes
    ----------
    stage
        One of :data:`STAGES`, or of the other long work (``"tiles"``, ``"slice"``,
        ``"batch"``, ``"training"``, ...).
    done, total
        Units of work finished and expected in this stage (``total`` 0 if unknown).
    message
        A short human-readable line.
    heavy
        The work that follows this event is heavy (models or image work).
    """

    stage: str
    done: int = 0
    total: int = 0
    message: str = ""
    heavy: bool = False

    def __str__(self) -> str:
        count = f" {self.done}/{self.total}" if self.total else ""
        msg = f": {self.message}" if self.message else ""
        return f"[{self.stage}]{count}{msg}"

    def with_message(self, message: str) -> Progress:
        return Progress(self.stage, self.done, self.total, message, self.heavy)
