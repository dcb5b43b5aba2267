"""After a folder run: its summary in the results panel, and any image of it opened in
the viewer with its labels (from the folder's ``summary.json``, what the run wrote)."""

from __future__ import annotations

from pathlib import Path

from ..core.batch_files import BATCH_JSON_BYTES
from ..core.errors import InputError, SlipError
from ..core.runtime.json_files import read_json_or_none
from .services import DockServices


class FolderResults:
    """The folder section's result picker and Open button, for the last folder run.

    Parameters
    ----------
    dock
        The dock's shared parts (:class:`~.services.DockServices`).
    results
        The results panel (:class:`~.results_panel.ResultsPanel`) that shows the run's
        sentence.
    picker, button
        The section's Result list and Open as layers button.
    reveal
        Open the folder section (its list is in it).
    """

    def __init__(self, dock: DockServices, results, picker, button, reveal) -> None:
        self.dock, self.results, self.picker, self.button = dock, results, picker, button
        self.reveal = reveal
        self.out_dir: Path | None = None
        self.entries: dict[str, dict] = {}
        #: The last folder run's summary (:class:`~..core.batch_files.BatchSummary`).
        self.summary = None
        picker.choices = self._choices
        button.changed.connect(lambda *_: self.open_chosen())
        self._update()

    def _choices(self, _widget=None):
        return [(name, name) for name in self.entries] or [("(run on a folder first)", None)]

    def _update(self) -> None:
        self.picker.reset_choices()
        self.button.enabled = bool(self.entries)

    def show(self, summary) -> None:
        """A finished folder run: its sentence in the results panel, its images listed."""
        from .toasts import post

        self.summary, self.out_dir = summary, Path(summary.out_dir)
        self.entries = listed_results(self.out_dir / "summary.json")
        results = self.results
        results.clear()
        results.summary.value = (
            f"{summary.sentence()} Pick one in Result above and press Open as layers."
        )
        results.visible = True
        self.reveal()
        self._update()
        line = f"{summary.sentence()} Saved in {summary.out_dir}."
        self.dock.say(line)
        post(line)

    def open_chosen(self):
        """Open the chosen image and its labels as layers (returns the Labels layer)."""
        try:
            return self.open(self.picker.value)
        except (SlipError, OSError) as exc:
            self.dock.show_error(exc)
            return None

    def open(self, name: str):
        """Open one image of the last folder run and its labels as layers."""
        from ..core.io import read_image

        entry = self.entries.get(name)
        if entry is None or self.out_dir is None:
            raise InputError("Choose an image of the last folder run.")
        viewer = self.dock.viewer
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
    info = read_json_or_none(summary, max_bytes=BATCH_JSON_BYTES)
    images = info.get("images") if info is not None else None
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
