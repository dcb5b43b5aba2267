"""The widget's concept row: the saved concepts listed beside the prompt as
checkpoints are, and "Save concept..." for what the clicks taught (clicks:
:mod:`.edit_controls`; Find more and Ask me: :mod:`.suggest_controls`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, PushButton

from ..core.errors import SlipError
from .edit_controls import HINT
from .services import DockServices

CHOOSE = "choose a .concept file..."


class TeachingControls:
    """What the dock shows and binds for concepts and corrections.

    Parameters
    ----------
    dock
        The dock's shared parts (:class:`~.services.DockServices`).
    mode
        The selection mode field (a concept selects by its classes: distractors mode).
    on_change
        Called when the chosen concept changes (the dock shows what applies).
    """

    def __init__(self, dock: DockServices, mode, on_change) -> None:
        self.dock, self.mode, self.on_change = dock, mode, on_change
        self._files: list[str] = []
        self._loaded: dict[str, tuple[float, Any]] = {}
        self.concept = ComboBox(label="Concept", choices=self._choices, value=None)
        self.concept.tooltip = (
            "Find a saved concept (classes shown by examples) instead of the prompt's "
            "text; Save concept... keeps what your clicks taught."
        )
        self.save = PushButton(text="Save concept...")
        self.save.tooltip = HINT
        self.save.changed.connect(lambda *_: self.save_concept())
        # Qt's own signal: magicgui does not announce a change back to None.
        self.concept.native.currentIndexChanged.connect(
            lambda *_: self._on_choice(self.concept.value)
        )

    def widgets(self) -> list:
        return [self.concept, self.save]

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
        mode = self.mode
        if value is not None and value != CHOOSE and mode.value != "distractors":
            # A concept keeps what its classifier says: the distractors rule, over its
            # classes (the mode row is hidden); the user's mode comes back without one.
            self._mode, mode.value = mode.value, "distractors"
        elif value is None and getattr(self, "_mode", None):
            mode.value, self._mode = self._mode, None
        self.on_change()
        if value != CHOOSE:
            return
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getOpenFileName(
            self.dock.parent, "Concept", "", "napari-slip concept (*.concept)"
        )[0]
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

        teaching = self.dock.session.teaching
        try:
            if path is None:
                from qtpy.QtWidgets import QFileDialog

                folder = concept_dir()
                folder.mkdir(parents=True, exist_ok=True)
                last = self.dock.session.last
                name = last.request.prompt if last is not None else "concept"
                kinds = "napari-slip concept (*.concept)"
                start = str(folder / f"{name}.concept")
                path = QFileDialog.getSaveFileName(self.dock.parent, "Save concept", start, kinds)[
                    0
                ]
                if not path:
                    return None
            saved = teaching.save(path)
        except (SlipError, OSError) as exc:
            self.dock.show_error(exc)
            return None
        self.concept.reset_choices()
        self.dock.say(f"Saved the concept to {saved}.")
        return saved


__all__ = ["CHOOSE", "TeachingControls"]
