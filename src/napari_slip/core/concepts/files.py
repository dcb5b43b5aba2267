"""``.concept`` files: safetensors (the examples' features and the pool's moments) with
JSON metadata (classes, texts, feature groups, the CLIP by name and SHA-256).

The header is read and checked before any tensor is: its size, every tensor's dtype
and shape against what a concept holds (and the file's size), the metadata's types
and lengths; so a truncated, hostile or foreign file is one line and allocates
nothing large.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.atomic import atomic_write
from ..runtime.json_files import JsonDamaged, parse_json
from .base import GROUP_ORDER, MAX_CLASSES, MAX_EXAMPLES, MAX_NAME, Examples, check_features
from .features import MEASUREMENTS

FORMAT = "napari-slip-concept"
VERSION = 1
#: A concept's header is a few kB; refuse one larger than this before reading it.
MAX_HEADER = 4 * 2**20
MAX_CLIP_DIM = 4096
_DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64}


def save_concept(concept: Any, path) -> Path:
    """Write ``concept`` to ``path`` (``.concept`` added if missing), atomically."""
    from safetensors.numpy import save_file

    path = Path(path).expanduser()
    if path.suffix != ".concept":
        path = path.with_name(path.name + ".concept")
    if not concept.classes:
        raise InputError("This concept has no class yet: add an example first.")
    ex, pool = concept.examples, concept.pool
    dim = ex.clip.shape[1] if len(ex) else (0 if pool.c_sum is None else len(pool.c_sum))
    tensors = {
        "measurements": np.ascontiguousarray(ex.measurements, dtype=np.float64).reshape(
            -1, len(MEASUREMENTS)
        ),
        # (no example and no pool yet: a text-only concept, (0, 0) embeddings)
        "clip": np.ascontiguousarray(ex.clip, dtype=np.float32).reshape(len(ex), dim),
        "labels": np.ascontiguousarray(ex.labels, dtype=np.int64),
        "steps": np.ascontiguousarray(ex.steps, dtype=np.int64),
    }
    if pool.n:
        tensors |= {
            "pool_m_sum": pool.m_sum,
            "pool_m_sq": pool.m_sq,
            "pool_c_sum": pool.c_sum,
            "pool_c_outer": pool.c_outer.astype(np.float64),
        }
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "name": concept.given_name,
        "classes": list(concept.classes),
        "texts": list(concept.texts),
        "use_text": concept.use_text,
        "features": list(concept.features),
        "reject": concept.reject,
        "measurements": list(MEASUREMENTS),
        "pool_n": int(pool.n),
        "clip": dict(concept.clip),
    }
    if concept.features == ("auto",) and (concept.classes and len(concept.examples)):
        # The feature choice, saved so that loading does not make it again.
        meta["chosen"] = {
            "groups": list(concept.chosen_features()),
            "examples": len(concept.examples),
            "classes": len(concept.classes),
        }
    metadata = {"napari_slip": json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def concept_dir() -> Path:
    """Where the widget saves concepts and ``--concept NAME`` finds them (cache folder)."""
    from ..models.download import cache_dir

    return cache_dir() / "concepts"


def saved_concepts() -> list[Path]:
    """The ``.concept`` files of :func:`concept_dir`, by name."""
    folder = concept_dir()
    return sorted(folder.glob("*.concept")) if folder.is_dir() else []


def fingerprint(concept: Any) -> str:
    """A content hash of what a concept decides with (examples, pool, classes, options)."""
    import hashlib

    h = hashlib.sha256()
    ex, pool = concept.examples, concept.pool
    for a in (ex.measurements, ex.clip, ex.labels, pool.m_sum, pool.m_sq, pool.c_sum):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    h.update(
        json.dumps(
            [
                concept.classes,
                concept.texts,
                list(concept.features),
                concept.reject,
                pool.n,
                concept.clip,
            ]
        ).encode()
    )
    return h.hexdigest()[:16]


def describe(concept: Any) -> dict:
    """A concept as plain data (provenance, logs)."""
    counts = concept.counts()
    return {
        "name": concept.name,
        "classes": list(concept.classes),
        "texts": list(concept.texts),
        "examples": {c: counts[c] for c in concept.classes},
        "negatives": counts[None],
        "features": list(concept.features),
        "chosen_features": list(concept.chosen_features()),
        "clip": dict(concept.clip),
        "fingerprint": fingerprint(concept),
    }


def _fail(path: Path, why: str) -> InputError:
    return InputError(f"{path.name} is not a usable concept file: {why}.")


def read_header(path: Path) -> tuple[dict, dict]:
    """The tensors' descriptions and the metadata, checked (see the module)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _fail(path, "it is too short (truncated?)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n + 8 > size:
            raise _fail(path, f"its header claims {n} bytes (truncated or not a concept)")
        try:
            header = parse_json(fh.read(n), max_bytes=MAX_HEADER)
        except JsonDamaged as exc:
            raise _fail(path, f"its header is damaged: {exc}") from None
    raw = header.pop("__metadata__", {})
    try:
        meta = parse_json(raw["napari_slip"], max_bytes=MAX_HEADER)
    except (KeyError, TypeError, JsonDamaged):
        raise _fail(path, "it has no napari-slip concept metadata") from None
    if meta.get("format") != FORMAT:
        raise _fail(path, "it is not a napari-slip concept")
    if meta.get("version") != VERSION:
        raise _fail(
            path, f"it is format version {meta.get('version')!r}; this napari-slip reads {VERSION}"
        )
    end = 0
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
            raise _fail(path, f"tensor {str(name)[:40]!r} has an unexpected type")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise _fail(path, f"tensor {str(name)[:40]!r} has a malformed shape")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        ):
            raise _fail(path, f"tensor {str(name)[:40]!r} has malformed offsets")
        end = max(end, offsets[1])
    if end + 8 + n > size:
        raise _fail(path, f"it is truncated ({size} bytes, its tensors need {end + 8 + n})")
    return header, meta


