"""The machinery of the parameter dataclasses: fields with a help text, choices, bounds
and a widget label (:func:`option`), their shared helpers (:class:`Params`), and the
checks every entry point shares (unknown options, phrases, templates)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, field, fields
from typing import Any

from .errors import InputError


def option(
    default: Any = MISSING,
    help: str = "",
    choices: Sequence | None = None,
    bounds: tuple[float, float] | None = None,
    label: str | None = None,
    new: bool = False,
    presets: Sequence | None = None,
    **kw,
):
    """A dataclass field with a help text, optional choices, optional ``bounds``
    ``(low, high)`` (inclusive; checked on construction, the widget's range) and an
    optional ``label`` (the field then shows in the widget's advanced settings under
    that label). Read by the command line's flags and the widget's fields.

    ``presets``: for a field whose default is None (the model's own value), the
    values the widget offers beside it (the command line and Python take any valid
    value).

    ``new``: a field added after batches recorded their parameters: recorded (in a
    batch's hash) only when it is not its default, so earlier batches still resume."""
    meta = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "bounds": bounds,
        "label": label,
        "new": new,
        "presets": tuple(presets) if presets else None,
    }
    if callable(default) and not isinstance(default, (int, float, str, tuple)):
        return field(default_factory=default, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def parse_phrases(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Distractor phrases from a comma-separated string or a list; blanks dropped."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    out = []
    for p in value:
        if not isinstance(p, str):
            raise InputError(f"Phrases must be text; got {p!r}.")
        if p.strip():
            out.append(p.strip())
    return tuple(out)


def _check_template(template: str) -> None:
    """A prompt template: text with one ``{}`` and no other braces."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise InputError(f"Prompt template {template!r} must contain '{{}}' exactly once.")
    try:
        template.format("x")
    except (KeyError, IndexError, ValueError):
        raise InputError(
            f"Prompt template {template!r} may hold only one '{{}}' and no other braces "
            "(write '{{' for a literal brace)."
        ) from None


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Validate prompt templates: each holds ``{}`` exactly once and no other braces."""
    templates = tuple(templates)
    if not templates:
        raise InputError("Give at least one prompt template, e.g. 'a photo of {}.'.")
    for t in templates:
        _check_template(t)
    return templates


def _check_unit(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{name} must be between 0 and 1; got {value!r}.")


class _Params:
    """Shared helpers of the parameter dataclasses."""

    def _check_bounds(self) -> None:
        """Refuse a number outside its field's bounds, before anything is allocated."""
        for f in fields(self):
            bounds = f.metadata.get("bounds")
            value = getattr(self, f.name)
            if bounds is None or value is None:
                continue
            low, high = bounds
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not low <= value <= high:
                raise InputError(f"{f.name} must be between {low} and {high}; got {value!r}.")

    @classmethod
    def shown(cls) -> dict[str, str]:
        """Field name -> widget label, for the fields the widget shows."""
        return {f.name: f.metadata["label"] for f in fields(cls) if f.metadata.get("label")}

    @classmethod
    def bounds(cls, name: str) -> tuple[float, float] | None:
        return {f.name: f for f in fields(cls)}[name].metadata.get("bounds")

    def as_dict(self) -> dict:
        return asdict(self)

    def recorded(self) -> dict:
        """:meth:`as_dict` without the ``new`` fields (see :func:`option`) left at
        their defaults: what a batch's hash is made of."""
        out = self.as_dict()
        for f in fields(self):
            if f.metadata.get("new") and out[f.name] == self.default(f.name):
                out.pop(f.name)
        return out

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def default(cls, name: str) -> Any:
        f = {f.name: f for f in fields(cls)}[name]
        return f.default if f.default is not MISSING else f.default_factory()

    @classmethod
    def help(cls, name: str) -> str:
        return {f.name: f for f in fields(cls)}[name].metadata.get("help", "")

    @classmethod
    def choices(cls, name: str) -> tuple | None:
        return {f.name: f for f in fields(cls)}[name].metadata.get("choices")

    @classmethod
    def presets(cls, name: str) -> tuple | None:
        return {f.name: f for f in fields(cls)}[name].metadata.get("presets")

    @classmethod
    def pick(cls, options: dict) -> dict:
        """Remove and return the entries of ``options`` that are fields of this class."""
        return {k: options.pop(k) for k in list(options) if k in cls.names()}


def check_options(options: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse unknown keyword arguments with the list of known ones."""
    allowed = sorted(set(allowed))
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise InputError(
            f"{where} got an unknown option {unknown[0]!r}; known options: {', '.join(allowed)}."
        )


__all__ = ["check_options", "option", "parse_phrases"]
