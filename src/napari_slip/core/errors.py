"""Exceptions that carry a one-line, actionable reason for the user."""

from __future__ import annotations


class SlipError(Exception):
    """Base class: the message is meant to be shown to a user as it is."""


class InputError(SlipError, ValueError):
    """An input (image, labels, option) is not usable; the message says which and why."""


class WeightsUnavailableError(SlipError):
    """Model weights are neither cached nor downloadable (offline, server down, ...)."""


class ChecksumError(SlipError):
    """A downloaded or cached file does not have the expected SHA-256."""


class CheckpointError(SlipError):
    """A checkpoint file exists but cannot be understood as the model it claims to be."""


class Cancelled(SlipError):
    """The work was cancelled by the caller; nothing was written."""
