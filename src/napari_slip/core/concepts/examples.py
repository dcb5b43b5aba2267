"""Examples from label images, masks and a run's candidates, with their features.

An example is an object: a label of a label image (of any image or plane), a mask, a
candidate of a run (what a click in napari picks), or SAM's mask under a click. Its
features are measured on the image and its crop embedded by the segmenter's CLIP
(the same masked crop the engine scores), and the CLIP is recorded in the concept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import InputError
from ..runtime.generators import drain
from .features import ObjectFeatures, features_of


def _class_of(classes, ids: np.ndarray) -> dict[int, str | None]:
    if isinstance(classes, Mapping):
        out = {}
        for key, value in classes.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
                raise InputError(f"Label ids are integers; got {key!r}.")
            if value is not None and not isinstance(value, str):
                raise InputError(
                    f"The class of label {key} must be a name or None; got {value!r}."
                )
            out[int(key)] = value
        return out
    if classes is not None and not isinstance(classes, str):
        raise InputError(
            "classes is a class name (every label), None (negative examples) or a "
            f"mapping {{label id: class name}}; got {type(classes).__name__}."
        )
    return {int(i): classes for i in ids}


def bind(concept, segmenter) -> None:
    """Record (or check) the segmenter's CLIP in the concept."""
    clip = segmenter.model_set.load("clip")
    concept.bind_clip(segmenter.clip_spec, clip.sha256)


def add_labels(concept, segmenter, image, labels, classes, *, ids=None, **normalisation) -> int:
    """Add the objects of ``labels`` (a label image of ``image``'s plane) as examples.

    ``classes``: one class name for every label (or those in ``ids``), None for negative
    examples, or ``{label id: class name or None}``. All labels of the image make the
    pool the examples were chosen among. Returns the step (:meth:`Concept.undo`).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"Example labels must be a 2D label image; got shape {labels.shape}.")
    present = np.unique(labels)
    present = present[present > 0]
    if not len(present):
        raise InputError("The example labels are empty: there is no object to learn from.")
    chosen = _class_of(classes, present if ids is None else np.asarray(ids).ravel())
    missing = sorted(set(chosen) - {int(v) for v in present})
    if missing:
        raise InputError(
            f"Label {missing[0]} is not in the label image (it has {len(present)} labels, "
            f"{int(present.min())}..{int(present.max())})."
        )
    bind(concept, segmenter)
    candidates = drain(segmenter.iter_candidates(image, labels=labels, **normalisation))
    features = features_of(candidates, segmenter.image)
    source = np.asarray(candidates.proposals.source_ids)
    rows, names = [], []
    for label, name in chosen.items():
        found = np.flatnonzero(source == label).tolist()
        rows += found
        names += [name] * len(found)
    return concept.add(features.take(rows), names, pool=features)


def add_candidates(concept, candidates, image, indices, class_name, *, clip_spec, clip_sha256):
    """Add candidates of a run (``indices`` into them) as examples; the run's candidates
    are the pool. ``image`` is the image they were measured on (``segmenter.image``)."""
    features = features_of(candidates, image)
    indices = np.asarray(indices, dtype=np.int64).ravel()
    if not len(indices) or indices.min() < 0 or indices.max() >= len(features):
        raise InputError("The example is not one of the run's candidates.")
    concept.bind_clip(clip_spec, clip_sha256)
    return concept.add(features.take(indices), class_name, pool=features)


def features_of_mask(segmenter, mask: np.ndarray) -> ObjectFeatures:
    """The features of one mask of the segmenter's current image (a click's mask)."""
    mask = np.asarray(mask, dtype=bool)
    image = segmenter.image
    if image is None:
        raise InputError("No image: segment it first.")
    if mask.shape != tuple(image.shape[:2]):
        raise InputError(f"The mask is {mask.shape}, the image {tuple(image.shape[:2])}.")
    if not mask.any():
        raise InputError("No example to add: the example's mask is empty.")
    candidates = drain(segmenter.iter_candidates(None, labels=mask.astype(np.uint8)))
    return features_of(candidates, image)


__all__ = ["add_candidates", "add_labels", "bind", "features_of_mask"]
