"""The widget's concept row and the clicks that teach, the napari way: a viewer mouse
callback (Shift+click adds the object under the cursor, Shift+right-click removes the
label there), a viewer key binding (Shift+U undoes the last correction), the saved
concepts listed beside the prompt as checkpoints are, and "Save concept...".
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, PushButton

from ..core.errors import SlipError

#: The key that undoes the last edit (napari's key-binding syntax); Ctrl+Z on the
#: Labels layer does the same (napari's own undo: each edit is one step).
UNDO_KEY = "Shift-U"
HINT = "Shift+click adds the object under the cursor; Shift+right-click removes one; "
HINT += "Alt+click / Alt+right-click refine the picked object with a point inside / outside; "
HINT += f"{UNDO_KEY.replace('-', '+')} or Ctrl+Z undoes. Only the clicked object changes; "
HINT += "each click is an example for the concept."
#: Clicks waiting for their edit at most (more are ignored, with a line).
MAX_QUEUED = 32
CHOOSE = "choose a .concept file..."


class TeachingControls:
    """What the dock shows and binds for concepts and corrections."""

    def __init__(self, widget) -> None:
        self.widget, self.viewer = widget, widget.viewer
        self._files: list[str] = []
        self._loaded: dict[str, tuple[float, Any]] = {}
        self.concept = ComboBox(label="Concept", choices=self._choices, value=None)
        self.concept.tooltip = (
            "Find a saved concept (classes shown by examples) instead of the prompt's "
            "text; Save concept... keeps what your clicks taught."
        )
        self.save = PushButton(text="Save concept...")
        self.save.tooltip = HINT
        #: The results panel's line of what was taught.
        self.examples = widget.results.examples
        self.examples.tooltip = HINT
        self.save.changed.connect(lambda *_: self.save_concept())
        # Qt's own signal: magicgui does not announce a change back to None.
        self.concept.native.currentIndexChanged.connect(
            lambda *_: self._on_choice(self.concept.value)
        )
        self._queue: deque = deque()
        self._worker: Any = None
        widget.busy_parts.append(lambda: self.editing)  # a run waits for the edits
        self._more_widgets()
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self.viewer.bind_key(UNDO_KEY, self._on_undo, overwrite=True)
        widget.native.destroyed.connect(lambda *_: self.detach())

    def widgets(self) -> list:
        return [self.concept, self.save, self.more_row]

    def _more_widgets(self) -> None:
        """Find more like these, and the Apply / Discard of its suggestion."""
        from magicgui.widgets import Container

        self.more = PushButton(text="Find more like these")
        self.more.tooltip = (
            "Show what the concept your clicks taught would add and remove (an outline "
            "over the labels); nothing changes until you press Apply."
        )
        self.apply_more = PushButton(text="Apply")
        self.apply_more.tooltip = "Apply the suggestion in one step (Ctrl+Z undoes it)."
        self.discard_more = PushButton(text="Discard")
        self.more.changed.connect(lambda *_: self.find_more())
        self.apply_more.changed.connect(lambda *_: self.apply_suggestion())
        self.discard_more.changed.connect(lambda *_: self.discard_suggestion())
        buttons = [self.more, self.apply_more, self.discard_more]
        self.more_row = Container(widgets=buttons, layout="horizontal", labels=False)
        self.more_row.margins = (0, 0, 0, 0)
        self._offer(False)

    def _offer(self, shown: bool) -> None:
        """Apply and Discard while a suggestion is shown; Find more otherwise."""
        self.apply_more.visible = self.discard_more.visible = shown
        self.more.visible = not shown

    def find_more(self) -> None:
        """Compute the concept's suggestion in a worker, then show it."""
        from napari.qt.threading import create_worker

        if self.widget.busy:
            return
        teaching = self.widget.session.teaching
        handlers = {
            "returned": self._suggested,
            "errored": self._failed,
            "finished": self._finished,
        }
        self._worker = create_worker(
            teaching.iter_find_more, _start_thread=False, _connect=handlers
        )
        self.widget.status.value = "Finding more like these…"
        self.widget.progress.native.setRange(0, 0)
        self._worker.start()

    def _suggested(self, out) -> None:
        suggestion, table = out
        self.widget.session.teaching.show_suggestion(suggestion, table)
        self._offer(True)
        self.widget.status.value = f"{suggestion.message} Apply or Discard."

    def apply_suggestion(self) -> None:
        if self.widget.running:
            return
        try:
            result = self.widget.session.teaching.apply_suggestion()
        except SlipError as exc:
            self.widget.show_error(exc)
            result = None
        self._offer(False)
        if result is not None:
            self._shown(result)

    def discard_suggestion(self) -> None:
        self.widget.session.teaching.discard_suggestion()
        self._offer(False)
        self.widget.status.value = "Suggestion discarded: nothing changed."

    def detach(self) -> None:
        """Unbind from the viewer (the dock is closed)."""
        callbacks = self.viewer.mouse_drag_callbacks
        if self._on_mouse in callbacks:
            callbacks.remove(self._on_mouse)
        from napari.utils.key_bindings import coerce_keybinding

        if self.viewer.keymap.get(coerce_keybinding(UNDO_KEY)) == self._on_undo:
            self.viewer.bind_key(UNDO_KEY, None)

    # -- the concept to run with ------------------------------------------------------
    def _choices(self, _widget=None):
        from ..core.concepts.files import saved_concepts

        saved = [(p.stem, str(p)) for p in saved_concepts()]
        known = {v for _, v in saved}
        files = [(Path(f).name, f) for f in self._files if f not in known]
        return [("none: the prompt's text", None), *saved, *files, (CHOOSE, CHOOSE)]

    def chosen_name(self) -> str | None:
        """The chosen concept file, or None (the prompt's text is used)."""
        value = self.concept.value
        return None if value in (None, CHOOSE) else value

    def _on_choice(self, value) -> None:
        mode = self.widget.mode
        if value is not None and value != CHOOSE and mode.value != "distractors":
            # A concept keeps what its classifier says: the distractors rule, over its
            # classes (the mode row is hidden); the user's mode comes back without one.
            self._mode, mode.value = mode.value, "distractors"
        elif value is None and getattr(self, "_mode", None):
            mode.value, self._mode = self._mode, None
        self.widget._update_visibility()
        if value != CHOOSE:
            return
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getOpenFileName(self.widget.native, "Concept", "",
                                           "napari-slip concept (*.concept)")[0]  # fmt: skip
        self.add_file(path) if path else setattr(self.concept, "value", None)

    def add_file(self, path) -> None:
        """Offer a concept file in the Concept picker and select it."""
        path = str(path)
        if path not in self._files:
            self._files.append(path)
        self.concept.reset_choices()
        self.concept.value = path

    def chosen(self):
        """The chosen concept (read once per file version), or None."""
        value = self.chosen_name()
        if value is None:
            return None
        from ..core.concepts import Concept

        mtime = Path(value).stat().st_mtime if Path(value).is_file() else -1.0
        cached = self._loaded.get(value)
        if cached is None or cached[0] != mtime:
            cached = (mtime, Concept.load(value))
            self._loaded[value] = cached
        return cached[1]

    def save_concept(self, path=None) -> Path | None:
        """Save what was taught (``path`` None: ask, in the cache's concepts folder)."""
        from ..core.concepts.files import concept_dir

        teaching = self.widget.session.teaching
        try:
            if path is None:
                from qtpy.QtWidgets import QFileDialog

                folder = concept_dir()
                folder.mkdir(parents=True, exist_ok=True)
                last = self.widget.session.last
                name = last.request.prompt if last is not None else "concept"
                kinds = "napari-slip concept (*.concept)"
                start = str(folder / f"{name}.concept")
                path = QFileDialog.getSaveFileName(self.widget.native, "Save concept", start,
                                                   kinds)[0]  # fmt: skip
                if not path:
                    return None
            saved = teaching.save(path)
        except (SlipError, OSError) as exc:
            self.widget.show_error(exc)
            return None
        self.concept.reset_choices()
        self.widget.status.value = f"Saved the concept to {saved}."
        return saved

    # -- clicks and keys ----------------------------------------------------------------
    @property
    def editing(self) -> bool:
        """Whether a click's edit is being computed or waits its turn."""
        return self._worker is not None or bool(self._queue)

    def _on_mouse(self, viewer, event) -> None:
        if event.button not in (1, 2):
            return
        if "Shift" in event.modifiers:
            kind = "add" if event.button == 1 else "remove"
        elif "Alt" in event.modifiers:  # a point for the picked object: refine it
            kind = "inside" if event.button == 1 else "outside"
        else:
            return
        if self.widget.running or self.widget.session.last is None:
            return  # an edit during a run: ignored (the run replaces the result)
        if len(self._queue) >= MAX_QUEUED:
            self.widget.status.value = "Too many clicks waiting: this one was ignored."
            return
        self._queue.append((kind, tuple(event.position)))
        self._next()

    def _next(self) -> None:
        """Start the next queued click's edit in a worker (one at a time, in order)."""
        from napari.qt.threading import create_worker

        if self._worker is not None or not self._queue:
            return
        kind, position = self._queue.popleft()
        teaching = self.widget.session.teaching
        try:
            plane, y, x = teaching.prepare(position)
        except SlipError as exc:
            self.widget.show_error(exc)
            return self._next()
        layer = self.widget.session.last.layer
        label = int(layer.selected_label) if layer is not None else 0
        handlers = {
            "returned": lambda out: self._apply(out, position),
            "errored": self._failed,
            "finished": self._finished,
        }
        args = (kind, plane, y, x, label)
        self._worker = create_worker(
            teaching.iter_edit, *args, _start_thread=False, _connect=handlers
        )
        doing = {"add": "Adding the object…", "remove": "Removing the object…"}
        self.widget.status.value = doing.get(kind, f"Refining object {label}…")
        self.widget.progress.native.setRange(0, 0)  # busy: a moving bar
        self._worker.start()

    def _apply(self, out, position) -> None:
        try:
            result = self.widget.session.teaching.apply(*out, position)
        except SlipError as exc:
            self.widget.show_error(exc)
            return
        self._shown(result)

    def _failed(self, exc: BaseException) -> None:
        from ..core.edits import NothingToDo

        if isinstance(exc, NothingToDo):  # one line, no alarm: nothing changed
            self.widget.status.value = str(exc)
        else:
            self.widget.show_error(exc)

    def _finished(self) -> None:
        self._worker = None
        self.widget.progress.native.setRange(0, 1)
        self.widget.reset_progress()
        self._next()

    def _on_undo(self, viewer=None) -> None:
        if self.widget.busy:
            return
        result = self.widget.session.undo_correction()
        if result is not None:
            self.update()

    def _shown(self, result) -> None:
        self.widget.show_outcome(result, self.widget.session.last.request)
        self.update()

    def update(self) -> None:
        """The examples line: what has been taught, and how to teach; Find more or the
        shown suggestion's Apply / Discard."""
        self._offer(self.widget.session.teaching.suggestion is not None)
        summary = self.widget.session.teaching.summary
        self.examples.value = (
            summary or "Shift+click adds an object, Shift+right-click removes one."
        )


__all__ = ["CHOOSE", "HINT", "UNDO_KEY", "TeachingControls"]
