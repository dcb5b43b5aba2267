"""Saving what the dock made: "Save labels..." (OME-TIFF or OME-Zarr with axes, pixel
sizes and the table beside) and "Export..." (the table as CSV, the outlines as QuPath
GeoJSON or ImageJ ROIs), through :mod:`napari_slip.core.export`.

The buttons read the result through one callable that returns a :class:`Made` (what
the layer holds now, the rows it shows, the axes and pixel sizes), never the panel's
own state. The file dialogs ask before replacing a file; the writes are atomic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QFileDialog, QMessageBox, QPushButton

from ..core.errors import SlipError
from ..core.export import export_objects, save_labels, table_beside

LABEL_FILTERS = "OME-TIFF (*.ome.tif *.tif);;OME-Zarr (*.ome.zarr *.zarr)"
EXPORT_FILTERS = "Table (*.csv);;QuPath GeoJSON (*.geojson);;ImageJ ROIs (*.zip)"


@dataclass
class Made:
    """A result as it stands in the viewer: the labels layer's data, the rows the table
    shows, the labels' axes letters ("" for one plane), pixel sizes and unit."""

    labels: np.ndarray
    table: pd.DataFrame
    axes: str = ""
    scale: dict = field(default_factory=dict)
    unit: str | None = None
    name: str = "object"


class ResultFiles:
    """Two buttons and what they write; ``made()`` gives the current result (None:
    nothing to save), ``said(text, error)`` shows what happened."""

    def __init__(self, made: Callable[[], Made | None], said: Callable[[str, bool], None]):
        self.made = made
        self.said = said
        self.save_button = QPushButton("Save labels...")
        self.save_button.setToolTip(
            "Save the labels as OME-TIFF or OME-Zarr (with their axes and pixel sizes) "
            "and the table beside them (.csv)"
        )
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip(
            "Export the objects: the table (.csv), outlines for QuPath (.geojson) or "
            "ImageJ ROIs for Fiji's ROI Manager (.zip)"
        )
        self.save_button.clicked.connect(self._ask_save)
        self.export_button.clicked.connect(self._ask_export)
        self.enable(False)

    def enable(self, enabled: bool) -> None:
        self.save_button.setEnabled(enabled)
        self.export_button.setEnabled(enabled)

    def save_labels(self, path, overwrite: bool = True) -> list[Path]:
        """Write the labels and their table (see :func:`~napari_slip.core.export.save_labels`)."""
        made = self._made()
        return save_labels(
            path, made.labels, made.table, made.axes, made.scale, made.unit, overwrite=overwrite
        )

    def export(self, path, overwrite: bool = True) -> Path:
        """Write the objects to ``path`` by its suffix (.csv, .geojson, .zip)."""
        made = self._made()
        return export_objects(
            path, made.labels, made.table, made.axes, made.name, overwrite=overwrite
        )

    def _made(self) -> Made:
        made = self.made()
        if made is None:
            raise SlipError("Nothing to save: run first (the labels layer is gone).")
        return made

    def _ask_save(self, *_args) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self.save_button, "Save labels", "labels.ome.tif", LABEL_FILTERS
        )
        if path and "Zarr" in chosen and not path.lower().endswith(".zarr"):
            path += ".ome.zarr"
        elif path and not path.lower().endswith((".tif", ".tiff", ".zarr")):
            path += ".ome.tif"
        if path and self._may_replace(path):
            self._write(lambda: self.save_labels(path))

    def _ask_export(self, *_args) -> None:
        path, chosen = QFileDialog.getSaveFileName(
            self.export_button, "Export objects", "objects.csv", EXPORT_FILTERS
        )
        suffix = {"Table": ".csv", "QuPath": ".geojson", "ImageJ": ".zip"}
        wanted = next((s for k, s in suffix.items() if chosen.startswith(k)), ".csv")
        if path and Path(path).suffix.lower() not in (".csv", ".geojson", ".zip"):
            path += wanted
        if path:
            self._write(lambda: [self.export(path)])

    def _may_replace(self, path: str) -> bool:
        """What the file dialog did not ask about (a store, which is a folder; the table
        written beside the labels): asked before it is replaced."""
        asks = [path] if Path(path).is_dir() else []
        beside = table_beside(path)
        if beside.exists():
            asks.append(str(beside))
        if not asks:
            return True
        answer = QMessageBox.question(
            self.save_button, "Replace?", f"{' and '.join(asks)} exist. Replace them?"
        )
        return answer == QMessageBox.StandardButton.Yes

    def _write(self, write: Callable[[], list[Path]]) -> None:
        try:
            written = write()
        except SlipError as exc:
            self.said(f"Not saved: {exc.for_surface('widget')}", True)
            return
        self.said(f"Wrote {', '.join(str(p) for p in written)}.", False)


__all__ = ["EXPORT_FILTERS", "LABEL_FILTERS", "Made", "ResultFiles"]