def _check_meta(path: Path, meta: dict, header: dict) -> None:
    classes, texts = meta.get("classes"), meta.get("texts")
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise _fail(path, f"it must name 1 to {MAX_CLASSES} classes")
    if not all(isinstance(c, str) and 0 < len(c) <= MAX_NAME for c in classes) or len(
        set(classes)
    ) != len(classes):
        raise _fail(
            path, f"its class names must be distinct texts of at most {MAX_NAME} characters"
        )
    if (
        not isinstance(texts, list)
        or len(texts) != len(classes)
        or not all(t is None or (isinstance(t, str) and len(t) <= MAX_NAME) for t in texts)
    ):
        raise _fail(path, "its texts must be one text (or null) per class")
    if meta.get("measurements") != list(MEASUREMENTS):
        raise _fail(path, "it was measured by another napari-slip version (other measurements)")
    clip = meta.get("clip")
    if not isinstance(clip, dict) or not all(isinstance(v, str) for v in clip.values()):
        raise _fail(path, "its CLIP record is malformed")
    expected = {
        "measurements": ("F64", None, len(MEASUREMENTS)),
        "clip": ("F32", None, "dim"),
        "labels": ("I64", None),
        "steps": ("I64", None),
    }
    if set(expected) - set(header):
        raise _fail(path, f"it lacks the tensors {sorted(set(expected) - set(header))}")
    n = header["labels"]["shape"][0] if len(header["labels"]["shape"]) == 1 else -1
    dim = header["clip"]["shape"][-1] if len(header["clip"]["shape"]) == 2 else -1
    if not 0 <= n <= MAX_EXAMPLES or not 0 <= dim <= MAX_CLIP_DIM:
        raise _fail(
            path,
            f"it holds {n} examples of {dim} values (at most {MAX_EXAMPLES} of {MAX_CLIP_DIM})",
        )
    shapes = {
        "measurements": [n, len(MEASUREMENTS)],
        "clip": [n, dim],
        "labels": [n],
        "steps": [n],
        "pool_m_sum": [len(MEASUREMENTS)],
        "pool_m_sq": [len(MEASUREMENTS)],
        "pool_c_sum": [dim],
        "pool_c_outer": [dim, dim],
    }
    for name, info in header.items():
        if name not in shapes or info["shape"] != shapes[name]:
            raise _fail(
                path,
                f"tensor {str(name)[:40]!r} has shape {info['shape']}, not "
                f"{shapes.get(name, 'none')}",
            )


def load_concept(path, cls) -> Any:
    """Read a concept file written by :func:`save_concept` into a ``cls``
    (:class:`~.concept.Concept`)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"The concept file {path} does not exist.")
    header, meta = read_header(path)
    _check_meta(path, meta, header)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(
            path, f"its tensors cannot be read ({str(exc).splitlines()[0][:80]})"
        ) from None
    labels = tensors["labels"]
    if len(labels) and (labels.min() < -1 or labels.max() >= len(meta["classes"])):
        raise _fail(path, "an example names a class the file does not have")
    if not all(np.isfinite(t).all() for t in tensors.values()):
        raise _fail(path, "it holds non-finite numbers")
    pool_n = meta.get("pool_n")
    if not isinstance(pool_n, int) or pool_n < 0 or (pool_n > 0) != ("pool_m_sum" in tensors):
        raise _fail(path, "its pool record is malformed")
    try:
        concept = cls(
            meta["classes"],
            texts=meta["texts"] if meta.get("use_text", True) else False,
            features=check_features(meta.get("features", ())),
            reject=meta.get("reject", 0.999),
            name=meta.get("name"),
        )
    except InputError as exc:
        raise _fail(path, str(exc).rstrip(".")) from None
    concept.texts = list(meta["texts"])
    concept.examples = Examples(tensors["measurements"], tensors["clip"], labels, tensors["steps"])
    concept.step = int(tensors["steps"].max(initial=0))
    if pool_n:
        pool = concept.pool
        pool.n = pool_n
        pool.m_sum, pool.m_sq = tensors["pool_m_sum"], tensors["pool_m_sq"]
        pool.c_sum, pool.c_outer = tensors["pool_c_sum"], tensors["pool_c_outer"]
    concept.clip = dict(meta["clip"])
    concept.feature_choice = _saved_choice(meta.get("chosen"), concept)
    return concept


def _saved_choice(chosen: Any, concept: Any) -> tuple | None:
    """The saved feature choice, if it is well formed and fits the examples read (a
    hand-edited one is ignored: the choice is then made again)."""
    if not isinstance(chosen, dict):
        return None
    groups, n, classes = chosen.get("groups"), chosen.get("examples"), chosen.get("classes")
    if not (isinstance(groups, list) and groups and all(g in GROUP_ORDER for g in groups)):
        return None
    if len(set(groups)) != len(groups) or n != len(concept.examples):
        return None
    if classes != len(concept.classes):
        return None
    return tuple(g for g in GROUP_ORDER if g in groups), n, classes


__all__ = [
    "FORMAT",
    "VERSION",
    "concept_dir",
    "describe",
    "fingerprint",
    "load_concept",
    "read_header",
    "save_concept",
    "saved_concepts",
]
