"""Objects of a stack, linked across planes, and selection over them.

Each plane's candidates become that plane's *parts*: every candidate, near-duplicates
removed (the one more similar to the prompt stays), painted largest first as the 2D
labels are. Parts of neighbouring planes that are the same object are linked
(:mod:`.linking`): along Z into 3D objects (objects stacked along Z cut apart again,
:mod:`.zsplit`), then along T into tracks. An object's
similarities to the prompt and its competitors are its parts' similarities weighted by
their areas, and the selection mode chooses among objects exactly as it chooses among a
plane's candidates (:func:`~.selection.select`): ``best`` is the best 3D object, a
threshold keeps or drops a whole object, distractors compete with whole objects.

Linking depends on the candidates and the prompt only, so new selection settings
re-select without linking again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..params import StackParams
from .linking import Union, link_sequence
from .proposals import Proposals, near_duplicates
from .results import paint_labels
from .selection import Selection, select
from .zsplit import part_signal, split_stacked


def partition(
    proposals: Proposals, similarity: np.ndarray, dedup_iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """A plane's parts: (H, W) labels 1..m and the candidate index of each part."""
    if not len(proposals):
        return np.zeros(proposals.shape, dtype=np.int32), np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(similarity, dtype=float), kind="stable")
    order = near_duplicates(proposals, order, dedup_iou)
    labels, _, ids = paint_labels(proposals, order, similarity[order], similarity, "")
    candidate = np.zeros(len(ids), dtype=np.int64)
    for index, local in ids.items():
        candidate[local - 1] = index
    return labels, candidate


@dataclass
class LinkedObjects:
    """A stack's parts and the objects they make.

    Attributes
    ----------
    parts
        The labels' shape: part ids, unique across the stack (0 background).
    plane_of_part, candidate_of_part, area_of_part
        Per part id (index 0 unused): its plane's position in ``planes``, its candidate
        index in that plane, its area.
    object_of_part
        Per part id: its object (0..n_objects-1); -1 at index 0.
    planes
        The planes segmented (leading indices).
    lead
        The leading axes' letters (e.g. ``"Z"``, ``"T"``, ``"TZ"``).
    """

    parts: np.ndarray
    plane_of_part: np.ndarray
    candidate_of_part: np.ndarray
    area_of_part: np.ndarray
    object_of_part: np.ndarray
    planes: list[tuple[int, ...]]
    lead: str
    #: Per object: the object it divided from along T (a track's mother), or -1.
    parent_of_object: np.ndarray | None = None

    @property
    def n_objects(self) -> int:
        return int(self.object_of_part.max(initial=-1)) + 1

    def parents(self) -> np.ndarray:
        """Per object, its mother's index or -1 (none)."""
        if self.parent_of_object is None:
            return np.full(self.n_objects, -1, dtype=np.int64)
        return self.parent_of_object


