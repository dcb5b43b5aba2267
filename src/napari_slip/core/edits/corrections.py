"""Corrections that teach: clicks on a result add or remove objects, and every one
re-scores all candidates through a concept. No Qt: the widget's clicks, the console and
a notebook call the same :class:`Corrections`.

A click *adds* the object under it: SAM decodes that point on the image's cached
embedding (one decode, no image encoding), the candidate that is the same object
(IoU >= :data:`SAME_OBJECT`) is taken, or the new mask joins the candidates; it becomes
a positive example and is always labelled. A click on a label *removes* it: a negative
example, never labelled again. Then the concept's classifier re-scores every candidate
(:mod:`.query`): objects like the examples join, objects like the removed ones go.
Undo takes back the last correction. A run with a text prompt starts a concept of one
class (the prompt, its text the prior) whose first examples are the objects the run
kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..concepts.concept import Concept
from ..concepts.features import features_of, measure_objects
from ..concepts.query import ConceptQuery
from ..errors import InputError
from ..pipeline.plane import plane_of
from ..runtime.generators import drain

#: A decoded mask and a candidate at least this alike (IoU) are the same object.
SAME_OBJECT = 0.8


@dataclass
class Correction:
    """One click: what it did (``add`` / ``remove``), where, and to which candidate."""

    kind: str
    point: tuple[float, float]
    candidate: int
    appended: bool = False


@dataclass(frozen=True, eq=False)
class TaughtQuery(ConceptQuery):
    """A concept query whose corrected candidates are decided by the user: ``keep``
    always labelled, ``drop`` never (the classifier still reports its class)."""

    keep: frozenset = field(default_factory=frozenset)
    drop: frozenset = field(default_factory=frozenset)

    def columns(self, logit: np.ndarray) -> np.ndarray:
        out = super().columns(logit)
        if len(out):
            out[[i for i in self.keep if i < len(out)], 0] = 1e6
            out[[i for i in self.drop if i < len(out)], 0] = -1e6
        return out


def _candidates_of(result):
    """The one plane's candidates of ``result`` (a plane's or a one-plane stack's)."""
    candidates = result.candidates
    if isinstance(candidates, dict):
        if len(candidates) != 1:
            raise InputError(
                "Corrections teach on one image or one plane: segment the current slice, "
                "then use the concept on the whole stack."
            )
        ((plane, plane_candidates),) = candidates.items()
        return plane, plane_candidates
    if candidates is None:
        raise InputError("This result carries no candidates: segment again.")
    return None, candidates


