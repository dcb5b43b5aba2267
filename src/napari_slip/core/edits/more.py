"""Find more like these: what the taught concept would change, shown before it is.

Edits teach a concept (:mod:`.editor`) but change nothing else. When the user asks,
:func:`suggest` runs the concept over the plane's candidates (the run's proposals,
embedded once) and proposes

- *additions*: candidates of the editor's class (probability at least
  ``min_probability``) lying on background, each on free pixels only, with the next
  free ids;
- *removals*: objects whose own candidate the concept calls "none of them"; objects
  the user added or refined by hand are never proposed for removal.

The :class:`Suggestion` carries both lists (for a preview with counts) and one
:class:`~.edits.Edit` that applies them together, so one undo takes them back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..concepts.classifier import probabilities
from ..concepts.features import features_of
from ..concepts.query import ConceptQuery
from ..errors import InputError
from ..runtime.generators import drain
from .edit import Edit
from .editor import LabelEditor, NothingToDo
from .masks import MAX_FRACTION

#: A candidate whose pixels are this much labelled already is an object we have.
MAX_COVERED = 0.2
#: A candidate and an object at least this alike (IoU) are the same object.
SAME = 0.5


@dataclass(frozen=True, eq=False)
class Suggestion:
    """What :func:`suggest` proposes (nothing is written until ``edit`` is applied).

    ``added`` maps each new id to its probability; ``removed`` each object to remove
    to the probability that it is none of the classes.
    """

    added: dict[int, float]
    removed: dict[int, float]
    edit: Edit
    shape: tuple[int, int]

    @property
    def message(self) -> str:
        return f"Adds {len(self.added)}, removes {len(self.removed)}."

    def preview(self) -> np.ndarray:
        """The plane's preview: 1 where an object would be added, 2 where one would be
        removed, 0 elsewhere (uint8)."""
        out = np.zeros(self.shape, np.uint8)
        out[self.edit.index[-2:]] = np.where(self.edit.after > 0, 1, 2)
        return out


def suggest(editor: LabelEditor, candidates=None, min_probability: float = 0.5) -> Suggestion:
    """What ``editor``'s concept would add and remove on its plane (see the module).

    Parameters
    ----------
    editor
        An editor with a concept (``napari_slip.edit(..., concept=...)``).
    candidates
        The plane's candidates (default the editor's: the result's of its plane).
    min_probability
        How sure the concept must be to propose a change (0.5-1).
    """
    concept = editor.concept
    candidates = editor.candidates if candidates is None else candidates
    if candidates is None:
        raise InputError("This editor has no candidates to suggest from: give them.")
    if concept is None or not len(concept.examples):
        raise InputError("Teach the concept first: add or remove an object with a click.")
    if not 0.0 <= min_probability <= 1.0:
        raise InputError(f"min_probability must be 0-1; got {min_probability}.")
    probs = _probabilities(editor, candidates)
    k = concept.class_index(editor.class_name) if editor.class_name else 0
    best, none = probs.argmax(axis=1), probs.shape[1] - 1
    original = np.asarray(editor.plane_labels)
    plane = original.copy()
    boxes, crops = (
        np.asarray(candidates.proposals.boxes).reshape(-1, 4),
        candidates.proposals.masks,
    )
    removed: dict[int, float] = {}
    for label in (int(v) for v in np.unique(original) if v and int(v) not in editor.chosen):
        mine = original == label
        i = _best_match(mine, boxes, crops)
        if i is not None and best[i] == none and probs[i, none] >= min_probability:
            removed[label] = float(probs[i, none])
            plane[mine] = 0
    added: dict[int, float] = {}
    rows: dict[int, dict] = {}
    text = editor.handle.text_embedding(editor.prompt) if editor.prompt else None
    for i in np.argsort(-probs[:, k]):
        if best[i] != k or probs[i, k] < min_probability:
            continue
        y0, x0, y1, x1 = (int(v) for v in boxes[i])
        crop = np.asarray(crops[i], dtype=bool)
        if _not_an_object(crop, original[y0:y1, x0:x1], original.size):
            continue
        free = crop & (plane[y0:y1, x0:x1] == 0)
        if free.sum() < 0.5 * crop.sum():  # mostly another suggestion's
            continue
        label = editor.next_id() + len(added)
        plane[y0:y1, x0:x1][free] = label
        added[label] = float(probs[i, k])
        similarity = float(candidates.embeddings[i] @ text) if text is not None else np.nan
        rows[label] = {"score": similarity, "similarity": similarity, "prompt": editor.prompt}
    message = f"Added {len(added)} and removed {len(removed)} objects like the examples."
    edit = editor.edit_to(plane, "more", message, rows)
    return Suggestion(added, removed, edit, tuple(original.shape))


@dataclass(frozen=True, eq=False)
class Question:
    """A candidate the concept is unsure about: its mask on the plane, its
    probability of the editor's class, and its features (for the answer)."""

    candidate: int
    probability: float
    mask: np.ndarray
    box: tuple[int, int, int, int]
    features: object
    row: dict


