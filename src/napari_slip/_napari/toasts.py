"""The plugin's messages as napari notifications: posted, and taken down once stale.

napari stops the dismiss timer of every toast on screen when a new one appears, so an
error from the last run would stay up during the next, successful one, as if it were
about it. :func:`dismiss_stale` closes the toasts this plugin posted (matched by their
text) when a new run starts; other plugins' and napari's own toasts are left alone.
"""

from __future__ import annotations

import collections
import contextlib

#: The texts of the plugin's recent toasts (the ones :func:`dismiss_stale` may close).
_POSTED: collections.deque[str] = collections.deque(maxlen=32)


def sentence(text: str) -> str:
    """``text`` ending as a sentence does (a full stop added when it has none)."""
    text = text.rstrip()
    return text if not text or text[-1] in ".!?…)" else text + "."


#: A message longer than this gets its first sentence (what happened) as a line of its
#: own: napari's toast shows that line, and the rest one click (the chevron) away.
HEADLINE_CHARS = 60


def headlined(message: str) -> str:
    """``message`` with what happened on its first line: its first sentence or clause
    (up to the first ": " or ". "), the rest below it."""
    if len(message) <= HEADLINE_CHARS or "\n" in message:
        return message
    cuts = [i for i in (message.find(": "), message.find(". ")) if i > 0]
    if not cuts:
        return message
    cut = min(cuts)
    rest = message[cut + 2 :].strip()
    return f"{message[:cut]}.\n{rest[:1].upper()}{rest[1:]}" if rest else message


def post(message: str, severity: str = "info") -> None:
    """Show ``message`` as a napari notification (``info``, ``warning`` or ``error``),
    :func:`headlined`."""
    from napari.utils import notifications

    message = headlined(message)
    _POSTED.append(message)
    {
        "info": notifications.show_info,
        "warning": notifications.show_warning,
        "error": notifications.show_error,
    }[severity](message)


def on_screen() -> list:
    """The plugin's toasts showing now (napari's Qt notifications with a posted text)."""
    with contextlib.suppress(ImportError, AttributeError):  # napari's Qt side changed
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        return [t for t in list(NapariQtNotification._instances) if _ours(t)]
    return []


def _ours(toast) -> bool:
    try:  # a toast of a closed viewer: its Qt object is gone
        return toast.isVisible() and toast.message.text() in _POSTED
    except RuntimeError:
        return False


def dismiss_stale() -> int:
    """Close the plugin's toasts still on screen; returns how many were closed."""
    toasts = on_screen()
    for toast in toasts:
        with contextlib.suppress(RuntimeError):  # deleted meanwhile by Qt
            toast.close()
    _POSTED.clear()
    return len(toasts)


__all__ = ["dismiss_stale", "headlined", "on_screen", "post", "sentence"]
