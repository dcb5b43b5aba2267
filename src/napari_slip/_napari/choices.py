"""Model pickers shared by the widgets, and the signal that new checkpoints exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from psygnal import Signal

from ..core.models.listing import describe_checkpoint, find_clip_checkpoints
from ..core.models.registry import CLIP_PRETRAINED


@dataclass
class OfferedFiles:
    """Model files chosen or saved in this session, offered in the pickers beside the
    known names (a dock's own; the pickers' choices read them)."""

    sam: list[str] = field(default_factory=list)
    clip: list[str] = field(default_factory=list)
    clip_folders: list[str] = field(default_factory=list)
    decoder: list[str] = field(default_factory=list)


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
    for p in files:
        if p not in known:  # MODEL:TAG=PATH: an official weight file, its model named
            named, _, file = p.rpartition("=") if "=" in p else ("", "", p)
            choices.append((f"{Path(file).name} ({named})" if named else Path(p).name, p))
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
    for p in files:
        if p not in known:  # MODEL:TAG=PATH: an official weight file, its model named
            named, _, file = p.rpartition("=") if "=" in p else ("", "", p)
            choices.append((f"{Path(file).name} ({named})" if named else Path(p).name, p))
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
            parent, "CLIP checkpoint", "", "CLIP weights (*.safetensors *.bin)"
        )
        spec = clip_file_spec(path, lambda names: _ask_architecture(parent, names)) if path else ""
        return ("file", spec) if spec else None
    folder = QFileDialog.getExistingDirectory(parent, "Checkpoint folder")
    return ("folder", folder) if folder else None


def ask_file(parent, title: str, kinds: str) -> str:
    """A file the user picks ("" if none)."""
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getOpenFileName(parent, title, "", kinds)[0]


def clip_file_spec(path: str, ask) -> str:
    """The CLIP spec of a chosen file: a napari-slip checkpoint as it is; an official
    open_clip weight file (no napari-slip metadata) as ``MODEL:TAG=PATH``, its
    architecture from ``ask(names)`` (the known pretrained names; "" if cancelled)."""
    from ..core.errors import CheckpointError
    from ..core.models.clip import read_clip_metadata

    if not path.endswith(".safetensors"):
        named = ask(list(CLIP_PRETRAINED))
        return f"{named}={path}" if named else ""
    try:
        read_clip_metadata(path)
        return path
    except CheckpointError:
        named = ask(list(CLIP_PRETRAINED))
        return f"{named}={path}" if named else ""


def _ask_architecture(parent, names: list[str]) -> str:
    from qtpy.QtWidgets import QInputDialog

    name, ok = QInputDialog.getItem(
        parent,
        "Which CLIP is this file?",
        "An open_clip weight file without napari-slip metadata: its model and tag",
        names,
        0,
        False,
    )
    return name if ok else ""
