"""One checked reader for every JSON file and JSON text napari-slip reads.

Batch records and summaries, the precision cache, the hash memo of downloads, hub
CLIP configs, concept headers, the metadata of checkpoints and cached embeddings:
each is a file a user, another tool or a crash may have damaged. All of them are read
here, with the same caps, before any field is looked at:

- **size**: a file is measured before it is read (a 1 GB sparse file is refused
  without reading a byte); text longer than the cap is refused;
- **depth**: nesting deeper than the cap (or deep enough to exhaust Python's
  recursion) is refused rather than crashing the caller;
- **standard JSON only**: ``NaN`` and ``Infinity`` are refused;
- **kind**: the top level must be what the caller expects (a mapping by default).

Each caller then checks the types and bounds of the fields it uses: this module
guarantees only that what it hands back is small, shallow, standard and of the kind
asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Largest JSON text read by default (records, summaries and configs are far smaller).
MAX_BYTES = 16 << 20
#: Deepest nesting accepted (our files nest at most 5 levels).
MAX_DEPTH = 32


class JsonDamaged(ValueError):
    """JSON that is too large, too deep, not standard JSON, or not of the kind asked
    for; the message says which."""


def _refuse_constant(name: str):
    raise JsonDamaged(f"it holds {name}, which is not standard JSON")


def depth_of(value: Any) -> int:
    """How deeply ``value`` nests lists and mappings (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(
    text: str | bytes,
    *,
    kind: type | tuple[type, ...] = dict,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """``text`` parsed and checked (see the module).

    Raises
    ------
    JsonDamaged
        Saying what is wrong with it.
    """
    if len(text) > max_bytes:
        raise JsonDamaged(f"it is larger than {max_bytes} bytes")
    if isinstance(text, bytes | bytearray):  # JSON is UTF-8 (RFC 8259), nothing else
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonDamaged("it is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise JsonDamaged(f"it nests deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise JsonDamaged(f"it is not JSON ({exc.msg} at line {exc.lineno})") from None
    if depth_of(value) > max_depth:
        raise JsonDamaged(f"it nests deeper than {max_depth} levels")
    if not isinstance(value, kind):
        names = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in names)
        raise JsonDamaged(f"it holds {_KIND_NAMES.get(type(value), 'a value')}, not {expected}")
    return value


_KIND_NAMES = {dict: "a mapping", list: "a list", str: "a string", int: "a number"}


def read_json(
    path: str | os.PathLike,
    *,
    kind: type | tuple[type, ...] = dict,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The JSON file at ``path``, checked (see the module); its size is looked at
    before it is read.

    Raises
    ------
    OSError
        If it cannot be read (missing, a folder, no permission).
    JsonDamaged
        If it is too large, too deep, not JSON or not of ``kind``.
    """
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise JsonDamaged(f"it is larger than {max_bytes} bytes")
    data = path.read_bytes()
    return parse_json(data, kind=kind, max_bytes=max_bytes, max_depth=max_depth)


def read_json_or_none(path: str | os.PathLike, **checks) -> Any | None:
    """:func:`read_json`, or None when the file is missing, unreadable or damaged (for
    files that are only a memo or a record: made again rather than trusted)."""
    try:
        return read_json(path, **checks)
    except (OSError, JsonDamaged):
        return None


__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "JsonDamaged",
    "depth_of",
    "parse_json",
    "read_json",
    "read_json_or_none",
]
