"""Widget fields made from the parameter dataclasses' metadata (as the CLI's flags are).

A field's default, choices, bounds and help text live once, in :mod:`..core.params`;
:func:`param_widget` turns one into a magicgui widget with that value, range and
tooltip, and :func:`params_from` reads the widgets back into the dataclass. A new
option is one field in one dataclass plus one entry in the widget's list of fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox

#: Widest ranges for fields without bounds.
_INT_RANGE = (0, 10**7)
_FLOAT_RANGE = (-1e6, 1e6)


def param_widget(cls, name: str, label: str, **overrides: Any):
    """A widget for field ``name`` of the parameter dataclass ``cls``."""
    default = cls.default(name)
    choices = cls.choices(name)
    presets = cls.presets(name)
    low, high = cls.bounds(name) or (_INT_RANGE if isinstance(default, int) else _FLOAT_RANGE)
    if presets:  # None (the model's own) or one of these
        options = [("the model's own", None), *((f"{v:,} px", v) for v in presets)]
        widget = ComboBox(label=label, choices=options, value=default, **overrides)
    elif choices:
        widget = ComboBox(label=label, choices=list(choices), value=default, **overrides)
    elif isinstance(default, bool):
        widget = CheckBox(text=label, value=default, **overrides)
    elif isinstance(default, int):
        widget = SpinBox(label=label, min=int(low), max=int(high), value=default, **overrides)
    else:
        step = 0.01 if high - low <= 1 else 0.05
        widget = FloatSpinBox(
            label=label, min=low, max=high, step=step, value=default, **overrides
        )
    widget.tooltip = cls.help(name)
    return widget


def param_widgets(cls, labels: Mapping[str, str]) -> dict[str, Any]:
    """Field name -> widget, for the fields of ``cls`` named in ``labels``."""
    return {name: param_widget(cls, name, label) for name, label in labels.items()}


def params_from(cls, widgets: Mapping[str, Any], **overrides: Any):
    """An instance of ``cls`` from its widgets' values (other fields keep defaults)."""
    values = {}
    for name, widget in widgets.items():
        default = cls.default(name)
        value = widget.value
        if isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, int):
            value = int(value)
        elif isinstance(default, float):
            value = float(value)
        values[name] = value
    return cls(**{**values, **overrides})


__all__ = ["param_widget", "param_widgets", "params_from"]
