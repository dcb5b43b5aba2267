"""The results panel: every object's score in a sortable table, and a histogram of all
candidates' scores with the threshold drawn on it.

Clicking a row selects that label in its layer and centres the view on it (moving to
its plane in a stack: a 3D object's middle plane, a track's frame); its columns are
those of :mod:`.table_columns`, hidden from the header's menu. "Save labels..." and
"Export..." write the result (:mod:`.result_files`). The histogram (:mod:`.histogram`)
shows kept candidates in the label colour and dropped ones in gray, in the scores' own
unit, so a threshold can be chosen by looking at the scores; it is shown also when
nothing was found, with how far the best candidate was.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from magicgui.widgets import Container, Label
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .histogram import ScoreHistogram
from .layers import camera_of
from .panel import wrap
from .result_files import Made, ResultFiles
from .table_columns import columns_for

#: The layer's events after which the table is checked against its labels (an undo
#: refreshes the layer: ``set_data``), and the largest layer checked (its labels are
#: counted each time).
FOLLOWED_EVENTS = ("data", "set_data", "paint", "labels_update")
FOLLOW_MAX = 64_000_000


class ResultsPanel(Container):
    """Objects table and score histogram of the last run."""

    #: Table rows always shown (more when the dock has room).
    MIN_ROWS = 6

    def __init__(self) -> None:
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._follow_due = False
        self.summary = Label(value="")
        wrap(self.summary)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["id", "score"])
        #: The columns shown (see :mod:`.table_columns`); the user hides any of them
        #: with the header's context menu, and they stay hidden for the next results.
        self.columns: list = []
        self.hidden_columns: set[str] = set()
        self.table.horizontalHeader().setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.horizontalHeader().customContextMenuRequested.connect(self._choose_columns)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setMinimumSectionSize(36)
        header.setDefaultSectionSize(48)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        # Six rows and the header (at the default window, the summary, histogram and
        # these rows fit in the dock's view together); the dock scrolls for more.
        row = self.table.verticalHeader().defaultSectionSize()
        self.table.setMinimumHeight(self.MIN_ROWS * row + header.sizeHint().height() + 4)
        self.table.setMaximumHeight(12 * row + header.sizeHint().height() + 4)
        self.histogram = ScoreHistogram()
        self.histogram.setToolTip(
            "Scores of all candidates: kept (orange), dropped (gray); the red line is the "
            "threshold. Click or drag to set the threshold there."
        )
        #: "Save labels..." and "Export..." (see :mod:`.result_files`); what they say
        #: goes to ``on_said(text)`` (the widget's status) and a toast.
        self.on_said = None
        self.files = ResultFiles(self.made, self._said)
        # The buttons share the summary's row: the panel grows no taller for them.
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.summary.native, 1)
        buttons = QVBoxLayout()
        buttons.setSpacing(2)
        buttons.addWidget(self.files.save_button)
        buttons.addWidget(self.files.export_button)
        line.addLayout(buttons, 0)
        #: Shown when SAM's filters left no candidate: lower them and run again.
        self.suggest = QPushButton("Lower SAM's filters and run again")
        self.suggest.setToolTip("Min IoU 0.5 and Min stability 0.7 (or half the current)")
        self.suggest.setVisible(False)
        self.on_suggest = None
        self.suggest.clicked.connect(lambda *_: self.on_suggest and self.on_suggest())
        self.native.layout().addWidget(row)
        #: What the clicks taught (see :mod:`.teaching_controls`); empty until a click.
        self.examples = Label(value="")
        wrap(self.examples)
        self.native.layout().addWidget(self.examples.native)
        self.native.layout().addWidget(self.suggest)
        self.native.layout().addWidget(self.histogram)
        self.native.layout().addWidget(self.table)
        self.axes = ""
        self.scale: dict = {}
        self.unit: str | None = None
        self.name = "object"
        self.layer = None
        self.viewer = None
        self.rows: pd.DataFrame = pd.DataFrame()
        self.table.cellClicked.connect(self._on_click)
        self.visible = False

    @property
    def showing(self) -> bool:
        """Whether the panel is shown (``visible`` also needs the window on screen)."""
        return not self.native.isHidden()

    def show_result(self, viewer, layer, result, threshold: float | None) -> None:
        """Fill the table and histogram from a :class:`StackResult`."""
        self._follow(layer)
        self.viewer, self.layer = viewer, layer
        axes = [c for c in result.table.columns if _is_plane_column(c)]
        rows = result.table.copy()
        offset = 0
        if layer is not None and len(rows) and "index" in layer.features:
            # Objects written into an existing layer got new ids after its maximum.
            offset = int(layer.features["index"].max()) - int(rows["id"].max())
            offset = max(offset, 0)
        rows["id"] = rows["id"] + offset
        if "track_id" in rows:
            rows["track_id"] = rows["id"]
        self.axes = getattr(result, "axes", "")
        measuring = getattr(getattr(result, "candidates", None), "measuring", None)
        self.scale = dict(getattr(result, "scale", None) or getattr(measuring, "scale", {}) or {})
        self.unit = getattr(result, "unit", None) or getattr(measuring, "unit", None)
        prompt = getattr(result, "prompt", "") or result.provenance.get("prompt")
        self.name = str(prompt or "object")
        self.rows = rows.reset_index(drop=True)
        self.columns = columns_for(self.rows, axes, self.axes)
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(self.columns))
        self.table.setHorizontalHeaderLabels([c.header for c in self.columns])
        for j, column in enumerate(self.columns):
            self.table.horizontalHeaderItem(j).setToolTip(column.tip)
            self.table.setColumnHidden(j, column.header in self.hidden_columns)
        self.table.setRowCount(len(self.rows))
        for i, row in self.rows.iterrows():
            for j, column in enumerate(self.columns):
                value = column.value(row)
                item = QTableWidgetItem()
                if column.digits is None:
                    item.setData(Qt.ItemDataRole.DisplayRole, str(value))
                elif column.digits == 0:
                    item.setData(Qt.ItemDataRole.DisplayRole, int(value))
                else:
                    item.setData(Qt.ItemDataRole.DisplayRole, round(float(value), column.digits))
                item.setData(Qt.ItemDataRole.UserRole, int(i))  # its row, however sorted
                self.table.setItem(int(i), j, item)
        self.table.setSortingEnabled(True)
        for r in range(self.table.rowCount()):  # rows hidden for the previous result
            self.table.setRowHidden(r, False)
        self.follow_layer()
        self.table.setVisible(len(self.rows) > 0)
        self.files.enable(len(self.rows) > 0 and layer is not None)
        # Linked planes: selection chose among whole objects, so their scores are shown.
        objects = getattr(result, "object_scores", None)
        cands = objects if objects is not None else result.candidate_table
        what = "3D objects" if objects is not None else "candidates"
        if objects is not None and "T" in getattr(result, "axes", ""):
            what = "tracks"
        scores = cands["score"].to_numpy(float) if len(cands) else np.zeros(0)
        kept = cands["kept"].to_numpy(bool) if len(cands) else np.zeros(0, bool)
        unit = getattr(result, "score_unit", "cosine similarity")
        self.histogram.set_data(scores, kept, threshold, unit)
        if len(cands):
            best = float(scores.max())
            where = f"; best {best:.3f}" + (
                f", threshold {threshold:.3f}" if threshold is not None else ""
            )
            where += f" ({unit})"
            self.summary.value = f"{int(kept.sum())} of {len(cands)} {what} kept{where}"
        else:
            self.summary.value = "No candidate objects."
        funnels = [getattr(c.proposals, "funnel", None) for c in _planes(result)]
        self.suggest.setVisible(not len(cands) and any(f and f["masks"] for f in funnels))
        self.visible = True
        QTimer.singleShot(0, self.bring_into_view)  # once laid out at its new size

    def bring_into_view(self) -> None:
        """Scroll the dock so the summary, the histogram and the table's first rows are
        in view (the results sit below the form: the user should not have to scroll
        after every run)."""
        from qtpy.QtWidgets import QScrollArea

        area = self.native.parentWidget()
        while area is not None and not isinstance(area, QScrollArea):
            area = area.parentWidget()
        if area is None or self.native.isHidden():
            return
        area.widget().layout().activate()  # the rows at the height they now have
        top = self.native.mapTo(area.widget(), self.native.rect().topLeft()).y()
        bottom = top + self.native.height()
        bar = area.verticalScrollBar()
        view = area.viewport().height()
        if top >= bar.value() and bottom <= bar.value() + view:
            return  # already whole in view
        # The panel's top at the view's top, or its bottom at the view's bottom,
        # whichever shows more of it from its top.
        bar.setValue(min(top, max(bottom - view, bar.value())))

    def _follow(self, layer) -> None:
        """Keep the table to the objects still in ``layer`` (an undo, a painted-over
        label): its rows follow the layer's data."""
        old = self.layer
        if old is not None and old is not layer:
            for name in FOLLOWED_EVENTS:
                event = getattr(old.events, name, None)
                if event is not None:
                    event.disconnect(self.follow_layer)
        if layer is not None and layer is not old:
            for name in FOLLOWED_EVENTS:
                event = getattr(layer.events, name, None)
                if event is not None:
                    event.connect(self.follow_layer)

    def follow_layer(self, *_args) -> None:
        """Hide the rows whose label is no longer in the layer (and show them again
        when it comes back, after a redo): once per burst of the layer's events (a new
        selection sends several), when the GUI thread is next free."""
        if self._follow_due:
            return
        self._follow_due = True
        QTimer.singleShot(0, self._follow_now)

    def _follow_now(self) -> None:
        self._follow_due = False
        if self.layer is None or not len(self.rows) or self.layer.data.size > FOLLOW_MAX:
            return
        present = set(np.unique(np.asarray(self.layer.data)).tolist())
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            if item is not None:
                label = int(item.data(Qt.ItemDataRole.DisplayRole))
                self.table.setRowHidden(r, label not in present)

    @property
    def shown_rows(self) -> pd.DataFrame:
        """The rows whose label is in the layer (what the table shows, and exports)."""
        if self.layer is None or not len(self.rows) or self.layer.data.size > FOLLOW_MAX:
            return self.rows
        present = np.unique(np.asarray(self.layer.data))
        return self.rows[self.rows["id"].isin(present)]

    def clear(self) -> None:
        self._follow(None)
        self.rows = pd.DataFrame()
        self.table.setRowCount(0)
        self.histogram.set_data([], [], None)
        self.summary.value = self.examples.value = ""
        self.suggest.setVisible(False)
        self.layer = None
        self.visible = False

    def _on_click(self, row: int, _column: int) -> None:
        item = self.table.item(row, 0)
        if item is None or self.layer is None:
            return
        index = item.data(Qt.ItemDataRole.UserRole)
        label_id = int(item.data(Qt.ItemDataRole.DisplayRole))
        self.select_label(label_id, None if index is None else self.rows.iloc[int(index)])

    def select_label(self, label_id: int, row: pd.Series | None = None) -> None:
        """Select ``label_id`` in the layer and centre the view (and plane) on it (on
        ``row``'s frame, for a track's row)."""
        layer, viewer = self.layer, self.viewer
        if layer is None or viewer is None or layer not in viewer.layers:
            return
        if row is None:
            match = self.rows[self.rows["id"] == label_id]
            if not len(match):
                return
            row = match.iloc[0]
        layer.selected_label = int(label_id)
        layer.visible = True
        lead = lead_position(row, self.rows.columns, self.axes, layer.ndim - 2)
        centre = [
            *lead,
            (row["bbox_y0"] + row["bbox_y1"]) / 2,
            (row["bbox_x0"] + row["bbox_x1"]) / 2,
        ]
        world = np.asarray(layer.data_to_world(np.asarray(centre, dtype=float)))
        if lead:
            point = list(viewer.dims.point)
            offset = len(point) - layer.ndim
            for k, value in enumerate(world[: len(lead)]):
                point[offset + k] = float(value)
            viewer.dims.point = point
        camera_of(viewer).center = tuple(float(v) for v in world[-2:])

    def column_menu(self):
        """The header's menu: a tick per column, untick to hide it."""
        from qtpy.QtWidgets import QMenu

        menu = QMenu(self.table)
        for j, column in enumerate(self.columns):
            action = menu.addAction(column.header)
            action.setCheckable(True)
            action.setChecked(not self.table.isColumnHidden(j))
            action.toggled.connect(lambda on, j=j: self.show_column(j, on))
        return menu

    def show_column(self, j: int, shown: bool) -> None:
        header = self.columns[j].header
        self.table.setColumnHidden(j, not shown)
        (self.hidden_columns.discard if shown else self.hidden_columns.add)(header)

    def _choose_columns(self, pos) -> None:
        self.column_menu().exec(self.table.horizontalHeader().mapToGlobal(pos))

    def made(self) -> Made | None:
        """The result as the layer holds it now (None when its layer is gone)."""
        layer = self.layer
        if layer is None or (self.viewer is not None and layer not in self.viewer.layers):
            return None
        return Made(
            np.asarray(layer.data), self.shown_rows, self.axes, self.scale, self.unit, self.name
        )

    def export_csv(self, path) -> None:
        """Write the table (every column, measurements included) to ``path``."""
        self.files.export(path)

    def _said(self, text: str, error: bool) -> None:
        from .toasts import post

        if self.on_said is not None:
            self.on_said(text)
        post(text, "error" if error else "info")


def _planes(result) -> list:
    """The candidates of every plane of a result (a plane's or a stack's)."""
    candidates = getattr(result, "candidates", None)
    if isinstance(candidates, dict):
        return [c for c in candidates.values() if c is not None]
    return [] if candidates is None else [candidates]


def lead_position(row: pd.Series, columns, axes: str, n_lead: int) -> list[float]:
    """The leading data coordinates of an object's row: its plane (per-plane rows), its
    frame (track rows) and middle plane (3D objects)."""
    per_plane = [c for c in columns if _is_plane_column(c)]
    if per_plane:
        return [int(row[a]) for a in per_plane]
    letters = axes[:-2] if axes else ""
    if len(letters) != n_lead:
        return []
    out = []
    for letter in letters:
        if letter == "T" and "t" in row:
            out.append(int(row["t"]))
        elif f"centroid_{letter.lower()}" in row:
            out.append(round(float(row[f"centroid_{letter.lower()}"])))
        else:
            out.append(0)
    return out


def _is_plane_column(column) -> bool:
    """A stack table's ``axis0``, ``axis1``... (the plane of a per-plane object)."""
    name = str(column)
    return name.startswith("axis") and name[4:].isdigit()
