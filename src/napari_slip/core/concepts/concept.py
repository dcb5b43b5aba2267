"""A concept: what to find, shown rather than named, that travels to every image.

A :class:`Concept` holds one or more classes (each with an optional text), the features
of their examples (positive, or negative: "not this"), never their pixels, and the
moments of the objects the examples were chosen among. Its classifier
(:mod:`.classifier`) is fitted from these in milliseconds whenever they change.

Use it wherever a prompt goes: ``segment(image, concept)``, ``Segmenter.segment``,
``segment_in_viewer``, ``batch``, stacks and tiles; each object then gets its most
probable class, or none (``class_name=`` keeps one class only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .base import (
    DEFAULT_FEATURES,
    GROUP_ORDER,
    MAX_CLASSES,
    MAX_EXAMPLES,
    Examples,
    check_features,
    check_name,
)
from .classifier import Model, Pool, Space, fit, loo_loss, probabilities
from .classifier import logits as class_logits
from .features import GROUPS, MEASUREMENTS, ObjectFeatures


class Concept:
    """Classes shown by examples (and optionally named), with a few-shot classifier.

    Parameters
    ----------
    classes
        Class names (``"mitotic"`` or ``["round", "spiky"]``); more are added by
        naming them in :meth:`add`.
    texts
        Each class's text for CLIP (None entries: none). Default: each class's name is
        its text; ``texts=False``: examples alone.
    features
        Feature groups used: ``shape``, ``intensity``, ``texture`` (measurements) and
        ``clip`` (the crop embedding); default all.
    reject
        An object farther from every class than this quantile of a member's distance
        is "none" (0.5-0.999999).
    name
        What to call the concept (tables, the widget); default its classes' names.

    Examples
    --------
    >>> concept = Concept(["round", "spiky"], texts=False)  # doctest: +SKIP
    >>> concept.add_labels(img, labels, {3: "round", 8: "spiky"}, segmenter=seg)  # doctest: +SKIP
    >>> result = napari_slip.segment(other_image, concept)  # doctest: +SKIP
    >>> result.table[["id", "class", "class_probability"]]  # doctest: +SKIP
    """

    def __init__(
        self,
        classes: str | Sequence[str] = (),
        *,
        texts: Sequence[str | None] | bool | None = None,
        features: Sequence[str] = DEFAULT_FEATURES,
        reject: float = 0.999,
        name: str | None = None,
    ) -> None:
        classes = [classes] if isinstance(classes, str) else list(classes)
        if len(classes) > MAX_CLASSES:
            raise InputError(f"A concept holds at most {MAX_CLASSES} classes; got {len(classes)}.")
        self.classes: list[str] = []
        self.texts: list[str | None] = []
        self.use_text = texts is not False
        given = None if texts in (None, True, False) else list(texts)
        if given is not None and len(given) != len(classes):
            raise InputError(
                f"Give one text per class: {len(classes)} classes, {len(given)} texts."
            )
        for i, c in enumerate(classes):
            index = self.add_class(c, given[i] if given is not None else None)
            if given is not None and given[i] is None:
                self.texts[index] = None  # this class has no text
        self.features = check_features(features)
        if not isinstance(reject, (int, float)) or not 0.5 <= float(reject) < 1:
            raise InputError(f"reject must be a quantile between 0.5 and 1; got {reject!r}.")
        self.reject = float(reject)
        self._name = None if name is None else check_name(name, "The concept's name")
        self.examples = Examples.empty()
        self.pool = Pool()
        #: The CLIP the embeddings come from: ``{"spec": ..., "sha256": ...}``.
        self.clip: dict = {}
        #: The last step examples were added in (each :meth:`add` is one).
        self.step = 0
        self._fitted: tuple | None = None
        #: The last ``features="auto"`` choice: (groups, examples then, classes then);
        #: saved in the file with the examples it was made on.
        self.feature_choice: tuple | None = None

    # -- what it is -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name or (" | ".join(self.classes) if self.classes else "concept")

    @property
    def given_name(self) -> str | None:
        """The name given when it was made (None: named after its classes)."""
        return self._name

    def __repr__(self) -> str:
        counts = self.counts()
        shown = ", ".join(f"{c}: {counts[c]}" for c in self.classes)
        return (
            f"Concept({self.name!r}, examples {{{shown}}}, negatives "
            f"{counts[None]}, features {'+'.join(self.features)})"
        )

    def counts(self) -> dict[str | None, int]:
        """Examples per class (None: negatives)."""
        labels = self.examples.labels
        out: dict[str | None, int] = {
            c: int((labels == i).sum()) for i, c in enumerate(self.classes)
        }
        out[None] = int((labels == -1).sum())
        return out

    def add_class(self, name: str, text: str | None = None) -> int:
        """Add a class (its index); an existing name returns its index."""
        name = check_name(name)
        if name in self.classes:
            return self.classes.index(name)
        if len(self.classes) >= MAX_CLASSES:
            raise InputError(f"A concept holds at most {MAX_CLASSES} classes.")
        if text is not None:
            text = check_name(text, "A class's text")
        self.classes.append(name)
        self.texts.append(text if text is not None else (name if self.use_text else None))
        self._fitted = None
        return len(self.classes) - 1

    def class_index(self, name: str | None) -> int | None:
        """The index of class ``name`` (None: all classes)."""
        if name is None:
            return None
        if name not in self.classes:
            raise InputError(
                f"The concept {self.name!r} has no class {name!r}; its classes are "
                f"{', '.join(map(repr, self.classes)) or 'none yet'}."
            )
        return self.classes.index(name)

    @property
    def has_text(self) -> bool:
        return self.use_text and any(t for t in self.texts)

    # -- examples ---------------------------------------------------------------------
    def bind_clip(self, spec: str, sha256: str) -> None:
        """Record the CLIP the embeddings come from; refuse another one."""
        if not self.clip:
            self.clip = {"spec": str(spec), "sha256": str(sha256)}
        else:
            self.check_clip(sha256, spec)

    def clip_spec(self) -> str | None:
        """The CLIP the concept was learnt with, where usable here (a model name, or a
        file that exists on this machine); None otherwise."""
        import os

        spec = self.clip.get("spec")
        if not spec:
            return None
        if os.path.isfile(os.path.expanduser(spec)):
            return spec
        looks_like_path = os.sep in spec or "/" in spec or spec.endswith((".safetensors", ".pt"))
        return None if looks_like_path else spec

    def check_clip(self, sha256: str, spec: str = "") -> None:
        """Refuse a CLIP other than the one the examples were embedded with."""
        known = self.clip.get("sha256")
        if known and sha256 and known != sha256:
            raise InputError(
                f"The concept {self.name!r} was learnt with CLIP {self.clip.get('spec')} "
                f"(sha256 {known[:12]}...), but the CLIP in use is {spec or 'another'} "
                f"(sha256 {sha256[:12]}...). Choose the CLIP it was learnt with, or learn "
                "the concept again with this one."
            )

    def add(
        self,
        features: ObjectFeatures,
        class_name: str | Sequence[str | None] | None,
        pool: ObjectFeatures | None = None,
    ) -> int:
        """Add examples of ``class_name`` (None: negative examples, "none of them"; a
        list: one name per example) and the objects they were chosen among (``pool``;
        default the examples), as one step (:meth:`undo` removes it). Returns the step."""
        if not isinstance(features, ObjectFeatures) or not len(features):
            raise InputError("No example to add: the example's mask is empty.")
        if features.measurements.shape[1] != len(MEASUREMENTS):
            raise InputError("These features were measured by another napari-slip version.")
        dim = self.examples.clip.shape[1] if len(self.examples) else features.clip.shape[1]
        if features.clip.shape[1] != dim:
            raise InputError(
                f"These examples have CLIP embeddings of {features.clip.shape[1]} values, "
                f"the concept's have {dim}: they come from another CLIP."
            )
        if len(self.examples) + len(features) > MAX_EXAMPLES:
            raise InputError(f"A concept holds at most {MAX_EXAMPLES} examples.")
        names = (
            class_name if isinstance(class_name, (list, tuple)) else [class_name] * len(features)
        )
        if len(names) != len(features):
            raise InputError(f"{len(features)} examples but {len(names)} class names.")
        label = np.array([-1 if n is None else self.add_class(n) for n in names], dtype=np.int64)
        self.step += 1
        ex = self.examples
        self.examples = Examples(
            np.concatenate(
                [ex.measurements.reshape(-1, len(MEASUREMENTS)), features.measurements]
            ),
            np.concatenate([ex.clip.reshape(-1, dim), features.clip.astype(np.float32)]),
            np.concatenate([ex.labels, label]),
            np.concatenate([ex.steps, np.full(len(features), self.step, dtype=np.int64)]),
        )
        pool = features if pool is None else pool
        self.pool.add(pool.measurements, pool.clip)
        self._fitted = None
        return self.step

    def undo(self) -> bool:
        """Remove the examples of the last :meth:`add` (the pool keeps its moments)."""
        if not len(self.examples):
            return False
        return self.withdraw(int(self.examples.steps.max()))

    def withdraw(self, step: int) -> bool:
        """Remove the examples of :meth:`add`'s step ``step`` (any step, not only the
        last: an edit undone elsewhere); False when it holds none."""
        keep = self.examples.steps != step
        if keep.all():
            return False
        ex = self.examples
        self.examples = Examples(
            ex.measurements[keep], ex.clip[keep], ex.labels[keep], ex.steps[keep]
        )
        self._fitted = None
        return True

    def add_labels(self, image, labels, classes, *, segmenter, ids=None, **normalisation) -> int:
        """Add objects of a label image as examples (see :func:`.examples.add_labels`)."""
        from .examples import add_labels

        return add_labels(self, segmenter, image, labels, classes, ids=ids, **normalisation)

    def add_mask(self, image, mask, class_name, *, segmenter, **normalisation) -> int:
        """Add one object given as a boolean mask of ``image`` (see
        :func:`.examples.add_labels`)."""
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise InputError(f"The example's mask must be boolean; got {mask.dtype}.")
        return self.add_labels(
            image, mask.astype(np.uint8), {1: class_name}, segmenter=segmenter, **normalisation
        )

    # -- the classifier ---------------------------------------------------------------
    def _model(self) -> tuple[Space, Model]:
        if self._fitted is None:
            if not len(self.examples) and not self.has_text:
                raise InputError(
                    f"The concept {self.name!r} has no examples yet: add one (a label, a "
                    "mask, or a click in napari) or give its classes a text."
                )
            if not self.classes:
                raise InputError(
                    f"The concept {self.name!r} has negative examples only: "
                    "add an example of what to find."
                )
            groups = self.chosen_features()
            space, z = self._space(groups)
            model = fit(z, self.examples.labels, len(self.classes), self.reject)
            self._fitted = (space, model, groups)
        return self._fitted[:2]

    def _space(self, groups: Sequence[str]) -> tuple[Space, np.ndarray]:
        columns = np.array(
            [MEASUREMENTS.index(n) for g in groups if g in GROUPS for n in GROUPS[g]],
            dtype=np.int64,
        )
        if self.pool.n:
            space = Space.from_pool(self.pool, columns, "clip" in groups)
        else:  # text only
            space = Space(columns, np.zeros(len(columns)), np.ones(len(columns)))
        ex = self.examples
        z = space(ex.measurements, ex.clip) if len(ex) else np.zeros((0, space.dims))
        return space, z

    #: With ``features="auto"``, the choice is made again for every change while the
    #: concept has fewer examples than this, then only once they grew by
    #: :data:`RECHOOSE_GROWTH` (or a class was added): a click's cost stays bounded.
    RECHOOSE_BELOW = 64
    RECHOOSE_GROWTH = 1.25

    def chosen_features(self) -> tuple[str, ...]:
        """The feature groups the classifier uses: as given, or with ``features="auto"``
        the combination with the lowest leave-one-out log-loss on the examples (all
        groups until two labels have two examples each; see :attr:`RECHOOSE_BELOW` for
        when it is chosen again, and it is saved with the concept)."""
        if self.features != ("auto",):
            return self.features
        if self._fitted is not None:
            return self._fitted[2]
        n, classes = len(self.examples), len(self.classes)
        if self.feature_choice is not None:
            groups, n_then, classes_then = self.feature_choice
            grown = n > max(self.RECHOOSE_BELOW, self.RECHOOSE_GROWTH * n_then)
            if classes == classes_then and n >= self.RECHOOSE_BELOW and not grown:
                return groups
        groups = self._choose_features()
        self.feature_choice = (groups, n, classes)
        return groups

    def _choose_features(self) -> tuple[str, ...]:
        import itertools

        best, best_loss = GROUP_ORDER, None
        for k in range(1, len(GROUP_ORDER) + 1):
            for groups in itertools.combinations(GROUP_ORDER, k):
                _, z = self._space(groups)
                loss = loo_loss(z, self.examples.labels, len(self.classes), self.reject)
                if loss is None:
                    return GROUP_ORDER
                if best_loss is None or loss < best_loss - 1e-9:
                    best, best_loss = groups, loss
        return best

    def logits(self, features: ObjectFeatures, text: np.ndarray | None = None) -> np.ndarray:
        """(N, classes + 1) log-odds: each class, then "none" (see :mod:`.classifier`).
        ``text``: (N, classes) ``logit_scale`` x cosine to each class's text (NaN: none)."""
        space, model = self._model()
        if not len(features):
            return np.zeros((0, len(self.classes) + 1))
        z = space(features.measurements, features.clip)
        return class_logits(model, z, text if self.has_text else None)

    def classify(self, features: ObjectFeatures, text: np.ndarray | None = None):
        """Each object's class name (None: none of them) and its probability."""
        probs = probabilities(self.logits(features, text))
        best = probs.argmax(axis=1)
        names = [None if b == len(self.classes) else self.classes[b] for b in best]
        return names, probs[np.arange(len(best)), best]

    def copy(self) -> Concept:
        import copy

        return copy.deepcopy(self)

    # -- files ------------------------------------------------------------------------
    def save(self, path):
        """Write a ``.concept`` file: safetensors with JSON metadata (see :mod:`.files`)."""
        from .files import save_concept

        return save_concept(self, path)

    @classmethod
    def load(cls, path) -> Concept:
        """Read a ``.concept`` file; anything malformed or hostile is one clear line."""
        from .files import load_concept

        return load_concept(path, cls)


def resolve_concept(spec) -> Concept:
    """A concept from a file path, or the name of one saved in the cache folder's
    ``concepts/`` (see :func:`.files.concept_dir`)."""
    from pathlib import Path

    from .files import concept_dir, saved_concepts

    if isinstance(spec, Concept):
        return spec
    path = Path(spec).expanduser()
    if path.is_file():
        return Concept.load(path)
    saved = {p.stem: p for p in saved_concepts()}
    name = path.name[: -len(".concept")] if path.name.endswith(".concept") else path.name
    if name in saved and path.parent == Path("."):
        return Concept.load(saved[name])
    raise InputError(
        f"No concept {str(spec)!r}: give the path of a .concept file, or the name of one "
        f"saved in {concept_dir()} (saved: {', '.join(saved) or 'none yet'})."
    )


__all__ = ["DEFAULT_FEATURES", "Concept", "check_features", "resolve_concept"]
