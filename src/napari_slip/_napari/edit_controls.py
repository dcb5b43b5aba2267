"""Clicks that edit, the napari way: a viewer mouse callback and key binding, and one
queue of work run in napari's thread workers one job at a time, in order.

- Shift+click adds the object under the cursor; Shift+right-click removes the one
  there;
- Alt+click / Alt+right-click refine the picked object (napari's label picker) with a
  point inside / outside it; Alt+drag, with a box around it;
- Ctrl+Shift+click merges the object under the cursor into the picked one;
- two Ctrl+clicks inside one object split it between the two points;
- Shift+U (or Ctrl+Z on the Labels layer) undoes.

The GUI thread only maps the click to a pixel and writes the computed edit
(:class:`~.teaching.Teaching`); SAM, CLIP and the measurements run in the worker:
SAM's decode first (its pixels are written as soon as it is done), then CLIP and the
measurements (the table follows, the example is taught), before the next click.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

from magicgui.widgets import LineEdit

from ..core.errors import InputError, SlipError
from .layers import camera_of
from .services import DockServices, DockWork

#: The key that undoes the last edit (napari's key-binding syntax); Ctrl+Z on the
#: Labels layer does the same (napari's own undo: each edit is one step).
UNDO_KEY = "Shift-U"
HINT = "Shift+click adds the object under the cursor (Shift+drag: the one in a box); "
HINT += "Shift+right-click removes one; "
HINT += "Alt+click / Alt+right-click / Alt+drag refine the picked object (a point inside, "
HINT += "outside, a box); "
HINT += "Ctrl+Shift+click merges an object into the picked one; two Ctrl+clicks split one; "
HINT += f"{UNDO_KEY.replace('-', '+')} or Ctrl+Z undoes. Only the clicked object changes; "
HINT += "each click is an example for the class below."
#: Jobs waiting for the worker at most (more clicks are ignored, with a line).
MAX_QUEUED = 32
#: What the status says while a click's edit is computed.
DOING = {"add": "Adding the object…", "remove": "Removing the object…", "split": "Splitting…"}
#: A job still running after this many milliseconds shows the busy bar and what it does;
#: a click answered sooner shows neither (they would only flash, and repainting the dock
#: while SAM decodes slowed the decode by a fifth on 2 cores).
BUSY_AFTER_MS = 150


class EditControls:
    """The clicks' bindings, the class they teach, and the queue of work."""

    def __init__(self, dock: DockServices, work: DockWork, examples) -> None:
        self.dock, self.work, self.viewer = dock, work, dock.viewer
        self.teach_class = LineEdit(label="Clicks teach")
        self.teach_class.tooltip = (
            "The class Shift+clicks add examples of (default: the prompt). Type another "
            "name to teach a concept of several classes; Save concept... keeps them."
        )
        self.teach_class.native.setPlaceholderText("the prompt")
        #: The results panel's line of what was taught.
        self.examples = examples
        self.examples.tooltip = HINT
        self._queue: deque = deque()
        self._worker: Any = None
        self._split_from: tuple | None = None
        self._followed: Any = None
        self._measuring = False
        self._doing = ""  # what the running job does, said once it takes long
        from qtpy.QtCore import QTimer

        self._busy_timer = QTimer(dock.parent)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.timeout.connect(self._show_busy)
        work.add_busy(lambda: self.editing)  # a run waits for the edits
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self.viewer.bind_key(UNDO_KEY, self._on_undo, overwrite=True)
        dock.parent.destroyed.connect(lambda *_: self.detach())

    def widgets(self) -> list:
        return [self.teach_class]

    def detach(self) -> None:
        """Unbind from the viewer (the dock is closed)."""
        callbacks = self.viewer.mouse_drag_callbacks
        if self._on_mouse in callbacks:
            callbacks.remove(self._on_mouse)
        from napari.utils.key_bindings import coerce_keybinding

        if self.viewer.keymap.get(coerce_keybinding(UNDO_KEY)) == self._on_undo:
            self.viewer.bind_key(UNDO_KEY, None)

    # -- the queue ------------------------------------------------------------------------
    @property
    def editing(self) -> bool:
        """Whether an edit (or a suggestion) is being computed or waits its turn."""
        return self._worker is not None or bool(self._queue)

    def submit(
        self,
        start: Callable[[], Generator | None],
        done: Callable,
        status: str,
        first: bool = False,
    ) -> bool:
        """Queue a job: ``start()`` (on the GUI thread, when its turn comes) returns the
        generator the worker drains (None: nothing to do), ``done(result)`` takes its
        result on the GUI thread; ``first``: before the jobs waiting (the second step of
        the job just done). False when too many jobs wait."""
        if first:
            self._queue.appendleft((start, done, status))
        elif len(self._queue) >= MAX_QUEUED:
            self.dock.say("Too many clicks waiting: this one was ignored.")
            return False
        else:
            self._queue.append((start, done, status))
        self._next()
        return True

    def _next(self) -> None:
        from napari.qt.threading import create_worker

        while self._worker is None and self._queue:
            start, done, status = self._queue.popleft()
            try:
                work = start()
            except SlipError as exc:
                self.dock.show_error(exc)
                continue
            if work is None:
                continue
            handlers = {"returned": done, "errored": self._failed, "finished": self._finished}
            self._worker = create_worker(_drained, work, _start_thread=False, _connect=handlers)
            self._doing = status
            self._busy_timer.start(BUSY_AFTER_MS)
            self._worker.start()

    def _show_busy(self) -> None:
        """The running job takes long: say what it does, with a moving bar."""
        if self._worker is not None:
            self.dock.say(self._doing)
            self.work.progress.native.setRange(0, 0)  # busy: a moving bar

    def _failed(self, exc: BaseException) -> None:
        from ..core.edits import NothingToDo

        if isinstance(exc, NothingToDo):  # one line, no alarm: nothing changed
            self.dock.say(str(exc))
        else:
            self.dock.show_error(exc)

    def _finished(self) -> None:
        self._worker = None
        self._busy_timer.stop()
        if self.work.progress.native.maximum() == 0:  # the busy bar was shown
            self.work.progress.native.setRange(0, 1)
            self.work.reset_progress()
        self._next()

    # -- clicks and keys ------------------------------------------------------------------
    def _on_mouse(self, viewer, event):
        """A napari drag callback: a click edits at once; a Shift+drag draws a box (the
        camera does not pan meanwhile) whose object is added on release."""
        if event.button not in (1, 2):
            return
        kind = _kind(event.modifiers, event.button)
        if kind is None or self.work.running() or self.dock.session.last is None:
            return  # not ours, or an edit during a run: ignored (the run replaces it)
        start = tuple(event.position)
        end = start
        if kind in ("add", "inside"):  # a drag draws a box: to add, or to refine
            camera = camera_of(viewer)
            panning, camera.mouse_pan = camera.mouse_pan, False
            try:
                yield
                while event.type == "mouse_move":
                    end = tuple(event.position)
                    yield
                end = tuple(event.position)
            finally:
                camera.mouse_pan = panning
        if kind in ("add", "inside") and _dragged(viewer, start, end):
            box = "box" if kind == "add" else "refine_box"
            status = DOING["add"] if kind == "add" else "Refining the picked object…"
            self.submit(lambda: self._start_box(box, start, end), self.written, status)
            return
        status = DOING.get(kind, "Editing the picked object…")
        self.submit(
            lambda: self._start(kind, start), partial(self.written, position=start), status
        )

    def _start_box(self, kind: str, start: tuple, end: tuple):
        session = self.dock.session
        teaching = session.teaching
        plane, y0, x0 = teaching.prepare(start)
        _, y1, x1 = teaching.prepare(end)
        teaching.class_name = self.teach_class.value.strip() or None
        label = int(session.last.layer.selected_label) if session.last.layer is not None else 0
        return teaching.iter_edit(kind, plane, y1, x1, label, first=(y0, x0))

    def _start(self, kind: str, position: tuple):
        """A click's turn: the pixel, the picked object and the class, read here."""
        session = self.dock.session
        plane, y, x = session.teaching.prepare(position)
        if kind == "split" and self._split_from is None:
            self._split_from = (plane, y, x)
            self.dock.say("Ctrl+click a second point inside the object to split.")
            return None
        first = None
        if kind == "split":
            (first_plane, *first), self._split_from = self._split_from, None
            if first_plane != plane:
                raise InputError("The two split points are on different planes: click one.")
        layer = session.last.layer
        label = int(layer.selected_label) if layer is not None else 0
        teaching = session.teaching
        teaching.class_name = self.teach_class.value.strip() or None
        return teaching.iter_edit(kind, plane, y, x, label, tuple(first) if first else None)

    def written(self, made, position=None) -> None:
        """Write a decoded edit's pixels at once (the status says what changed), then
        describe it in the worker before the next click: the table and the example
        follow."""
        teaching = self.dock.session.teaching
        try:
            result = teaching.apply(made)
        except SlipError as exc:
            self.dock.show_error(exc)
            return
        self.dock.say(result.message)

        def described(out) -> None:
            result = teaching.show_described(*out)
            if result is not None:
                if position is not None:  # the click's point, once the pixels show
                    teaching.mark(position, made.kind)
                self.shown(result)

        start = partial(teaching.iter_describe, made)
        measuring = f"{result.message} Measuring it…"  # the edit stays said meanwhile
        self.submit(start, described, measuring, first=True)

    def apply_result(self, out, position=None) -> None:
        """Write a computed and described edit (the worker's ``(edit, table)``) and
        show it."""
        try:
            result = self.dock.session.teaching.apply(*out, position)
        except SlipError as exc:
            self.dock.show_error(exc)
            return
        self.shown(result)

    def _on_undo(self, viewer=None) -> None:
        if self.work.busy():
            return
        if self.dock.session.undo_correction() is not None:
            self.update()

    def shown(self, result) -> None:
        """A result after an edit: the status, the panel, the examples line."""
        self.work.show_outcome(result, self.dock.session.last.request)
        self.update()

    # -- napari's own brush -------------------------------------------------------------
    def follow(self, layer) -> None:
        """Measure the table again after each brush stroke, fill or erase on ``layer``
        (the output), in the worker; the run's columns follow the pixels."""
        if layer is self._followed:
            return
        if self._followed is not None:
            self._followed.events.paint.disconnect(self._on_paint)
            self._followed.events.set_data.disconnect(self._on_set_data)
        self._followed = layer
        if layer is not None:
            layer.events.paint.connect(self._on_paint)
            layer.events.set_data.connect(self._on_set_data)

    def _on_set_data(self, _event=None) -> None:
        """napari's Ctrl+Z / Ctrl+Shift+Z (a refresh of the layer): the examples of
        edits undone leave the concept, those redone come back."""
        if not self.editing and self.dock.session.teaching.follow_undo():
            self.update()

    def _on_paint(self, _event=None) -> None:
        teaching = self.dock.session.teaching
        last = self.dock.session.last
        if teaching.writing or last is None:
            return  # our own edit: measured already
        last.edited = True
        if self._measuring:
            return  # a measurement is due already
        self._measuring = True

        def start():
            self._measuring = False  # a stroke from now on is measured again after
            return teaching.iter_measure()

        def done(table) -> None:
            result = teaching.show_table(table)
            if result is not None:
                self.work.show_outcome(result, self.dock.session.last.request)

        self.submit(start, done, "Measuring the objects…")

    def update(self) -> None:
        """The examples line: what has been taught, and how to teach."""
        last = self.dock.session.last
        self.follow(last.layer if last is not None and last.created else None)
        summary = self.dock.session.teaching.summary
        self.examples.value = (
            summary or "Shift+click adds an object, Shift+right-click removes one."
        )


def _dragged(viewer, start: tuple, end: tuple) -> bool:
    """Whether the mouse moved a few screen pixels between press and release."""
    zoom = camera_of(viewer).zoom  # screen pixels per world unit
    moved = max(abs(a - b) for a, b in zip(start[-2:], end[-2:], strict=True))
    return moved * zoom >= 4


def _drained(work: Generator):
    """The worker's generator function: ``work``'s events, then its result."""
    return (yield from work)


def _kind(modifiers, button: int) -> str | None:
    """The edit a click with ``modifiers`` and ``button`` (1 left, 2 right) asks for."""
    shift, ctrl, alt = "Shift" in modifiers, "Control" in modifiers, "Alt" in modifiers
    if ctrl and shift:
        return "merge" if button == 1 else None
    if ctrl:
        return "split" if button == 1 else None
    if shift:
        return "add" if button == 1 else "remove"
    if alt:
        return "inside" if button == 1 else "outside"
    return None


__all__ = ["HINT", "UNDO_KEY", "EditControls"]
