"""The dock's side of an image's axes (:mod:`.file_axes`): when the image changes, its
file's axes are adopted, or the assumption is said on the status line with a button
that switches it."""

from __future__ import annotations

from magicgui.widgets import PushButton

from .file_axes import adopt_file_axes, assumption, name_time
from .services import DockServices


class AxesControls:
    """The axes switch of the dock (one button, hidden unless an assumption can be
    switched).

    Parameters
    ----------
    dock
        The dock's shared parts (:class:`~.services.DockServices`: its status line).
    image, channel_axis
        The dock's Image and Channel axis fields.
    refresh
        Lists the layers again (a layer's axes changed what it offers).
    busy
        Whether the dock is running (its status line is then the run's).
    """

    def __init__(self, dock: DockServices, image, channel_axis, refresh, busy) -> None:
        self.dock, self.image, self.channel_axis = dock, image, channel_axis
        self.refresh, self.busy = refresh, busy
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
        layer = self.image.value
        read = adopt_file_axes(layer)
        if read is not None:
            self.channel_axis.reset_choices()
            self.refresh()
        guess = assumption(layer)
        self.switch.visible = guess is not None
        self._action = guess.action if guess is not None else ""
        if guess is not None:
            self.switch.text = guess.switch
        if self.busy():
            return
        if read is not None:
            self.dock.say(read)
        elif guess is not None:
            self.dock.say(guess.line)

    def _on_switch(self, *_args) -> None:
        layer = self.image.value
        if layer is None:
            return
        if self._action == "time":
            name_time(layer)
            self.refresh()
            self.dock.say("Axis 0 is time (t): objects are linked frame to frame into tracks.")
        elif self._action == "channels":
            self.channel_axis.reset_choices()
            self.channel_axis.value = 0
            self.dock.say("Axis 0 is channels: shown to the models as colours.")
        self.switch.visible = False


__all__ = ["AxesControls"]
