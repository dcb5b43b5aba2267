"""The dock's channel settings: how a multichannel image becomes the models' RGB.

Channels napari shows as separate layers join the image as green and blue; a layer
with a channel axis gives up to three of its channels as R, G, B. Each field is shown
only where it can do something for the chosen image."""

from __future__ import annotations

from collections.abc import Callable

from magicgui.widgets import ComboBox, LineEdit

from . import form


class ChannelControls:
    """Green from, Blue from, Channel axis, Channels as RGB.

    Parameters
    ----------
    viewer
        The viewer whose Image layers are offered.
    image
        Returns the chosen Image layer (or None).
    """

    def __init__(self, viewer, image: Callable[[], object]) -> None:
        colours = lambda _w=None: form.colour_choices(viewer, image())  # noqa: E731
        self.green = ComboBox(label="Green from", choices=colours)
        self.blue = ComboBox(label="Blue from", choices=colours)
        self.channel_axis = ComboBox(
            label="Channel axis", choices=lambda _w=None: form.channel_axis_choices(image())
        )
        self.channels = LineEdit(label="Channels as RGB", value="")
        self.channels.native.setPlaceholderText("e.g. 0,2 (default: the first three)")

    def combos(self) -> list:
        """The fields whose choices follow the image."""
        return [self.channel_axis, self.green, self.blue]

    def update(self, layer) -> None:
        """Show each field only where it can do something for ``layer``."""
        single = layer is not None and not layer.rgb
        self.green.visible = single and len(self.green.choices) > 1
        self.blue.visible = self.green.visible and self.green.value is not None
        self.channel_axis.visible = any(c is not None for c in self.channel_axis.choices)
        self.channels.visible = self.channel_axis.value is not None

    def request_fields(self) -> dict:
        """The request's channel fields (see :class:`~.job.Request`)."""
        colours = (self.green.value, self.blue.value)
        return {
            "channel_axis": self.channel_axis.value,
            "channels": form.parse_channels(self.channels.value),
            "colour_layers": tuple(x for x in colours if x is not None),
        }


__all__ = ["ChannelControls"]
