"""What the dock's parts share of it: narrow handles, never the dock itself.

A part of the dock (the concept row, the folder results...) gets a
:class:`DockServices`: the viewer, the scripting session, the window to parent its
dialogs, and the status line to say a line or an error in. Its own fields it owns or
is given one by one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DockServices:
    """The dock's shared parts.

    Attributes
    ----------
    viewer
        The napari viewer.
    session
        The scripting session (:class:`~.session.ViewerSession`) the dock drives.
    parent
        The Qt widget that parents dialogs (file pickers, questions).
    say
        Put one line in the dock's status.
    show_error
        Show an exception as one line in the status and as a notification.
    """

    viewer: Any
    session: Any
    parent: Any
    say: Callable[[str], None]
    show_error: Callable[[BaseException], None]


@dataclass(frozen=True)
class DockWork:
    """The dock's work in the background, as a part that runs some uses it.

    Attributes
    ----------
    progress
        The progress bar.
    reset_progress
        An empty bar (it describes no work).
    running
        Whether a run of the dock's own is going.
    busy
        Whether a run or any part's work is going.
    add_busy
        Register a part's own ``busy()`` (a run waits for it).
    show_outcome
        Show a result as a run's is shown (``show_outcome(result, request)``).
    """

    progress: Any
    reset_progress: Callable[[], None]
    running: Callable[[], bool]
    busy: Callable[[], bool]
    add_busy: Callable[[Callable[[], bool]], None]
    show_outcome: Callable[[Any, Any], None]


__all__ = ["DockServices", "DockWork"]