class Corrections:
    """Teach a concept by correcting a result with clicks.

    Parameters
    ----------
    segmenter
        The :class:`~..pipeline.segmenter.Segmenter` that made ``result`` (its caches:
        the image, SAM's embedding, CLIP).
    result
        A plane's :class:`~..pipeline.results.SegmentationResult`, or a stack result of
        one plane (the widget's current slice).
    concept
        The concept to teach; default a new one of the result's prompt, seeded with the
        objects the result kept.
    class_name
        The class clicks add to (default the concept's first).
    """

    def __init__(
        self, segmenter, result, concept: Concept | None = None, class_name: str | None = None
    ) -> None:
        self.segmenter, self.result = segmenter, result
        self.plane, candidates = _candidates_of(result)
        self.history: list[Correction] = []
        prompt = getattr(result, "prompt", None) or result.provenance.get("prompt") or "object"
        query = getattr(result, "query", None)
        if concept is None and isinstance(query, ConceptQuery):
            concept, class_name = query.concept, class_name or query.class_name
        self.concept = concept if concept is not None else Concept([prompt], texts=[prompt])
        self.class_name = class_name or (
            self.concept.classes[0] if self.concept.classes else prompt
        )
        self.concept.add_class(self.class_name)
        #: The models and options of the run that made the result.
        self.scope = segmenter.scope(getattr(result, "config", None))
        clip = self.scope.models.load("clip")
        self._clip = (self.scope.models.clip_spec, clip.sha256)
        self.concept.bind_clip(*self._clip)
        #: The result's own image (never the segmenter's latest one).
        self.handle = plane_of(segmenter, result, self.plane)
        self._image = self.handle.image
        features_of(candidates, self._image)
        kept = self._kept_candidates(candidates)
        self._pooled = False
        if concept is None and len(kept):  # what the run kept: the first examples
            feats = features_of(candidates, self._image)
            self.concept.add(feats.take(kept), self.class_name, pool=self._pool(feats))
        self._base_steps = self.concept.step
        self.keep: set[int] = set()
        self.drop: set[int] = set()

    # -- what the user sees -----------------------------------------------------------
    @property
    def candidates(self):
        return _candidates_of(self.result)[1]

    def summary(self) -> str:
        """One line: the examples per class and the negatives."""
        counts = self.concept.counts()
        shown = ", ".join(f"{c} {counts[c]}" for c in self.concept.classes)
        return f"Examples: {shown}; not these: {counts[None]}."

    def _kept_candidates(self, candidates) -> list[int]:
        table = self.result.candidate_table
        if table is None or not len(table) or "kept" not in table:
            return []
        rows = table[table["kept"]]
        if "axis0" in rows and self.plane:
            for axis, index in enumerate(self.plane):
                rows = rows[rows[f"axis{axis}"] == index]
        return sorted(int(c) for c in rows["candidate"] if 0 <= int(c) < len(candidates))

    def _pool(self, feats):
        """This image's candidates join the concept's pool once (the first example)."""
        if self._pooled:
            return feats.take([])
        self._pooled = True
        return feats

    def _plane_labels(self) -> np.ndarray:
        labels = np.asarray(self.result.labels)
        return labels[self.plane] if self.plane else labels

    # -- corrections ------------------------------------------------------------------
    def add_at(self, y: float, x: float):
        """Add the object at pixel (``y``, ``x``) of the plane; returns the new result."""
        candidates = self.candidates
        yi, xi = self._pixel(y, x)
        index, appended = self._object_at(candidates, yi, xi)
        if appended is not None:
            candidates = appended
            self._set_candidates(candidates)
        feats = features_of(candidates, self._image)
        self.concept.add(feats.take([index]), self.class_name, pool=self._pool(feats))
        self.keep.add(index)
        self.drop.discard(index)
        self.history.append(Correction("add", (yi, xi), index, appended is not None))
        return self.rescore()

    def remove_at(self, y: float, x: float):
        """Remove the label at pixel (``y``, ``x``): a negative example; the new result."""
        yi, xi = self._pixel(y, x)
        label = int(self._plane_labels()[yi, xi])
        if not label:
            raise InputError("There is no label here to remove: click on a label.")
        table = self.result.candidate_table
        rows = table[table["id"] == label]
        if "axis0" in rows and self.plane:
            for axis, index in enumerate(self.plane):
                rows = rows[rows[f"axis{axis}"] == index]
        if not len(rows):
            raise InputError("This label is not one of the run's objects: it cannot teach.")
        index = int(rows["candidate"].iloc[0])
        feats = features_of(self.candidates, self._image)
        self.concept.add(feats.take([index]), None, pool=self._pool(feats))
        self.drop.add(index)
        self.keep.discard(index)
        self.history.append(Correction("remove", (yi, xi), index))
        return self.rescore()

    def undo(self):
        """Take back the last correction; returns the new result (None: nothing to undo)."""
        if not self.history or self.concept.step <= self._base_steps:
            return None
        last = self.history.pop()
        self.concept.undo()
        (self.keep if last.kind == "add" else self.drop).discard(last.candidate)
        if last.appended:  # the decoded mask leaves the candidates again
            self._set_candidates(_without_last(self.candidates))
        return self.rescore()

    def query(self) -> TaughtQuery:
        return TaughtQuery(
            self.concept, self.class_name, frozenset(self.keep), frozenset(self.drop)
        )

    def rescore(self):
        """Every candidate scored again through the concept (no image work)."""
        from ..params import SelectionParams

        selection = SelectionParams()  # a concept query selects by its classes (choose())
        query = self.query()
        result = self.result
        if isinstance(result.candidates, dict):
            from ..pipeline.stack import reselect_stack

            result = replace(result, query=query)
            result = reselect_stack(self.segmenter, result, selection)
        else:
            candidates = result.candidates
            config = getattr(result, "config", None)
            new = self.segmenter.select(candidates, query, selection, config=config)
            new.candidates, new.used_relevance = candidates, result.used_relevance
            result = new  # measured as its run measured (the candidates know how)
        result.query = query
        self.result = result
        return result

    # -- the object under a click ---------------------------------------------------------
    def _pixel(self, y: float, x: float) -> tuple[int, int]:
        h, w = self._image.shape[:2]
        yi, xi = int(np.floor(y)), int(np.floor(x))
        if not (0 <= yi < h and 0 <= xi < w):
            raise InputError(f"The click ({y:.0f}, {x:.0f}) is outside the image ({h} x {w}).")
        return yi, xi

    def _set_candidates(self, candidates) -> None:
        if isinstance(self.result.candidates, dict):
            self.result.candidates = {**self.result.candidates, self.plane: candidates}
        else:
            self.result.candidates = candidates

    def _object_at(self, candidates, y: int, x: int):
        """(candidate index, the extended candidates or None)."""
        source = candidates.source.get("source", "")
        if source in ("labels", "relevance") or not self.scope.models.sam_spec:
            return _containing(candidates, y, x), None
        mask = mask_at(self.handle, y, x)
        best, best_iou = -1, 0.0
        for i, ((y0, x0, y1, x1), m) in enumerate(
            zip(candidates.proposals.boxes, candidates.proposals.masks, strict=True)
        ):
            inter = int(mask[y0:y1, x0:x1][m].sum())
            if inter:
                iou = inter / (int(m.sum()) + int(mask.sum()) - inter)
                if iou > best_iou:
                    best, best_iou = i, iou
        if best >= 0 and best_iou >= SAME_OBJECT:
            return best, None
        return len(candidates), self._appended(candidates, mask)

    def _appended(self, candidates, mask: np.ndarray):
        """The candidates with one more: ``mask`` (embedded and measured)."""
        from ..pipeline.proposals import Proposals
        from ..pipeline.scoring import embed_proposals
        from ..pipeline.session import Candidates

        ys, xs = np.nonzero(mask)
        y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        box = np.array([[y0, x0, y1, x1]])
        one = Proposals(
            candidates.proposals.shape,
            box,
            [mask[y0:y1, x0:x1]],
            np.ones(1, np.float32),
            np.zeros(1, np.int64),
        )
        clip = self.scope.models.load("clip").clip
        embedding = drain(embed_proposals(clip, self._image, one, self.scope.crop_params))
        props = candidates.proposals
        joined = Proposals(
            props.shape,
            np.concatenate([np.asarray(props.boxes).reshape(-1, 4), one.boxes]),
            [*props.masks, *one.masks],
            np.concatenate([props.quality, one.quality]),
            np.concatenate([props.source_ids, one.source_ids]),
            props.decoded_points,
            sam=props.sam,
        )
        return Candidates(
            joined,
            np.concatenate([candidates.embeddings, embedding]),
            candidates.clip,
            {**candidates.source, "clicked": candidates.source.get("clicked", 0) + 1},
            candidates.normalisation,
            candidates.image_key,
            np.concatenate(
                [
                    features_of(candidates, self._image).measurements,
                    measure_objects(self._image, one),
                ]
            ),
        )


