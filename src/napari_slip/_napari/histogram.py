"""The histogram of a run's candidate scores: kept ones coloured, dropped ones gray,
the threshold drawn on it, the axis titled with what the scores are."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget

KEPT = QColor(255, 170, 0)
DROPPED = QColor(130, 130, 130)
LINE = QColor(230, 60, 60)


class ScoreHistogram(QWidget):
    """Bars of candidate scores (kept ones coloured) and a vertical threshold line."""

    def __init__(self, parent=None, bins: int = 30) -> None:
        super().__init__(parent)
        self.bins = bins
        self.scores = np.zeros(0)
        self.kept = np.zeros(0, dtype=bool)
        self.threshold: float | None = None
        #: What the scores are: the axis title (see ``core.pipeline.selection.score_unit``).
        self.unit = "cosine similarity"
        #: Called with the score under the mouse when the histogram is clicked or
        #: dragged (the widget sets its threshold there).
        self.on_pick = None
        self.setMinimumHeight(72)
        self.setMaximumHeight(92)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def value_at(self, x: float) -> float:
        """The score at ``x`` pixels from the left (the inverse of :meth:`x_of`)."""
        lo, hi = self.range()
        return lo + min(max(x / max(self.width(), 1), 0.0), 1.0) * (hi - lo)

    def _pick(self, event) -> None:
        if self.on_pick is not None and len(self.scores):
            self.on_pick(self.value_at(event.position().x()))

    def mousePressEvent(self, event) -> None:
        self._pick(event)

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._pick(event)

    def set_data(self, scores, kept, threshold: float | None, unit: str | None = None) -> None:
        self.scores = np.asarray(scores, dtype=float)
        self.kept = np.asarray(kept, dtype=bool)
        self.threshold = threshold
        self.unit = unit or self.unit
        self.update()

    def set_threshold(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.update()

    #: A threshold further from the scores than this many times their spread is drawn
    #: at the edge (an arrow and its value) instead of squeezing every bar to a side.
    FAR = 1.0

    def range(self) -> tuple[float, float]:
        """The score range shown: the scores' range, widened to include the threshold
        unless it is far from them (:attr:`FAR`)."""
        scores = self.scores[np.isfinite(self.scores)]
        values = list(scores)
        if self.threshold is not None and not self.threshold_far():
            values.append(self.threshold)
        if not values:
            return 0.0, 1.0
        lo, hi = min(values), max(values)
        pad = max((hi - lo) * 0.05, 0.005)
        return lo - pad, hi + pad

    def threshold_far(self) -> bool:
        """Whether the threshold lies far outside the scores (drawn at the edge)."""
        scores = self.scores[np.isfinite(self.scores)]
        if self.threshold is None or not len(scores):
            return False
        lo, hi = float(scores.min()), float(scores.max())
        spread = max(hi - lo, 0.05)
        return self.threshold < lo - self.FAR * spread or self.threshold > hi + self.FAR * spread

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(edges, kept counts, dropped counts) of the bars."""
        lo, hi = self.range()
        edges = np.linspace(lo, hi, self.bins + 1)
        kept, _ = np.histogram(self.scores[self.kept], edges)
        dropped, _ = np.histogram(self.scores[~self.kept], edges)
        return edges, kept, dropped

    def x_of(self, value: float) -> float:
        lo, hi = self.range()
        return (value - lo) / (hi - lo) * self.width()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        text_h = self.fontMetrics().height()
        w, h = self.width(), self.height() - text_h - 2
        painter.fillRect(0, 0, self.width(), self.height(), QColor(38, 41, 48))
        edges, kept, dropped = self.counts()
        top = max(int((kept + dropped).max(initial=0)), 1)
        bar = w / self.bins
        for i in range(self.bins):
            x = i * bar
            hd = dropped[i] / top * h
            hk = kept[i] / top * h
            painter.fillRect(QRectF(x + 1, h - hd - hk, bar - 1, hd), DROPPED)
            painter.fillRect(QRectF(x + 1, h - hk, bar - 1, hk), KEPT)
        painter.setPen(QColor(200, 200, 200))
        lo, hi = edges[0], edges[-1]
        base = self.height() - 2
        painter.drawText(2, base, f"{lo:.3f}")
        right = f"{hi:.3f}"
        painter.drawText(w - self.fontMetrics().horizontalAdvance(right) - 2, base, right)
        # The axis title: what the scores (and the threshold) are.
        title = self.unit
        painter.drawText((w - self.fontMetrics().horizontalAdvance(title)) // 2, base, title)
        if self.threshold is not None:
            painter.setPen(QPen(LINE, 2))
            if self.threshold_far():  # at the edge, with an arrow and its value
                left = self.threshold < lo
                arrow = f"\u25c0 {self.threshold:.3f}" if left else f"{self.threshold:.3f} \u25b6"
                width = self.fontMetrics().horizontalAdvance(arrow)
                painter.drawText(2 if left else w - width - 2, text_h, arrow)
            else:
                x = self.x_of(self.threshold)
                painter.drawLine(int(x), 0, int(x), h)
        painter.end()


__all__ = ["ScoreHistogram"]
