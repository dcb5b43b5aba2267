"""What a concept costs as it grows: the feature choice's leave-one-out in closed form
(equal to refitting without each example), over a bounded spread of examples, saved
with the concept, and made again only when the examples grew (issue 38)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.concepts import Concept, ObjectFeatures, classifier
from napari_slip.core.concepts.features import MEASUREMENTS

from ..floats import assert_close


def _refit_losses(z, y, n_classes, reject) -> np.ndarray:
    """Each example's log-loss under :func:`fit` of all the others (NaN: skipped, the
    only one of its label), by refitting: the definition."""
    out = np.full(len(y), np.nan)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if (y[keep] == y[i]).sum() == 0:
            continue
        model = classifier.fit(z[keep], y[keep], n_classes, reject)
        p = classifier.probabilities(classifier.logits(model, z[i : i + 1]))[0]
        out[i] = -np.log(max(p[y[i]], 1e-9))
    return out


@pytest.mark.parametrize(
    ("n", "classes", "negatives", "seed"),
    [(12, 2, 0, 0), (30, 3, 5, 1), (60, 3, 1, 2), (40, 4, 10, 3), (9, 3, 2, 4)],
)
def test_closed_form_leave_one_out_equals_refitting(n, classes, negatives, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:negatives] = -1
    y[-1] = classes - 1
    z = rng.normal(size=(n, 6)) + y[:, None] * 0.8
    losses = _refit_losses(z, y, classes, 0.999)
    expected = np.nansum(losses) / n
    # Each loss sums 6 dimensions' costs; n losses are summed.
    assert_close(classifier.loo_loss(z, y, classes, 0.999), expected, terms=6 * n, depth=4)


def test_many_examples_are_scored_on_an_even_spread(monkeypatch):
    monkeypatch.setattr(classifier, "LOO_MAX", 16)
    rng = np.random.default_rng(7)
    y = rng.integers(-1, 3, 90)
    z = rng.normal(size=(90, 5)) + y[:, None]
    held = np.unique(np.linspace(0, 89, 16).round().astype(np.int64))
    losses = _refit_losses(z, y, 3, 0.999)
    expected = np.nansum(losses[held]) / len(held)
    assert_close(classifier.loo_loss(z, y, 3, 0.999), expected, terms=5 * 16, depth=4)


def _features_of(concept: Concept) -> ObjectFeatures:
    return ObjectFeatures(concept.examples.measurements, concept.examples.clip)


def _grown(n: int, seed: int = 0) -> Concept:
    """A concept of two classes told apart by one measurement, with ``n`` examples."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    m = np.zeros((n, len(MEASUREMENTS)))
    m[:, 0] = labels * 4 + rng.normal(size=n)
    m[:, 1:6] = rng.normal(size=(n, 5))
    clip = rng.normal(size=(n, 16)).astype(np.float32)
    feats = ObjectFeatures(m, clip / np.linalg.norm(clip, axis=1, keepdims=True))
    concept = Concept(["small", "large"], texts=False)
    concept.add(feats, [["small", "large"][k] for k in labels])
    return concept


def test_the_choice_is_saved_and_loading_never_makes_it_again(tmp_path, monkeypatch):
    concept = _grown(300)
    chosen = concept.chosen_features()
    path = concept.save(tmp_path / "grown.concept")
    calls = []
    monkeypatch.setattr(classifier, "loo_loss", lambda *a: calls.append(a))
    monkeypatch.setattr("napari_slip.core.concepts.concept.loo_loss", classifier.loo_loss)
    loaded = Concept.load(path)
    assert loaded.chosen_features() == chosen
    names, probs = loaded.classify(_features_of(_grown(20, seed=9)))
    assert len(names) == 20 and np.isfinite(probs).all()
    assert calls == []  # no leave-one-out at load or at classification


def test_a_hand_edited_choice_is_ignored(tmp_path):
    import json

    from safetensors.numpy import load_file, save_file

    from napari_slip.core.concepts.files import read_header

    concept = _grown(100)
    path = concept.save(tmp_path / "c.concept")
    tensors = load_file(str(path))
    _, meta = read_header(path)
    fits = {"examples": 100, "classes": 2}
    for bad in ({"groups": ["shape", "bogus"]}, {"groups": "shape"}, {"groups": []}, [1]):
        meta["chosen"] = {**fits, **bad} if isinstance(bad, dict) else bad
        save_file(tensors, str(path), metadata={"napari_slip": json.dumps(meta)})
        loaded = Concept.load(path)
        assert loaded.feature_choice is None  # made again when asked
        assert set(loaded.chosen_features()) <= {"shape", "intensity", "texture", "clip"}


def test_a_click_re_chooses_only_when_the_examples_grew(monkeypatch):
    concept = _grown(400)
    concept.chosen_features()
    made = []
    original = Concept._choose_features
    monkeypatch.setattr(Concept, "_choose_features", lambda self: made.append(1) or original(self))
    extra = _grown(200, seed=3)
    feats = _features_of(extra)
    for i in range(100):  # 400 -> 500 examples: within 25 % growth, no new choice
        concept.add(feats.take([i]), extra.classes[int(extra.examples.labels[i])])
        concept.logits(feats.take([i]))
    assert made == []
    for i in range(100, 101):  # 501 > 1.25 x 400: chosen again, once
        concept.add(feats.take([i]), extra.classes[int(extra.examples.labels[i])])
        concept.logits(feats.take([i]))
    assert made == [1]
