"""Exceptions that carry a one-line, actionable reason for the user."""

from __future__ import annotations


class SlipError(Exception):
    """Base class: the message is meant to be shown to a user as it is.

    ``str(error)`` is the message for Python users; :meth:`for_surface` gives the
    wording for the command line (``"cli"``) or the widget (``"widget"``) where an
    error carries one (they name flags or buttons instead of keyword arguments).
    """

    def __init__(self, message: str = "", *, surfaces: dict[str, str] | None = None):
        super().__init__(message)
        self.surfaces = dict(surfaces or {})

    def for_surface(self, surface: str) -> str:
        """The message as it should read in ``surface`` (``python``, ``cli``, ``widget``)."""
        return self.surfaces.get(surface, str(self))


class InputError(SlipError, ValueError):
    """An input (image, labels, option) is not usable; the message says which and why."""


class NothingToDo(InputError):
    """An edit that would change nothing (a click on background, on no object): the
    labels stay as they were; the message says why in one line."""


class WeightsUnavailableError(SlipError):
    """Model weights are neither cached nor downloadable (offline, server down, ...)."""

    @classmethod
    def offline(cls, what: str, url: str, dest, reason) -> WeightsUnavailableError:
        """The download of ``what`` failed: each surface says how to give a local file."""
        kind = "sam" if what.upper().startswith("SAM") else "clip"
        example = "sam_vit_b_01ec64.pth" if kind == "sam" else "my_clip.safetensors"
        start = f"Could not download {what} from {url} ({reason})."
        put = f"download it elsewhere and put it at {dest}"
        return cls(
            f"{start} If you are offline, {put}, or pass a local file: "
            f"{kind}='/path/to/{example}'.",
            surfaces={
                "cli": f"{start} If you are offline, {put}, or give a local file with "
                f"--{kind} PATH.",
                "widget": f"Could not download {what} (offline?). Pick 'Choose a file…' in "
                f"the {kind.upper()} list, or put the file at {dest}.",
            },
        )


class ChecksumError(SlipError):
    """A downloaded or cached file does not have the expected SHA-256."""


class CheckpointError(SlipError):
    """A checkpoint file exists but cannot be understood as the model it claims to be."""


class Cancelled(SlipError):
    """The work was cancelled by the caller; nothing was written."""
