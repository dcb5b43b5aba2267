"""Learn a concept from a labelled folder (the fine-tuning format: ``images/``,
``labels/``, ``classes.csv`` with ``image,label,class``), optionally from only ``shots``
objects per class (few-shot measurements)."""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence

import numpy as np

from ..concepts.concept import DEFAULT_FEATURES, Concept
from ..concepts.features import features_of
from ..errors import InputError
from ..runtime.progress import Progress


def absent_objects(items) -> list[tuple[str, int, str]]:
    """``(image, label, class)`` of each classes.csv row whose label is in no pixel of
    its label image (a typo, or a label image that changed)."""
    out = []
    for item in items:
        present = set(np.unique(item.labels).tolist())
        out += [(item.name, int(k), v) for k, v in item.classes.items() if k not in present]
    return out


def check_absent(items) -> str:
    """Refuse a class none of whose objects is in the label images (it would vanish
    from the concept); return a line about the other absent rows ("" if none)."""
    absent = absent_objects(items)
    if not absent:
        return ""
    named = {name for item in items for name in item.classes.values()}
    missing = {(img, label) for img, label, _ in absent}
    found = {
        name
        for item in items
        for label, name in item.classes.items()
        if (item.name, int(label)) not in missing
    }
    gone = sorted(named - found)
    shown = "; ".join(f"{img} label {label} ({cls})" for img, label, cls in absent[:3])
    more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
    if gone:
        raise InputError(
            f"classes.csv names no object of class {', '.join(map(repr, gone))} that is in "
            f"the label images ({shown}{more}): fix classes.csv or the label images."
        )
    return (
        f"skipped {len(absent)} row(s) of classes.csv whose label is in no label image: "
        f"{shown}{more}."
    )


def pick_shots(items, shots: int | None, seed: int) -> dict[int, dict[int, str]]:
    """``{item index: {label: class}}``: every labelled object, or ``shots`` per class
    drawn at random (``seed``)."""
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise InputError(f"shots must be a whole number of at least 1; got {shots!r}.")
    per_class: dict[str, list[tuple[int, int]]] = {}
    for i, item in enumerate(items):
        present = set(np.unique(item.labels).tolist())
        for label, name in item.classes.items():
            if label in present:
                per_class.setdefault(name, []).append((i, label))
    if not per_class:
        raise InputError("No labelled object of classes.csv is in its label images.")
    rng = np.random.default_rng(seed)
    chosen: dict[int, dict[int, str]] = {}
    for name in sorted(per_class):
        objects = per_class[name]
        if shots is not None and shots < len(objects):
            objects = [objects[j] for j in sorted(rng.choice(len(objects), shots, replace=False))]
        for i, label in objects:
            chosen.setdefault(i, {})[label] = name
    return chosen


def iter_learn(
    data: str | os.PathLike | Sequence,
    segmenter,
    *,
    shots: int | None = None,
    seed: int = 0,
    features: Sequence[str] = DEFAULT_FEATURES,
    text: bool = True,
    name: str | None = None,
) -> Generator[Progress, None, Concept]:
    """A concept of the classes of ``data`` (a dataset folder, or its
    :class:`~..training.datasets.DatasetImage` items), their examples embedded by
    ``segmenter``'s CLIP. ``text``: each class's name is also its text prior."""
    from .datasets import read_dataset_folder

    items = read_dataset_folder(data) if isinstance(data, (str, os.PathLike)) else list(data)
    skipped = check_absent(items)  # before any model work
    if skipped:
        yield Progress("skipped", 1, 1, skipped)
    chosen = pick_shots(items, shots, seed)
    classes = sorted({c for per in chosen.values() for c in per.values()})
    concept = Concept(classes, texts=None if text else False, features=features, name=name)
    clip = yield from segmenter.model_set.iter_load("clip")
    concept.bind_clip(segmenter.clip_spec, clip.sha256)
    for n, i in enumerate(sorted(chosen)):
        item = items[i]
        yield Progress("learning", n, len(chosen), item.name)
        labels = np.asarray(item.labels)
        if labels.ndim != 2:
            raise InputError(f"{item.name}: the concept learns from 2D label images.")
        candidates = yield from segmenter.iter_candidates(item.image, labels=labels)
        feats = features_of(candidates, segmenter.image)
        source = np.asarray(candidates.proposals.source_ids)
        rows = [int(np.flatnonzero(source == label)[0]) for label in chosen[i]]
        concept.add(feats.take(rows), list(chosen[i].values()), pool=feats)
    yield Progress("learning", len(chosen), len(chosen), repr(concept))
    return concept


__all__ = ["absent_objects", "check_absent", "iter_learn", "pick_shots"]
