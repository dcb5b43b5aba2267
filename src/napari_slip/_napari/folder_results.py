"""After a folder run: its summary in the results panel, and any image of it opened in
the viewer with its labels (from the folder's ``summary.json``, what the run wrote)."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import InputError, SlipError


class FolderResults:
    """The folder section's result picker and Open button, for the last folder run."""

    def __init__(self, widget) -> None:
        self.widget = widget
        self.out_dir: Path | None = None
        self.entries: dict[str, dict] = {}
        widget.folder_result.choices = self._choices
        widget.open_result.changed.connect(lambda *_: self.open_chosen())
        for field in (widget.folder_in, widget.folder_out):  # a long path shows whole here
            field.changed.connect(
                lambda value, f=field, tip=field.tooltip: setattr(f, "tooltip", f"{value}\n{tip}")
            )
        self._update()

    def _choices(self, _widget=None):
        return [(name, name) for name in self.entries] or [("(run on a folder first)", None)]

    def _update(self) -> None:
        self.widget.folder_result.reset_choices()
        self.widget.open_result.enabled = bool(self.entries)

    def show(self, summary) -> None:
        """A finished folder run: its sentence in the results panel, its images listed."""
        from .toasts import post

        self.out_dir = Path(summary.out_dir)
        self.entries = listed_results(self.out_dir / "summary.json")
        results = self.widget.results
        results.clear()
        results.summary.value = (
            f"{summary.sentence()} Pick one in Result above and press Open as layers."
        )
        results.visible = True
        self.widget.show_folder.value = True
        self._update()
        self.widget.status.value = f"{summary.sentence()} Saved in {summary.out_dir}."
        post(self.widget.status.value)

    def open_chosen(self):
        """Open the chosen image and its labels as layers (returns the Labels layer)."""
        try:
            return self.open(self.widget.folder_result.value)
        except (SlipError, OSError) as exc:
            self.widget.show_error(exc)
            return None

    def open(self, name: str):
        """Open one image of the last folder run and its labels as layers."""
        from ..core.io import read_image

        entry = self.entries.get(name)
        if entry is None or self.out_dir is None:
            raise InputError("Choose an image of the last folder run.")
        viewer = self.widget.viewer
        labels_path = self.out_dir / entry["labels"]
        stem = Path(entry["labels"]).name
        image = viewer.add_image(read_image(entry["input"]), name=stem)
        labels = read_image(labels_path).astype("int32")
        # The labels' axes are the image's last ones (a channel axis has no labels).
        return viewer.add_labels(labels, name=f"{stem} labels", scale=image.scale[-labels.ndim :])


def listed_results(summary: Path) -> dict[str, dict]:
    """``{"NAME (n objects)": entry}`` of a folder run's ``summary.json``: entries with a
    labels file name and an input path; anything else in a damaged or hand-edited file
    is left out (a file that cannot be read lists nothing)."""
    try:
        info = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    images = info.get("images") if isinstance(info, dict) else None
    out = {}
    for entry in images if isinstance(images, list) else []:
        if not isinstance(entry, dict):
            continue
        labels, source = entry.get("labels"), entry.get("input")
        if not (isinstance(labels, str) and labels and isinstance(source, str) and source):
            continue
        count = entry.get("n_objects")
        count = count if isinstance(count, int) and not isinstance(count, bool) else 0
        out[f"{labels} ({count} objects)"] = entry
    return out


__all__ = ["FolderResults", "listed_results"]
