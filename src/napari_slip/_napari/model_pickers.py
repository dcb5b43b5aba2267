"""The dock's model pickers: SAM, CLIP (known names, files, folders of fine-tuned
checkpoints), the trained decoder and the device. Files chosen or saved in this
session are offered beside the known names; a decoder switches to the CLIP it was
trained on where that CLIP can be had here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import ComboBox

from ..core.errors import SlipError
from ..core.models.registry import available_devices
from ..core.params import DEFAULT_CLIP, DEFAULT_SAM
from . import form
from .choices import (
    ADD_FOLDER,
    CHOOSE_FILE,
    OfferedFiles,
    ask_clip_choice,
    ask_file,
    clip_choices,
    clip_tooltip,
    decoder_choices,
    decoder_tooltip,
    events,
    offer,
)


class ModelPickers:
    """The SAM, CLIP, decoder and device pickers of a dock.

    Parameters
    ----------
    parent
        The Qt widget file dialogs open over.
    say
        Shows one line to the user (the dock's status).
    """

    def __init__(self, parent, say: Callable[[str], None]) -> None:
        self.parent, self.say = parent, say
        self.files = OfferedFiles()
        self.sam = ComboBox(label="SAM", choices=self._sam_choices, value=DEFAULT_SAM)
        self.clip = ComboBox(label="CLIP", choices=self._clip_choices, value=DEFAULT_CLIP)
        self.decoder = ComboBox(label="Decoder", choices=self._decoder_choices, value=None)
        self.device = ComboBox(label="Device", choices=available_devices(), value="auto")
        self.clip.tooltip = clip_tooltip(self.clip.value)
        self.decoder.tooltip = decoder_tooltip(self.decoder.value)
        self.sam.changed.connect(self._on_sam_choice)
        self.clip.changed.connect(self._on_clip_choice)
        self.clip.changed.connect(lambda v: setattr(self.clip, "tooltip", clip_tooltip(v)))
        self.decoder.changed.connect(self._on_decoder_choice)
        events.checkpoint_saved.connect(self._on_checkpoint_saved)
        parent.destroyed.connect(
            lambda *_: events.checkpoint_saved.disconnect(self._on_checkpoint_saved)
        )

    def _sam_choices(self, _widget=None):
        return form.sam_choices(self.files.sam)

    def _clip_choices(self, _widget=None):
        return clip_choices(self.files.clip, self.files.clip_folders)

    def _decoder_choices(self, _widget=None):
        return decoder_choices(self.files.decoder, self.files.clip_folders)

    def _on_checkpoint_saved(self, _path: str) -> None:
        self.clip.reset_choices()
        self.decoder.reset_choices()

    def add_sam_file(self, path: str | Path) -> None:
        """Offer a SAM checkpoint file in the SAM picker and select it."""
        offer(self.sam, self.files.sam, path)

    def add_clip_file(self, path: str | Path) -> None:
        """Offer a CLIP checkpoint file in the CLIP picker and select it."""
        offer(self.clip, self.files.clip, path)

    def add_checkpoint_folder(self, folder: str | Path) -> None:
        """Scan another folder for fine-tuned CLIP checkpoints and trained decoders."""
        offer(self.clip, self.files.clip_folders, folder, select=False)
        self.decoder.reset_choices()

    def add_decoder_file(self, path: str | Path) -> None:
        """Offer a trained decoder file in the decoder picker and select it."""
        offer(self.decoder, self.files.decoder, path)

    def _on_decoder_choice(self, value) -> None:
        self.decoder.tooltip = decoder_tooltip(value)
        self.match_decoder_clip(value)  # the CLIP it was trained on, where it is here
        if value == CHOOSE_FILE:
            path = ask_file(self.parent, "Trained decoder", "napari-slip decoder (*.safetensors)")
            self.add_decoder_file(path) if path else setattr(self.decoder, "value", None)

    def _on_sam_choice(self, value) -> None:
        if value == CHOOSE_FILE:
            kinds = "Checkpoints (*.pth *.pt *.safetensors)"
            path = ask_file(self.parent, "SAM checkpoint", kinds)
            self.add_sam_file(path) if path else setattr(self.sam, "value", DEFAULT_SAM)

    def _on_clip_choice(self, value) -> None:
        if value not in (CHOOSE_FILE, ADD_FOLDER):
            return
        chosen = ask_clip_choice(self.parent, value)
        if chosen is not None and chosen[0] == "file":
            self.add_clip_file(chosen[1])
            return
        if chosen is not None:
            self.add_checkpoint_folder(chosen[1])
        self.clip.value = DEFAULT_CLIP

    def match_decoder_clip(self, value) -> None:
        """A decoder names the CLIP it was trained on: switch to that CLIP where it can
        be had here (a name in the list, or its file), and say so; else say which it
        needs."""
        from ..core.models.decoder import read_decoder_metadata

        if not (isinstance(value, str) and value.endswith(".safetensors")):
            return
        try:
            spec = read_decoder_metadata(value).get("clip_spec")
        except SlipError:
            return
        if not spec or spec == self.clip.value:
            return
        if spec in self.clip.choices:
            self.clip.value = spec
        elif Path(spec).is_file():
            self.add_clip_file(spec)
        else:
            self.say(
                f"This decoder was trained on CLIP {spec}, which is not here: add its file "
                "with 'Choose a file…' in the CLIP list."
            )
            return
        self.say(f"CLIP switched to {Path(spec).name}: the decoder was trained on it.")


__all__ = ["ModelPickers"]