def _without_last(candidates):
    from ..pipeline.proposals import Proposals
    from ..pipeline.session import Candidates

    p = candidates.proposals
    props = Proposals(
        p.shape,
        p.boxes[:-1],
        p.masks[:-1],
        p.quality[:-1],
        p.source_ids[:-1],
        p.decoded_points,
        sam=p.sam,
    )
    source = {**candidates.source, "clicked": candidates.source.get("clicked", 1) - 1}
    return Candidates(
        props,
        candidates.embeddings[:-1],
        candidates.clip,
        source,
        candidates.normalisation,
        candidates.image_key,
        candidates.measurements[:-1],
    )


def _containing(candidates, y: int, x: int) -> int:
    """The smallest candidate whose mask holds the pixel."""
    best, area = -1, None
    for i, ((y0, x0, y1, x1), m) in enumerate(
        zip(candidates.proposals.boxes, candidates.proposals.masks, strict=True)
    ):
        if y0 <= y < y1 and x0 <= x < x1 and m[y - y0, x - x0]:
            a = int(m.sum())
            if area is None or a < area:
                best, area = i, a
    if best < 0:
        raise InputError("There is no candidate object here: click inside an object.")
    return best


def mask_at(handle, y: int, x: int) -> np.ndarray:
    """SAM's mask of the object at pixel (``y``, ``x``) of the handle's image
    (:func:`~..pipeline.plane.plane_of`), decoded on its
    cached embedding: of SAM's three masks for the point, the one with the best
    predicted IoU that holds the point. (H, W) bool."""
    found = handle.decode([(y + 0.5, x + 0.5)], [True])
    if not found.mask.any():
        raise InputError("SAM found no object at this point.")
    return found.mask


__all__ = ["SAME_OBJECT", "Correction", "Corrections", "TaughtQuery", "mask_at"]
