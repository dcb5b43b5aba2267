"""What the commands print on stderr: progress per stage, downloads, the outcome."""

from __future__ import annotations

import sys
import time

#: Stages whose every item gets a line in a log (not a terminal): images, planes, tiles.
LOGGED = ("batch", "slice", "tiles")


class StageProgress:
    """Progress on stderr: one bar per stage on a terminal, plain lines elsewhere.

    On a terminal the current stage's bar is redrawn in place with its rate and the
    time left; in a log file (not a terminal) each stage gets a line when it starts and
    one when it ends, never a line per batch.
    """

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.stage: str | None = None
        self.start = 0.0
        self.first = 0  # what was done before this stage began (a resumed batch)
        self.last = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _finish(self) -> None:
        if self.stage is None:
            return
        took = time.perf_counter() - self.start
        if self.tty:
            self._write("\n")
        else:
            self._write(f"napari-slip: {self.stage} done in {took:.1f} s\n")
        self.stage = None

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if event.stage != self.stage:
            self._finish()
            self.stage, self.start, self.first = event.stage, time.perf_counter(), event.done
            if not self.tty:
                what = f" ({event.message})" if event.message else ""
                self._write(f"napari-slip: {event.stage}{what}\n")
        elif (
            not self.tty
            and event.stage in LOGGED
            and self.last is not None
            and (event.done != self.last.done or event.message != self.last.message)
        ):  # a log of a long batch or stack: one line per image or plane, not silence
            self._write(f"napari-slip: {event.stage} {event.done}/{event.total} {event.message}\n")
        self.last = event
        if self.tty:
            elapsed = time.perf_counter() - self.start
            self._write("\r" + self.bar(event, elapsed, first=self.first) + "\033[K")

    @staticmethod
    def bar(event, elapsed: float, width: int = 24, first: int = 0) -> str:
        """``stage [#####.....] done/total  rate/s  ETA``; the rate counts what was done
        in this stage (``first``: done before it began, e.g. a resumed batch's skips)."""
        if not event.total:
            return f"{event.stage:<15} {event.message}"
        frac = min(max(event.done / event.total, 0.0), 1.0)
        filled = round(frac * width)
        rate = (event.done - first) / elapsed if elapsed > 0 else 0.0
        left = (event.total - event.done) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s left" if left == left else "--"
        return (
            f"{event.stage:<15} [{'#' * filled}{'.' * (width - filled)}] "
            f"{event.done}/{event.total}  {rate:.1f}/s  {eta}"
        )

    def close(self) -> None:
        self._finish()


def _progress_printer(quiet: bool) -> StageProgress:
    return StageProgress(quiet)


def _download_printer(quiet: bool):
    last = [-1]

    def show(done: int, total: int) -> None:
        if quiet:
            return
        pct = int(100 * done / total) if total else -1
        if pct != last[0] and (pct % 5 == 0 or pct < 0):
            last[0] = pct
            size = f"{done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else "")
            print(f"napari-slip [download] {size}", file=sys.stderr, flush=True)

    return show


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(result) -> str:
    """The run's outcome as a sentence."""
    n = result.n_objects
    prompt = result.provenance.get("prompt", "")
    if n:
        return f"Found {n} object{'s' if n != 1 else ''} matching {prompt!r}."
    reason = result.message_for("cli").split(": ", 1)[-1].rstrip(".")
    n_cand = len(result.candidate_table)
    best = (
        f" The best of {n_cand} candidates scored {result.candidate_table['score'].max():.3f}."
        if n_cand
        else ""
    )
    return f"Nothing found for {prompt!r}: {reason}.{best}"
