"""The concept your clicks taught, asked on purpose: **Find more like these** (a
preview of what it would add and remove, applied or discarded in one step) and **Ask
me** (the candidates it is least sure about, one by one: Y yes, N no, Esc stop; each
answer is an example). The work runs in the clicks' queue (:mod:`.edit_controls`).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, PushButton

from ..core.errors import SlipError
from .services import DockServices, DockWork

#: How many candidates Ask me asks about at most, and its keys.
QUESTIONS = 10
YES, NO, STOP = "Y", "N", "Escape"


class SuggestControls:
    """Find more like these, Apply / Discard, Ask me."""

    def __init__(self, dock: DockServices, work: DockWork, edits) -> None:
        self.dock, self.work, self.edits, self.viewer = dock, work, edits, dock.viewer
        self.more = PushButton(text="More like these")
        self.more.tooltip = (
            "Find more like these: what the concept your clicks taught would add and "
            "remove, shown as an outline over the labels; nothing changes until Apply."
        )
        self.apply_more = PushButton(text="Apply")
        self.apply_more.tooltip = "Apply the suggestion in one step (Ctrl+Z undoes it)."
        self.discard_more = PushButton(text="Discard")
        self.ask_button = PushButton(text="Ask me")
        self.ask_button.tooltip = (
            f"Show the objects the concept is least sure about, one by one: {YES} yes "
            f"(added), {NO} no (remembered as not this), {STOP} stops."
        )
        self.more.changed.connect(lambda *_: self.find_more())
        self.apply_more.changed.connect(lambda *_: self.apply_suggestion())
        self.discard_more.changed.connect(lambda *_: self.discard_suggestion())
        self.ask_button.changed.connect(lambda *_: self.ask())
        buttons = [self.more, self.ask_button, self.apply_more, self.discard_more]
        self.row = Container(widgets=buttons, layout="horizontal", labels=False)
        self.row.margins = (0, 0, 0, 0)
        self.questions: list[Any] = []
        self._keys: dict[str, Any] = {}
        self.update()

    def widgets(self) -> list:
        return [self.row]

    def update(self) -> None:
        """Apply and Discard while a suggestion is shown; Find more and Ask me otherwise."""
        shown = self.dock.session.suggestions.suggestion is not None
        self.apply_more.visible = self.discard_more.visible = shown
        self.more.visible = self.ask_button.visible = not shown

    # -- find more --------------------------------------------------------------------------
    def find_more(self) -> None:
        """Compute the concept's suggestion in a worker, then show it."""
        if self.work.running():
            return
        suggestions = self.dock.session.suggestions
        self.edits.submit(suggestions.iter_find_more, self._suggested, "Finding more like these…")

    def _suggested(self, out) -> None:
        suggestion, table = out
        self.dock.session.suggestions.show(suggestion, table)
        self.update()
        self.dock.say(f"{suggestion.message} Apply or Discard.")

    def apply_suggestion(self) -> None:
        if self.work.running():
            return
        try:
            result = self.dock.session.suggestions.apply()
        except SlipError as exc:
            self.dock.show_error(exc)
            result = None
        self.update()
        if result is not None:
            self.edits.shown(result)

    def discard_suggestion(self) -> None:
        self.dock.session.suggestions.discard()
        self.update()
        self.dock.say("Suggestion discarded: nothing changed.")

    # -- ask me -----------------------------------------------------------------------------
    def ask(self) -> None:
        """Find the least sure candidates in a worker, then ask about the first."""
        if self.work.running():
            return
        suggestions = self.dock.session.suggestions
        self.edits.submit(lambda: suggestions.iter_ask(QUESTIONS), self._asked, "Asking…")

    def _asked(self, questions) -> None:
        self.questions = list(questions)
        for key, answer in ((YES, True), (NO, False)):
            self._keys[key] = self.viewer.keymap.get(key)
            self.viewer.bind_key(key, lambda _v, a=answer: self.answer(a), overwrite=True)
        self._keys[STOP] = self.viewer.keymap.get(STOP)
        self.viewer.bind_key(STOP, lambda _v: self.stop(), overwrite=True)
        self._show()

    def _show(self) -> None:
        if not self.questions:
            return self.stop("No more questions.")
        question, session = self.questions[0], self.dock.session
        name = session.teaching.editor.class_name or "one of them"
        keys = f"{YES} yes, {NO} no, {STOP} stop"
        session.suggestions.show_question(question, f"question: {name}?")
        self.dock.say(f"Is this {name}? (p = {question.probability:.2f}) {keys}.")
        return None

    def answer(self, yes: bool) -> None:
        """The shown candidate is (``yes``) or is not an object of the class."""
        if not self.questions or self.edits.editing:
            return
        question, suggestions = self.questions.pop(0), self.dock.session.suggestions
        suggestions.discard()
        status = "Adding it…" if yes else "Remembering: not this."
        self.edits.submit(lambda: suggestions.iter_answer(question, yes), self._answered, status)

    def _answered(self, out) -> None:
        self.edits.apply_result(out)
        self._show()

    def stop(self, message: str = "Stopped asking.") -> None:
        """No more questions: the keys are given back, the outline goes."""
        self.questions = []
        for key, previous in self._keys.items():
            self.viewer.bind_key(key, previous, overwrite=True)
        self._keys = {}
        self.dock.session.suggestions.discard()
        self.dock.say(message)


__all__ = ["QUESTIONS", "SuggestControls"]
