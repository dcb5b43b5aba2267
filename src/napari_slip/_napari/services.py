"""What the dock's parts share of it: a narrow handle, never the dock itself.

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


__all__ = ["DockServices"]