def ask(editor: LabelEditor, n: int = 10, candidates=None) -> list[Question]:
    """The ``n`` candidates on background the concept is least sure about (its
    probability of the editor's class nearest 0.5), to be answered yes or no one by
    one (:func:`answer`): each answer is an example, a yes also adds the object."""
    candidates = editor.candidates if candidates is None else candidates
    if candidates is None or editor.concept is None or not len(editor.concept.examples):
        raise InputError("Teach the concept first: add or remove an object with a click.")
    probs = _probabilities(editor, candidates)
    k = editor.concept.class_index(editor.class_name) if editor.class_name else 0
    original = np.asarray(editor.plane_labels)
    boxes = np.asarray(candidates.proposals.boxes).reshape(-1, 4)
    text = editor.handle.text_embedding(editor.prompt) if editor.prompt else None
    features = features_of(candidates, editor.handle.image)
    questions = []
    for i in np.argsort(np.abs(probs[:, k] - 0.5)):
        y0, x0, y1, x1 = (int(v) for v in boxes[i])
        crop = np.asarray(candidates.proposals.masks[i], dtype=bool)
        if _not_an_object(crop, original[y0:y1, x0:x1], original.size):
            continue
        mask = np.zeros(original.shape, dtype=bool)
        mask[y0:y1, x0:x1] = crop
        similarity = float(candidates.embeddings[i] @ text) if text is not None else np.nan
        row = {"score": similarity, "similarity": similarity}
        box = (y0, x0, y1, x1)
        questions.append(Question(int(i), float(probs[i, k]), mask, box, features.take([i]), row))
        if len(questions) == n:
            break
    return questions


def answer(editor: LabelEditor, question: Question, yes: bool) -> Edit:
    """The edit of an answer: yes adds the candidate on background pixels (an example
    of the class), no changes no pixel (an example of "not this")."""
    if not yes:
        empty = tuple(np.zeros(0, dtype=np.intp) for _ in range(editor.labels.ndim))
        none = np.zeros(0, dtype=editor.labels.dtype)
        message = "Not this one: remembered."
        made = Edit("not", 0, empty, none, none, message, None, {}, question.features)
        return replace(made, plane=editor.plane, described=True)
    free = question.mask & (editor.plane_labels == 0)
    if not free.any():
        raise NothingToDo("Its pixels are all labelled already: nothing added.")
    label = editor.next_id()
    rows = {label: {"prompt": editor.prompt, "source_id": 0, **question.row}}
    made = editor.edit_of("add", label, free, label, f"Added object {label}.", rows)
    return replace(made, example=question.features, described=True)


def _probabilities(editor: LabelEditor, candidates) -> np.ndarray:
    """(N, classes + 1) probabilities of the candidates under the editor's concept."""
    handle = editor.handle
    features_of(candidates, handle.image)  # measured once, kept with the candidates
    clip = drain(handle.context.iter_load("clip")).clip
    query = ConceptQuery(editor.concept, editor.class_name)
    texts = handle.context.relevance.texts
    return probabilities(query.logits(candidates, texts, clip.logit_scale))


def _not_an_object(crop: np.ndarray, labels: np.ndarray, size: int) -> bool:
    """A candidate not to propose: empty, mostly labelled already (``labels``: under
    its box), or most of the image of ``size`` pixels (SAM's "everything")."""
    if not crop.any() or crop.sum() > MAX_FRACTION * size:
        return True
    return bool((labels[crop] > 0).mean() > MAX_COVERED)


def _best_match(mine: np.ndarray, boxes: np.ndarray, crops) -> int | None:
    """The candidate most like the object (IoU at least :data:`SAME`), or None."""
    ys, xs = np.nonzero(mine)
    oy0, ox0, oy1, ox1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    best, best_iou, area = None, SAME, len(ys)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        if y0 >= oy1 or y1 <= oy0 or x0 >= ox1 or x1 <= ox0:
            continue
        inter = int(np.logical_and(mine[y0:y1, x0:x1], crops[i]).sum())
        if inter:
            iou = inter / (area + int(np.count_nonzero(crops[i])) - inter)
            if iou >= best_iou:
                best, best_iou = i, iou
    return best


__all__ = ["Question", "Suggestion", "answer", "ask", "suggest"]
