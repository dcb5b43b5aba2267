"""Argument parsing shared by the commands: one-line usage errors, value parsers, and a
``--flag`` per field of the parameter dataclasses (their defaults, choices and help)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from ..core.errors import SlipError


class _UsageError(Exception):
    """A command-line mistake, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the full usage is one ``--help`` away)."""

    def error(self, message: str):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parse_channels(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"channels must be comma-separated integers, not {text!r}"
        ) from None


def _parse_limits(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"contrast limits must be LOW,HIGH, not {text!r}"
        ) from None
    return low, high


def _parse_pixel_size(text: str) -> dict[str, float]:
    """``--pixel-size``: ``Z=2,Y=0.5,X=0.5`` (checked against the image's axes later)."""
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            letter = name.strip().upper()
            if letter in out:
                raise argparse.ArgumentTypeError(
                    f"--pixel-size gives {letter} twice ({text!r}): give each axis once"
                )
            out[letter] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"pixel sizes are AXIS=SIZE pairs such as Z=2,Y=0.5,X=0.5, not {text!r}"
            ) from None
    return out


def _parse_fill(text: str) -> str | tuple[int, ...]:
    """``--fill``: a name or R,G,B, checked by CropParams."""
    from ..core.params import CropParams

    fill: str | tuple[int, ...] = text
    if "," in text:
        try:
            fill = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"fill must be a name or R,G,B numbers, not {text!r}"
            ) from None
    try:
        return CropParams(fill=fill).fill
    except SlipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device_argument(parser) -> None:
    from ..core.params import DEVICES

    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where models run (default: auto)"
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(
    parser: argparse._ActionsContainer,
    cls: type,
    only: Sequence[str] | None = None,
    types: Mapping[str, Any] | None = None,
) -> None:
    """Add a ``--flag`` per field of ``cls`` with its default, choices and help."""
    types = dict(types or {})
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        default = cls.default(f.name)
        help_text = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        kwargs: dict = {"dest": f.name, "default": default}
        if f.name in types:
            kwargs["type"] = types[f.name]
        elif isinstance(default, bool):
            parser.add_argument(_flag(f.name), action="store_true", help=help_text, dest=f.name)
            continue
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            kwargs["type"] = type(default)
        elif f.type in ("int | None", "float | None"):
            kwargs["type"] = int if f.type.startswith("int") else float
        if choices and f.name in types:  # a parsed value: name the choices in the help
            help_text = f"{help_text}: {', '.join(map(str, choices))} or R,G,B"
        elif choices:
            kwargs["choices"] = choices
        shown = "none" if default is None else default
        kwargs["help"] = f"{help_text} (default: %(default)s)" if shown != () else help_text
        if default is None:
            kwargs["help"] = f"{help_text}"
        parser.add_argument(_flag(f.name), **kwargs)


def from_args(cls: type, args: argparse.Namespace, **overrides) -> Any:
    """An instance of ``cls`` from parsed arguments (fields absent there keep defaults)."""
    values = {n: getattr(args, n) for n in cls.names() if hasattr(args, n)}
    values.update(overrides)
    return cls(**values)


__all__ = ["add_arguments", "from_args"]
