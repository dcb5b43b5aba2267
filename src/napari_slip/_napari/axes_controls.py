"""The dock's side of an image's axes (:mod:`.file_axes`): when the image changes, its
file's axes are adopted, or the assumption is said on the status line with a button
that switches it."""

from __future__ import annotations

from magicgui.widgets import PushButton

from .file_axes import adopt_file_axes, assumption, name_time


class AxesControls:
    """The axes switch of a :class:`~.widget.SlipWidget` (one button, hidden unless an
    assumption can be switched)."""

    def __init__(self, widget) -> None:
        self.widget = widget
        self.switch = PushButton(text="Axis 0 is read as Z: treat it as time")
        self.switch.visible = False
        self.switch.tooltip = "napari-slip assumed what the image's first axis is: switch it."
        self._action = ""
        self.switch.changed.connect(self._on_switch)

    def widgets(self) -> list:
        return [self.switch]

    def follow(self, *_args) -> None:
        """The image changed (the widget connects this after its own handlers): adopt
        its file's axes, or say what is assumed."""
        widget = self.widget
        layer = widget.image.value
        read = adopt_file_axes(layer)
        if read is not None:
            widget.channel_axis.reset_choices()
            widget.reset_choices()
        guess = assumption(layer)
        self.switch.visible = guess is not None
        self._action = guess.action if guess is not None else ""
        if guess is not None:
            self.switch.text = guess.switch
        if widget.busy:
            return
        if read is not None:
            widget.status.value = read
        elif guess is not None:
            widget.status.value = guess.line

    def _on_switch(self, *_args) -> None:
        widget = self.widget
        layer = widget.image.value
        if layer is None:
            return
        if self._action == "time":
            name_time(layer)
            widget.reset_choices()
            widget.status.value = (
                "Axis 0 is time (t): objects are linked frame to frame into tracks."
            )
        elif self._action == "channels":
            widget.channel_axis.reset_choices()
            widget.channel_axis.value = 0
            widget.status.value = "Axis 0 is channels: shown to the models as colours."
        self.switch.visible = False


__all__ = ["AxesControls"]
