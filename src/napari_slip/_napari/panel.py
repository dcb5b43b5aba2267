"""What both dock widgets share: one engine generator at a time in a thread worker,
with Run and Cancel buttons, a progress bar naming the stage, and a status line."""

from __future__ import annotations

import logging
from collections.abc import Callable

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QScrollArea

from ..core.errors import SlipError
from .services import DockWork


def compact(*combos) -> None:
    """Let combo boxes shrink with the dock (long texts elide) instead of widening it;
    one with no tooltip of its own shows its choice whole on hover."""
    from qtpy.QtWidgets import QComboBox, QSizePolicy

    policy = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
    for combo in combos:
        box = combo.native
        box.setSizeAdjustPolicy(policy)
        box.setMinimumContentsLength(10)
        box.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        box.currentTextChanged.connect(lambda text, box=box: _name_on_hover(box, text))
        _name_on_hover(box, box.currentText())


def _name_on_hover(box, text: str) -> None:
    """The choice whole as the tooltip, unless the box has an explanation of its own."""
    if box.toolTip() in ("", box.property("slip_auto_tip")):
        box.setToolTip(text)
        box.setProperty("slip_auto_tip", text)


class _TallEnough(QObject):
    """Keeps a wrapped label as tall as its text needs at its width (a scroll area's
    layout would otherwise give it its one-line minimum), up to ``MAX_LINES`` unless
    expanded; ``on_cut`` is told whether the text is cut there."""

    def __init__(self, label) -> None:
        super().__init__(label)
        self.label = label
        self.expanded = False
        self.cut = False
        self.on_cut: Callable[[bool], None] | None = None
        label.installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False

    #: The most lines shown until the text is expanded ("Show all"), so a long error
    #: does not push the dock's buttons away unless the user asks for it.
    MAX_LINES = 4

    def fit(self, *_args) -> None:
        width = self.label.width()
        if width <= 0:
            return
        self.label.setMinimumHeight(0)  # QLabel's height-for-width includes its minimum
        need = self.label.heightForWidth(width)
        most = self.MAX_LINES * self.label.fontMetrics().lineSpacing() + 4
        if self.expanded:
            most = max(need, most)
        self.label.setMinimumHeight(min(need, most))
        self.label.setMaximumHeight(most)
        self.cut = need > most
        if self.on_cut is not None:  # a toggle shows the rest
            self.on_cut(self.cut or self.expanded)
        else:  # the rest in the tooltip
            self.label.setToolTip(self.label.text() if self.cut else "")


def wrap(label) -> None:
    """A label that wraps its text to the dock's width instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    # Its height is kept by _TallEnough; left to height-for-width, a layout in a
    # scroll area squeezes the line to a fraction of what its text needs.
    policy.setHeightForWidth(False)
    label.native.setSizePolicy(policy)
    label._tall_enough = _TallEnough(label.native)
    label.changed.connect(label._tall_enough.fit)


class _Said(Label):
    """A Label that tells ``on_text`` each text it is given (magicgui's Label sends no
    ``changed`` event when its value is set)."""

    on_text: Callable[[str], None] | None = None

    @property
    def value(self) -> str:
        return Label.value.fget(self)

    @value.setter
    def value(self, text: str) -> None:
        Label.value.fset(self, text)
        if self.on_text is not None:
            self.on_text(str(text))


class StatusLine:
    """The panel's status: wrapped, selectable and copyable text whose tooltip is always
    the whole message; a long one shows its first lines and a "Show all" toggle."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt

        self.label = _Said(label="", value="")
        wrap(self.label)
        self.label.native.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.label.native.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)
        self.toggle = PushButton(text="Show all")
        self.toggle.tooltip = "Show the whole message (or its first lines again)"
        self.toggle.native.setVisible(False)
        self.toggle.changed.connect(self._toggle)
        self._fit = self.label._tall_enough
        self._fit.on_cut = self.toggle.native.setVisible
        self.label.on_text = self._new_text

    def _new_text(self, text: str) -> None:
        self.label.native.setToolTip(text)
        if self._fit.expanded:  # a new message starts folded again
            self._toggle()
        else:
            self._fit.fit()

    def _toggle(self, *_args) -> None:
        self._fit.expanded = not self._fit.expanded
        self.toggle.text = "Show less" if self._fit.expanded else "Show all"
        self._fit.fit()