def link_parts(
    plane_parts: Sequence[tuple[np.ndarray, np.ndarray]],
    planes: Sequence[tuple[int, ...]],
    out_shape: tuple[int, ...],
    lead: str,
    params: StackParams,
    intensity: Callable[[tuple[int, ...]], np.ndarray | None] | None = None,
) -> LinkedObjects:
    """Number every plane's parts uniquely and link them along Z (objects stacked
    along Z cut apart again, :mod:`.zsplit`, with ``intensity(plane)``: the plane's
    2D intensities, or None), then along T."""
    parts = np.zeros(out_shape, dtype=np.int32)
    plane_of, cand_of, next_id = [0], [0], 1
    for n, (plane, (labels, candidate)) in enumerate(zip(planes, plane_parts, strict=True)):
        m = len(candidate)
        if m:
            parts[plane] = np.where(labels > 0, labels + (next_id - 1), 0)
        plane_of += [n] * m
        cand_of += [int(c) for c in candidate]
        next_id += m
    n_parts = next_id
    area = np.bincount(parts.ravel(), minlength=n_parts)[:n_parts] if n_parts > 1 else np.zeros(1)
    union = Union(n_parts)
    divisions: list[tuple[int, int]] = []  # (mother, daughter) parts along T
    for letter in (a for a in "ZT" if a in lead):
        axis = lead.index(letter)
        current = union.roots()
        divides = divisions if letter == "T" else None
        for sequence in _sequences(parts, planes, lead, axis, out_shape):
            frames = [None if f is None else current[f] for f in sequence]
            found = link_sequence(frames, params.min_overlap, params.max_gap, divides)
            for a, b in found:
                union.join(a, b)
        if letter == "Z" and params.split_valley > 0 and n_parts > 1:
            signal = part_signal(parts, planes, n_parts, intensity)
            depth = np.array([planes[n][axis] for n in plane_of], dtype=np.int64)
            objects = split_stacked(union.roots(), depth, signal, params.split_valley)
            union = Union.of(objects)
    roots = union.roots()
    _, obj = np.unique(roots[1:], return_inverse=True)
    object_of = np.concatenate([[-1], obj]).astype(np.int64)
    parents = np.full(int(object_of.max(initial=-1)) + 1, -1, dtype=np.int64)
    for mother, daughter in divisions:
        parents[object_of[daughter]] = object_of[mother]
    return LinkedObjects(
        parts,
        np.asarray(plane_of, dtype=np.int64),
        np.asarray(cand_of, dtype=np.int64),
        np.asarray(area, dtype=np.int64),
        object_of,
        [tuple(p) for p in planes],
        lead,
        parents,
    )


def _sequences(parts, planes, lead: str, axis: int, out_shape):
    """Along leading axis ``axis``: for each position of the other leading axes, the
    frames (label arrays; None where not segmented) in order. Linking along T compares
    whole frames (the Z axis included)."""
    n_lead = len(lead)
    done = {tuple(p) for p in planes}
    inner = [i for i in range(n_lead) if i > axis]  # axes inside a frame (Z within T)
    outer = sorted({tuple(p[i] for i in range(n_lead) if i < axis) for p in done})
    for key in outer:
        frames = []
        for position in range(out_shape[axis]):
            index = (*key, position)
            segmented = [p for p in done if p[: axis + 1] == index]
            if not segmented:
                frames.append(None)
            elif inner:
                frames.append(parts[index])  # the whole frame: every plane of it
            else:
                frames.append(parts[index])
        yield frames


def object_similarities(
    linked: LinkedObjects, plane_sims: Sequence[np.ndarray], n_phrases: int
) -> np.ndarray:
    """(objects, phrases): each object's parts' similarities, weighted by part area."""
    out = np.zeros((linked.n_objects, n_phrases))
    weight = np.zeros(linked.n_objects)
    for part in range(1, len(linked.object_of_part)):
        sims = plane_sims[linked.plane_of_part[part]]
        row = sims[linked.candidate_of_part[part]]
        obj, area = linked.object_of_part[part], linked.area_of_part[part]
        out[obj] += area * row
        weight[obj] += area
    return out / np.maximum(weight, 1)[:, None]


def select_objects(
    linked: LinkedObjects,
    plane_sims: Sequence[np.ndarray],
    mode: str,
    threshold: float | None,
    top_k: int,
    logit_scale: float,
) -> tuple[Selection, np.ndarray, np.ndarray]:
    """The selection over whole objects, the labels it paints (ids 1.. in score order)
    and each object's final id (0 where not kept)."""
    n_phrases = plane_sims[0].shape[1] if len(plane_sims) else 1
    sims = object_similarities(linked, plane_sims, n_phrases)
    chosen = select(sims, mode, threshold, top_k, logit_scale)
    final = np.zeros(linked.n_objects, dtype=np.int64)
    final[chosen.indices] = np.arange(1, len(chosen.indices) + 1)
    lut = np.zeros(len(linked.object_of_part), dtype=np.int32)
    lut[1:] = final[linked.object_of_part[1:]]
    return chosen, lut[linked.parts], final, sims


__all__ = [
    "LinkedObjects",
    "link_parts",
    "object_similarities",
    "partition",
    "select_objects",
]
