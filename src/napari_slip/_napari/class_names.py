"""Which label ids are which class, for fine-tuning: read from text, written back as
text, taken from a Labels layer's features, and assigned by clicking objects.

The Classes field stays the one truth (visible, editable, one class per line); a click
on an object rewrites it, so typing and clicking never disagree.
"""

from __future__ import annotations

import re

from magicgui.widgets import CheckBox, LineEdit

from ..core.errors import InputError


def parse_classes(text: str) -> dict[int, str]:
    """``"nucleus: 1-5, 9; mitotic nucleus: 6, 7"`` (or one class per line) ->
    ``{1: "nucleus", ..., 7: "mitotic nucleus"}``.

    Raises
    ------
    InputError
        With the part that could not be read.
    """
    mapping: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in re.split(r"[;\n]", text))):
        if ":" not in part:
            raise InputError(
                f"Write classes as 'name: labels', e.g. 'nucleus: 1-5, 9'; got {part!r}."
            )
        name, labels = (x.strip() for x in part.rsplit(":", 1))
        if not name:
            raise InputError(f"A class name is missing in {part!r}.")
        for item in filter(None, (x.strip() for x in labels.split(","))):
            match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", item)
            if not match:
                raise InputError(f"{item!r} in {part!r} is not a label or a range like 3-7.")
            lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
            for label in range(lo, hi + 1):
                if label in mapping and mapping[label] != name:
                    raise InputError(
                        f"Label {label} is given two classes: {mapping[label]!r} and {name!r}."
                    )
                mapping[label] = name
    return mapping


def format_classes(mapping: dict[int, str]) -> str:
    """:func:`parse_classes` backwards: one class per line, runs of labels as ranges."""
    lines = []
    for name in dict.fromkeys(mapping[k] for k in sorted(mapping)):
        labels, runs = sorted(k for k, v in mapping.items() if v == name), []
        for label in labels:
            if runs and label == runs[-1][1] + 1:
                runs[-1][1] = label
            else:
                runs.append([label, label])
        parts = [str(a) if a == b else f"{a}-{b}" for a, b in runs]
        lines.append(f"{name}: {', '.join(parts)}")
    return "\n".join(lines)


def classes_from_features(layer) -> dict[int, str]:
    """Classes from a Labels layer's features table (columns ``index`` and ``class``)."""
    features = layer.features
    if "class" not in features or "index" not in features:
        return {}
    return {
        int(i): str(c)
        for i, c in zip(features["index"], features["class"], strict=True)
        if str(c).strip() and str(c) != "nan"
    }


class ClassClicks:
    """Click an object of the chosen Labels layer to give it the class typed beside the
    check box (click it again to take the class off). A viewer mouse callback: it acts
    on plain clicks only (a drag still pans), and only while the layer is not painting
    (pan/zoom or pick mode), so napari's own tools keep working.
    """

    def __init__(self, widget) -> None:
        self.widget = widget
        self.name = LineEdit(label="Click assigns", value="")
        self.name.native.setPlaceholderText("class name, then tick and click objects")
        self.active = CheckBox(text="Click objects to assign", value=False)
        self.active.tooltip = self.name.tooltip = (
            "Tick, type a class name and click objects on the canvas: each click gives the "
            "object under the cursor that class in the Classes field (again: takes it off). "
            "Works in the Labels layer's pan/zoom and pick modes; painting still paints."
        )
        widget.viewer.mouse_drag_callbacks.append(self._on_mouse)
        widget.native.destroyed.connect(lambda *_: self.detach())

    def widgets(self) -> list:
        return [self.name, self.active]

    def detach(self) -> None:
        callbacks = self.widget.viewer.mouse_drag_callbacks
        if self._on_mouse in callbacks:
            callbacks.remove(self._on_mouse)

    def _on_mouse(self, viewer, event):
        layer = self.widget.labels.value
        if (
            not self.active.value
            or event.button != 1
            or event.modifiers
            or type(layer).__name__ != "Labels"
            or layer.mode not in ("pan_zoom", "pick")
        ):
            return
        press, start = event.position, tuple(event.pos)
        yield
        while event.type == "mouse_move":
            if max(abs(a - b) for a, b in zip(event.pos, start, strict=True)) > 4:
                return  # a drag pans the view; it assigns nothing
            yield
        value = layer.get_value(
            press,
            view_direction=event.view_direction,
            dims_displayed=event.dims_displayed,
            world=True,
        )
        self.assign(layer, value)

    def assign(self, layer, value) -> None:
        """Give label ``value`` of ``layer`` the typed class (or take it off)."""
        status = self.widget.status
        name = self.name.value.strip()
        if value is None or not int(value):
            status.value = "That click is on the background: click an object."
            return
        if not name:
            status.value = "Type the class to assign in 'Click assigns' first."
            return
        label = int(value)
        try:
            text = self.widget.classes.value.strip()
            mapping = parse_classes(text) if text else classes_from_features(layer)
        except InputError as exc:
            status.value = f"Fix the Classes field first: {exc}"
            return
        if mapping.get(label) == name:
            del mapping[label]
            status.value = f"Label {label} has no class now."
        else:
            mapping[label] = name
            status.value = f"Label {label} is a {name}."
        self.widget.classes.value = format_classes(mapping)


__all__ = ["ClassClicks", "classes_from_features", "format_classes", "parse_classes"]
