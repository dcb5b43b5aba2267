"""Model pickers shared by the widgets, and the signal that new checkpoints exist."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from ..core.models.listing import describe_checkpoint, find_clip_checkpoints
from ..core.models.registry import CLIP_PRETRAINED

CHOOSE_FILE = "__choose_file__"
ADD_FOLDER = "__add_folder__"


class _Events:
    #: Emitted with the path of a checkpoint written by the fine-tuning widget, so
    #: every CLIP picker rescans.
    checkpoint_saved = Signal(str)


events = _Events()


def clip_choices(files: list[str], folders: list[str]) -> list[tuple[str, str]]:
    """(label, value) pairs: pretrained names, found checkpoints (short names; what
    they learned is in :func:`clip_tooltip`), files added by hand, then the "choose"
    entries."""
    from ..core.models.hubclip import HUB_CLIPS

    choices = [(spec, spec) for spec in CLIP_PRETRAINED] + [(n, n) for n in HUB_CLIPS]
    for path, _meta in find_clip_checkpoints(folders):
        choices.append((path.stem, str(path)))
    known = {value for _, value in choices}
    choices += [(Path(p).name, p) for p in files if p not in known]
    return [*choices, ("Choose a file…", CHOOSE_FILE), ("Add a checkpoint folder…", ADD_FOLDER)]


def clip_tooltip(value) -> str:
    """What a CLIP choice is: the open_clip name, or what a checkpoint learned."""
    from ..core.errors import SlipError
    from ..core.models.clip import read_clip_metadata
    from ..core.models.hubclip import HUB_CLIPS

    if value in HUB_CLIPS:
        return HUB_CLIPS[value].description
    text = "open_clip MODEL:TAG, a fine-tuned checkpoint, or a file."
    if isinstance(value, str) and value.endswith(".safetensors"):
        try:
            return f"{value}\n{describe_checkpoint(read_clip_metadata(value))}"
        except SlipError:
            return value
    return f"{value}: {text}" if isinstance(value, str) and ":" in value else text


def decoder_choices(files: list[str], folders: list[str]) -> list[tuple[str, object]]:
    """(label, value) pairs of the decoder picker: none (CLIP's untrained map), the
    trained decoders found in the checkpoint folders, files added by hand, "choose"."""
    from ..core.models.listing import find_decoders

    choices: list[tuple[str, object]] = [("none (CLIP's untrained map)", None)]
    for path, _meta in find_decoders(folders):
        choices.append((path.stem, str(path)))
    known = {value for _, value in choices}
    choices += [(Path(p).name, p) for p in files if p not in known]
    return [*choices, ("Choose a file…", CHOOSE_FILE)]


def decoder_tooltip(value) -> str:
    """What a decoder choice is."""
    from ..core.errors import SlipError
    from ..core.models.decoder import describe_decoder, read_decoder_metadata

    text = (
        "A decoder trained on your labels (Fine-tune widget or `napari-slip "
        "train-decoder`) makes the relevance map; it must match the CLIP."
    )
    if isinstance(value, str) and value.endswith(".safetensors"):
        try:
            return f"{value}\n{describe_decoder(read_decoder_metadata(value))}"
        except SlipError:
            return value
    return text


def offer(combo, paths: list[str], path, select: bool = True) -> None:
    """Remember a file or folder for a picker, refresh its choices, and select it."""
    path = str(Path(path).expanduser())
    if path not in paths:
        paths.append(path)
    combo.reset_choices()
    if select:
        combo.value = path


def ask_clip_choice(parent, value: str) -> tuple[str, str] | None:
    """Run the dialog a "choose" entry stands for.

    Returns ``("file", path)``, ``("folder", path)``, or None if cancelled.
    """
    from qtpy.QtWidgets import QFileDialog

    if value == CHOOSE_FILE:
        path, _ = QFileDialog.getOpenFileName(
            parent, "CLIP checkpoint", "", "napari-slip CLIP (*.safetensors)"
        )
        return ("file", path) if path else None
    folder = QFileDialog.getExistingDirectory(parent, "Checkpoint folder")
    return ("folder", folder) if folder else None


def ask_file(parent, title: str, kinds: str) -> str:
    """A file the user picks ("" if none)."""
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getOpenFileName(parent, title, "", kinds)[0]