def one_line(exc: BaseException) -> str:
    """A user-facing single line for an exception."""
    if isinstance(exc, SlipError):
        text = exc.for_surface("widget")
        return text.splitlines()[0] if text else type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _FittingScroll(QScrollArea):
    """A scroll area whose rows keep the height their text needs at the width they get
    (wrapped status lines are not squeezed to one line; the area scrolls instead)."""

    def eventFilter(self, obj, event):
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.fit()
        return super().eventFilter(obj, event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.fit()

    def fit(self) -> None:
        inner = self.widget()
        layout = inner.layout() if inner is not None else None
        if layout is None:
            return
        width = self.viewport().width()
        # The rows' preferred heights, not their minimum: a wrapped line's minimum is
        # one line, which a resizable scroll area would squeeze it to.
        need = max(layout.totalSizeHint().height(), layout.totalMinimumSize().height())
        if layout.hasHeightForWidth():
            need = max(need, layout.totalHeightForWidth(width))
        if need > 0 and inner.minimumHeight() != need:
            inner.setMinimumHeight(need)
            inner.resize(inner.width(), max(need, self.viewport().height()))
        layout.setGeometry(inner.rect())  # rows placed at the height they now have
        # As wide as the rows need (they may widen: the results' table): never cut.
        width_needed = (
            inner.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width()
        )
        if self.minimumWidth() < width_needed:
            self.setMinimumWidth(width_needed)


class WorkerPanel(Container):
    """A Container that runs engine generators off the GUI thread.

    Subclasses add their inputs, then ``self.extend(self.controls())``, and call
    :meth:`start_worker`. Cancel stops the generator at its next step; a result that
    arrives after Cancel is dropped, so nothing is written.
    """

    cancelled_message = "Cancelled; nothing was written."

    def __init__(self, run_text: str) -> None:
        super().__init__(labels=True)
        self._scroll = None
        self._worker = None
        #: Other work of the dock that a run waits for (each says whether it is busy).
        self.busy_parts: list[Callable[[], bool]] = []
        self._cancelled = False
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self.status_line = StatusLine()
        self.status = self.status_line.label
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)

    def controls(self) -> list:
        """Run and Cancel on one row, the progress bar, the status line (and its "Show
        all" toggle)."""
        buttons = Container(
            widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False
        )
        buttons.margins = (0, 0, 0, 0)
        return [buttons, self.progress, self.status, self.status_line.toggle]

    def body(self):
        """The layout the panel's rows are in (inside its scroll area, once made)."""
        if self._scroll is not None:
            return self._scroll.widget().layout()
        return self.native.layout()

    def scroll_inside(self) -> None:
        """Move every row into a scroll area filling the panel (call once, last): the
        dock then scrolls inside itself, and opening a section never makes napari's
        window taller (napari saves the grown size for its next start). magicgui's
        own scrollable containers lose their scroll area when napari docks them."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QFrame, QVBoxLayout, QWidget

        outer = self.native.layout()
        inner = QWidget()
        rows = QVBoxLayout(inner)
        rows.setContentsMargins(outer.contentsMargins())
        rows.setSpacing(outer.spacing())
        # Run, Cancel, the progress bar and the status stay in view below the area.
        controls = (
            self.run_button.native,
            self.progress.native,
            self.status.native,
            self.status_line.toggle.native,
        )
        pinned = []
        while outer.count():
            item = outer.takeAt(0)
            widget = item.widget()
            if widget is not None and any(widget is c or widget.isAncestorOf(c) for c in controls):
                pinned.append(widget)
            elif widget is not None:
                rows.addWidget(widget)
            elif item.spacerItem() is not None:
                rows.addStretch(1)
        scroll = _FittingScroll()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        bar = scroll.verticalScrollBar().sizeHint().width()
        scroll.setMinimumWidth(inner.minimumSizeHint().width() + bar)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        for widget in pinned:
            # Off the dock's edges, as the rows in the scroll area are.
            widget.setContentsMargins(4, 0, bar // 2, 0)
            outer.addWidget(widget)
        inner.installEventFilter(scroll)
        self._scroll = scroll

    def pin_below_status(self, widget) -> None:
        """Show a Qt ``widget`` (a fix offered for what the status says) right below the
        status, in view however the dock is scrolled (call after :meth:`scroll_inside`)."""
        outer = self.native.layout()
        status = self.status_line.toggle.native
        for i in range(outer.count()):
            row = outer.itemAt(i).widget()
            if row is not None and (row is status or row.isAncestorOf(status)):
                outer.insertWidget(i + 1, widget)
                return
        outer.addWidget(widget)

    def add_collapsible(self, after, box: Container, max_height: int = 240):
        """Put ``box`` in a scroll area right below the widget ``after``; returns it.

        magicgui's own scrollable containers lose their scroll area when nested, so the
        area is made here: the section scrolls instead of making the dock taller than
        the screen.
        """
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QScrollArea

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(box.native)
        scroll.setMinimumWidth(box.native.minimumSizeHint().width() + 16)
        scroll.setMaximumHeight(max_height)
        scroll.setMinimumHeight(min(150, box.native.minimumSizeHint().height()))
        scroll.setVisible(False)
        layout = self.body()
        layout.insertWidget(layout.indexOf(after.native) + 1, scroll)
        return scroll

    def run(self, *_args) -> None:  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """Whether a run (or a folder run) is in its worker."""
        return self._worker is not None

    @property
    def busy(self) -> bool:
        """A run, or other work of the dock (:attr:`busy_parts`: edits of clicks)."""
        return self.running or any(part() for part in self.busy_parts)

    def start_worker(
        self, func: Callable, *args, on_result: Callable, status: str = "starting…", **kwargs
    ) -> None:
        """Run generator function ``func(*args, **kwargs)`` in a napari thread worker."""
        from napari.qt.threading import create_worker

        def returned(result) -> None:
            if not self._cancelled:  # the result arrived after Cancel: honour the cancel
                on_result(result)

        # Handlers given at creation: an "errored" handler stops the worker from
        # re-raising the exception on the GUI thread (we show one line instead).
        from ..core.runtime.perf import running

        def marked(*a, **k):  # a run: a background measurement gives way to it
            with running():
                return (yield from func(*a, **k))

        self._worker = create_worker(
            marked,
            *args,
            _start_thread=False,
            **kwargs,
            _connect={
                "yielded": self._on_progress,
                "returned": returned,
                "errored": self.show_error,
                "aborted": self._on_cancelled,
                "finished": self._on_finished,
            },
        )
        from .toasts import dismiss_stale

        dismiss_stale()  # the last run's messages no longer describe what happens
        self._cancelled = False
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.progress.native.setFormat("%p%")
        self.status.value = status
        self._worker.start()

    def cancel(self, *_args) -> None:
        """Stop the running work at its next step; nothing is written."""
        if self._worker is not None:
            self._cancelled = True
            self.status.value = "cancelling…"
            self._worker.quit()

    def _on_progress(self, event) -> None:
        self.progress.max = max(int(event.total), 1)
        self.progress.value = min(int(event.done), self.progress.max)
        self.progress.native.setFormat(f"{event.stage} %p%")  # the bar names the stage
        self.status.value = str(event)

    def _on_cancelled(self) -> None:
        self.reset_progress()
        self.status.value = self.cancelled_message

    def _on_finished(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        from ..core.models.autotune import measure_when_idle

        measure_when_idle()  # precision 'auto' measured while the user looks (once)

    def reset_progress(self) -> None:
        """An empty bar: it describes no work."""
        self.progress.max = 1
        self.progress.value = 0
        self.progress.native.setFormat("")

    def work_handle(self, show_outcome: Callable) -> DockWork:
        """This panel's work as the parts that run some see it (``show_outcome``: how
        a result is shown)."""
        running, busy = (lambda: self.running), (lambda: self.busy)
        add_busy = self.busy_parts.append
        return DockWork(self.progress, self.reset_progress, running, busy, add_busy, show_outcome)

    def say(self, line: str) -> None:
        """Put ``line`` in the status."""
        self.status.value = line

    def show_error(self, exc: BaseException) -> None:
        """Show an exception as one line in the status and as a napari notification."""
        from .toasts import post

        message = one_line(exc)
        # One line for the user; the whole story in the log, for a bug report.
        logging.getLogger("napari_slip").error(
            "napari-slip: %s", message, exc_info=(type(exc), exc, exc.__traceback__)
        )
        self.reset_progress()  # a stale "loading models 0%" would describe nothing
        self.status.value = f"Error: {message}"
        post(message, "error")
