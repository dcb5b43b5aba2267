"""Concepts: the classifier on controlled features, learning on the synthetic shape and
texture domain (text alone near chance), files (round trip, hostile), and a concept
wherever a prompt goes (segment, Segmenter, stacks, batch, the CLI)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
import tifffile

import napari_slip
from napari_slip.cli import main
from napari_slip.core.concepts import Concept, ConceptQuery, ObjectFeatures, classifier
from napari_slip.core.concepts.features import MEASUREMENTS
from napari_slip.core.errors import InputError
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.testing.concept_scenes import (
    CLASSES,
    classification_accuracy,
    concept_scenes,
    write_concept_folder,
)
from napari_slip.testing.tiny import write_tiny_clip

from ..floats import assert_close

M = len(MEASUREMENTS)


def _features(rows: np.ndarray, dim: int = 8, seed: int = 0) -> ObjectFeatures:
    rows = np.asarray(rows, dtype=np.float64)
    measurements = np.zeros((len(rows), M))
    measurements[:, : rows.shape[1]] = rows
    clip = np.random.default_rng(seed).normal(size=(len(rows), dim)).astype(np.float32)
    return ObjectFeatures(measurements, clip / np.linalg.norm(clip, axis=1, keepdims=True))


def _pool(n: int = 200, seed: int = 0) -> ObjectFeatures:
    rng = np.random.default_rng(seed)
    return _features(rng.normal(size=(n, 2)) * 3, seed=seed)


# --- the classifier, on controlled features ------------------------------------------


def test_one_example_per_class_is_nearest_prototype():
    concept = Concept(["a", "b"], texts=False, features=["shape"])
    concept.add(_features([[-2, 0], [2, 0]]), ["a", "b"], pool=_pool())
    names, probs = concept.classify(_features([[-1.5, 0.2], [1.8, -0.3], [0.5, 0]]))
    assert names == ["a", "b", "b"]
    assert min(probs[:2]) > 0.6 and probs[2] < min(probs[:2])  # nearer: surer


def test_far_objects_are_none_and_negatives_compete():
    concept = Concept(["a"], texts=False, features=["shape"])
    concept.add(_features([[0, 0], [0.2, 0.1], [-0.1, 0.2]]), "a", pool=_pool())
    names, _ = concept.classify(_features([[0.1, 0], [20, 20], [0, 2.5]]))
    assert names[0] == "a" and names[1] is None  # far from every class: none of them
    assert names[2] == "a"
    concept.add(_features([[0, 2.5], [0.2, 2.7]]), None)  # "not this"
    names, _ = concept.classify(_features([[0.1, 0], [0, 2.5]]))
    assert names == ["a", None]
    assert concept.undo() and concept.classify(_features([[0, 2.5]]))[0] == ["a"]


def test_text_decides_without_examples_and_fades_with_them():
    model = classifier.fit(np.zeros((0, 2)), np.zeros(0), 2)
    text = np.array([[30.0, 20.0]])
    assert classifier.logits(model, np.zeros((1, 2)), text).argmax() == 0
    z = np.array([[1.0, 0.0], [-1.0, 0.0]])
    model = classifier.fit(
        np.array([[1.0, 0], [1.1, 0], [-1.0, 0], [-1.1, 0]]), np.array([0, 0, 1, 1]), 2
    )
    # Many examples say class 1; a mild text preference for 0 no longer wins.
    assert classifier.logits(model, z[1:], np.array([[22.0, 20.0]]))[0, :2].argmax() == 1


def test_auto_features_pick_what_separates_the_examples():
    rng = np.random.default_rng(1)
    useful = np.concatenate([rng.normal(-2, 0.3, (4, 1)), rng.normal(2, 0.3, (4, 1))])
    rows = np.zeros((8, M))
    rows[:, 0] = useful[:, 0]  # a shape measurement separates the classes
    shape_names = set(MEASUREMENTS[:8])
    assert "log_area" in shape_names
    rows[:, MEASUREMENTS.index("mean")] = rng.normal(0, 3, 8)  # intensity is noise
    clip = rng.normal(size=(8, 8)).astype(np.float32)
    feats = ObjectFeatures(rows, clip / np.linalg.norm(clip, axis=1, keepdims=True))
    pool = ObjectFeatures(
        np.concatenate([rows, rng.normal(0, 2, (60, M))]),
        np.concatenate([feats.clip] * 8 + [feats.clip[:4]]),
    )
    concept = Concept(["a", "b"], texts=False)  # features="auto"
    concept.add(feats, ["a"] * 4 + ["b"] * 4, pool=pool)
    assert "shape" in concept.chosen_features()
    assert concept.classify(feats)[0] == ["a"] * 4 + ["b"] * 4


# --- learning on the synthetic domain (shape and texture, not colour) -----------------


@pytest.fixture(scope="module")
def domain():
    return concept_scenes(6, seed=3)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    clip = write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip.safetensors")
    return Segmenter(clip=str(clip)), clip


def _examples(scene, shots: int, seed: int = 0) -> dict[int, str]:
    rng = np.random.default_rng(seed)
    _, _, names = scene
    out = {}
    for cls in CLASSES:
        ids = [k for k, v in names.items() if v == cls]
        out |= {int(k): cls for k in rng.choice(ids, min(shots, len(ids)), replace=False)}
    return out


def test_three_examples_per_class_classify_held_out_images(domain, segmenter):
    seg, _ = segmenter
    text_only = Concept(list(CLASSES))  # the random CLIP's texts: near chance
    text_only.bind_clip(seg.clip_spec, seg.model_set.load("clip").sha256)
    assert classification_accuracy(seg, text_only, domain[2:]) < 0.6
    concept = Concept(list(CLASSES))
    image, labels, _ = domain[0]
    concept.add_labels(image, labels, _examples(domain[0], 3), segmenter=seg)
    assert concept.counts() == {"round": 3, "elongated": 3, "spiky": 3, None: 0}
    assert classification_accuracy(seg, concept, domain[2:]) >= 0.9
    # One class only: the others are not kept.
    result = seg.segment(domain[2][0], concept, labels=domain[2][1], concept_class="spiky")
    truth = {k for k, v in domain[2][2].items() if v == "spiky"}
    assert set(result.table["class"]) == {"spiky"}
    assert len(set(result.table["source_id"]) & truth) >= len(truth) - 1
    assert result.provenance["concept"]["class"] == "spiky"


def test_a_concept_travels_through_segment_stacks_and_files(domain, segmenter, tmp_path):
    seg, _ = segmenter
    concept = Concept(list(CLASSES), texts=False)
    concept.add_labels(domain[0][0], domain[0][1], domain[0][2], segmenter=seg)
    path = tmp_path / "cells.concept"
    concept.save(path)
    loaded = Concept.load(path)
    assert loaded.classes == concept.classes and loaded.counts() == concept.counts()
    assert loaded.clip == concept.clip and not loaded.has_text
    image, labels, _ = domain[1]
    # napari_slip.segment takes the concept's own CLIP when none is named.
    one = napari_slip.segment(image, loaded, labels=labels)
    two = seg.segment(image, concept, labels=labels)
    pd.testing.assert_frame_equal(
        one.table[["id", "class", "class_probability"]],
        two.table[["id", "class", "class_probability"]],
    )
    # A z-stack: objects linked across planes get the class of their parts.
    stack = np.stack([image, image])
    result = seg.segment(stack, concept, labels=np.stack([labels, labels]), axes="ZYX")
    assert result.n_objects == len(two.table)
    assert sorted(result.table["class"]) == sorted(two.table["class"])
    assert (result.table["n_planes"] == 2).all()
    # Re-selection with a probability floor needs no image work.
    from napari_slip.core.params import SelectionParams
    from napari_slip.core.pipeline.stack import reselect_stack

    floor = reselect_stack(seg, result, SelectionParams(mode="distractors", threshold=0.999999))
    assert floor.n_objects <= result.n_objects and "class" in floor.table


def test_another_clip_is_one_line_before_any_image_work(domain, segmenter, tmp_path):
    seg, _ = segmenter
    concept = Concept(list(CLASSES), texts=False)
    concept.add_labels(domain[0][0], domain[0][1], domain[0][2], segmenter=seg)
    other = write_tiny_clip(tmp_path / "other.safetensors", seed=7)
    seg2 = Segmenter(clip=str(other))
    with pytest.raises(InputError, match=r"learnt with CLIP .*clip.safetensors.*other"):
        seg2.segment(domain[1][0], concept, labels=domain[1][1])
    assert seg2.stats["clip_crop_embeddings"] == 0


def test_bad_examples_and_targets_are_one_line(domain, segmenter):
    seg, _ = segmenter
    image, labels, _ = domain[0]
    concept = Concept(["round"])
    with pytest.raises(InputError, match="empty"):
        concept.add_mask(image, np.zeros(labels.shape, bool), "round", segmenter=seg)
    with pytest.raises(InputError, match="Label 999 is not in the label image"):
        concept.add_labels(image, labels, {999: "round"}, segmenter=seg)
    with pytest.raises(InputError, match="2D label image"):
        concept.add_labels(image, labels[None], "round", segmenter=seg)
    with pytest.raises(InputError, match="boolean"):
        concept.add_mask(image, labels, "round", segmenter=seg)
    assert concept.counts() == {"round": 0, None: 0} and not len(concept.examples)
    with pytest.raises(InputError, match="no class 'square'"):
        ConceptQuery(concept, "square")
    with pytest.raises(InputError, match="no examples yet"):
        Concept(["a"], texts=False).classify(_features([[0, 0]]))
    with pytest.raises(InputError, match="compete"):
        napari_slip.segment(image, concept, distractors=["dust"], labels=labels)
    with pytest.raises(InputError, match="concept_class needs a concept"):
        napari_slip.segment(image, "round", concept_class="round", labels=labels)
    with pytest.raises(InputError, match="features"):
        Concept(["a"], features=["colour"])


# --- files ---------------------------------------------------------------------------


@pytest.fixture
def concept_file(tmp_path):
    concept = Concept(["a", "b"], texts=["an a", None])
    concept.add(_features([[-2, 0], [2, 0]]), ["a", "b"], pool=_pool())
    concept.clip = {"spec": "tiny", "sha256": "0" * 64}
    path = tmp_path / "c.concept"
    concept.save(path)
    return concept, path


def test_file_round_trip_keeps_features_not_pixels(concept_file):
    concept, path = concept_file
    loaded = Concept.load(path)
    assert loaded.texts == ["an a", None] and loaded.classes == ["a", "b"]
    probe = _features([[-1, 0], [1.5, 0.5]])
    assert_close(loaded.logits(probe), concept.logits(probe), terms=probe.clip.shape[1])
    from napari_slip.core.concepts.files import read_header

    header, meta = read_header(path)
    assert set(header) <= {
        "measurements",
        "clip",
        "labels",
        "steps",
        "pool_m_sum",
        "pool_m_sq",
        "pool_c_sum",
        "pool_c_outer",
    }
    assert meta["clip"]["sha256"] == "0" * 64


def _rewrite_header(path, change):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n :])


MILLION = [f"c{i}" for i in range(10**6)]


def _meta(change):
    def edit(header):
        meta = json.loads(header["__metadata__"]["napari_slip"])
        change(meta)
        header["__metadata__"]["napari_slip"] = json.dumps(meta)

    return edit


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:5]), "too short"),
        (lambda p: p.write_bytes(struct.pack("<Q", 2**40) + b"{}"), "header claims"),
        (
            lambda p: _rewrite_header(p, lambda h: h["labels"].update(shape=[10**9])),
            "examples|truncated",
        ),
        (lambda p: _rewrite_header(p, lambda h: h["clip"].update(dtype="F16")), "unexpected type"),
        (
            lambda p: _rewrite_header(p, _meta(lambda m: m.update(classes=MILLION))),
            "header claims|1 to 256 classes",
        ),
        (lambda p: _rewrite_header(p, _meta(lambda m: m.update(classes=["a", 3]))), "class names"),
        (lambda p: _rewrite_header(p, _meta(lambda m: m.update(format="x"))), "not a napari-slip"),
        (lambda p: _rewrite_header(p, _meta(lambda m: m.update(version=9))), "version 9"),
        (lambda p: _rewrite_header(p, lambda h: h.pop("__metadata__")), "no napari-slip"),
    ],
)
def test_hostile_or_damaged_files_are_one_line(concept_file, damage, why):
    _, path = concept_file
    damage(path)
    with pytest.raises(InputError, match=why) as err:
        Concept.load(path)
    assert "\n" not in str(err.value) and "c.concept" in str(err.value)


# --- batch and the command line ------------------------------------------------------


def test_batch_and_cli_learn_and_segment_with_a_concept(tmp_path, segmenter, capsys):
    _, clip = segmenter
    data = write_concept_folder(tmp_path / "data", 4, seed=5)
    out = tmp_path / "cells.concept"
    assert (
        main(
            [
                "learn",
                str(data),
                "-o",
                str(out),
                "--clip",
                str(clip),
                "--shots",
                "3",
                "--seed",
                "1",
                "-q",
            ]
        )
        == 0
    )
    concept = Concept.load(out)
    assert concept.counts() == {"elongated": 3, "round": 3, "spiky": 3, None: 0}
    assert "Learnt" in capsys.readouterr().err
    test = write_concept_folder(tmp_path / "test", 1, seed=6)
    labels_csv = tmp_path / "objects.csv"
    code = main(
        [
            "segment",
            str(test / "images" / "scene000.tif"),
            "--concept",
            str(out),
            "--proposals-from",
            str(test / "labels" / "scene000.tif"),
            "--class",
            "round",
            "-o",
            str(tmp_path / "round.tif"),
            "--table",
            str(labels_csv),
            "-q",
        ]
    )
    assert code == 0
    table = pd.read_csv(labels_csv)
    assert {"class", "class_probability"} <= set(table) and set(table["class"]) == {"round"}
    written = tifffile.imread(tmp_path / "round.tif")
    assert set(np.unique(written)) - {0} == set(table["id"])
    # Both a prompt and a concept, or --class without one: one line, nothing written.
    assert (
        main(
            [
                "segment",
                str(test / "images" / "scene000.tif"),
                "--concept",
                str(out),
                "--prompt",
                "x",
                "-o",
                str(tmp_path / "x.tif"),
            ]
        )
        != 0
    )
    assert "not both" in capsys.readouterr().err and not (tmp_path / "x.tif").exists()
    # A batch with the concept: class columns in objects.csv, the concept in the digest.
    summary = napari_slip.batch(
        test / "images", tmp_path / "bout", concept, workers=1, proposals="relevance"
    )
    assert len(summary.done) == 1
    objects = pd.read_csv(tmp_path / "bout" / "objects.csv")
    assert "class" in objects and objects["class"].isin(concept.classes).all()
    assert (
        main(
            [
                "batch",
                str(test / "images"),
                "--concept",
                str(out),
                "-o",
                str(tmp_path / "cli_out"),
                "--proposals",
                "relevance",
                "--workers",
                "1",
                "-q",
            ]
        )
        == 0
    )
    cli = pd.read_csv(tmp_path / "cli_out" / "objects.csv")
    pd.testing.assert_frame_equal(cli[["id", "class"]], objects[["id", "class"]])
    from napari_slip.core.batches import make_config

    other = concept.copy()
    other.undo()
    assert (
        make_config(concept, clip=str(clip)).digest()
        != make_config(other, clip=str(clip)).digest()
    )
    assert make_config("x", clip=str(clip)).digest() == make_config("x", clip=str(clip)).digest()


# --- corrections (no Qt) and tiles -----------------------------------------------------


def test_corrections_on_label_proposals_add_remove_undo(domain, segmenter):
    from napari_slip.core.edits.corrections import Corrections

    seg, _ = segmenter
    image, labels, names = domain[1]
    first = seg.segment(image, "cell", labels=labels, mode="topk", top_k=2)
    teach = Corrections(seg, first)
    assert teach.summary() == "Examples: cell 2; not these: 0."
    missed = next(k for k in names if not first.labels[labels == k].any())
    ys, xs = np.nonzero(labels == missed)
    y, x = float(ys[len(ys) // 2]), float(xs[len(xs) // 2])
    added = teach.add_at(y, x)
    assert added.labels[int(y), int(x)] > 0 and "cell 3" in teach.summary()
    assert set(added.table["class"]) == {"cell"}
    removed = teach.remove_at(y, x)
    assert removed.labels[int(y), int(x)] == 0 and "not these: 1" in teach.summary()
    assert teach.undo().labels[int(y), int(x)] > 0
    with pytest.raises(InputError, match="outside the image"):
        teach.add_at(-3, 5)
    background = np.argwhere(labels == 0)[0]
    with pytest.raises(InputError, match="no label here"):
        teach.remove_at(*background)
    assert teach.undo() is not None and teach.undo() is None  # back to the run's examples
    assert teach.summary() == "Examples: cell 2; not these: 0."


def test_a_concept_runs_tile_by_tile(trained_sam_path, segmenter):
    from napari_slip.core.params import SamProposalParams, TileParams
    from napari_slip.testing.scenes import nuclei_mosaic
    from napari_slip.testing.trained_sam import FIXTURE_AMG

    _, clip = segmenter
    rgb, truth = nuclei_mosaic(3, (256, 480), spacing=44)
    seg = Segmenter(
        str(trained_sam_path),
        str(clip),
        "cpu",
        sam_params=SamProposalParams(**FIXTURE_AMG, min_area=30),
        tile_params=TileParams(tiles="on", overlap=32),
        disk_cache=False,
    )
    concept = Concept(["nucleus"])
    ids = np.unique(truth)[1:6]
    concept.add_labels(rgb, truth, {int(i): "nucleus" for i in ids}, segmenter=seg)
    result = seg.segment(rgb, concept)
    assert result.provenance["proposals"]["source"] == "sam-tiles"
    assert set(result.table["class"]) == {"nucleus"}
    found = set(np.unique(truth[result.labels > 0])) - {0}
    assert len(found) >= 0.8 * (len(np.unique(truth)) - 1)


def test_a_class_left_without_examples_or_text_is_never_chosen():
    concept = Concept(["a"], texts=False, features=["shape"])
    concept.add(_features([[0, 0], [0.1, 0.1]]), "a", pool=_pool())
    concept.add(_features([[3, 3]]), "b")  # a new class by its first example...
    concept.undo()  # ...taken back: "b" has nothing left to be recognised by
    names, _ = concept.classify(_features([[0, 0], [3, 3], [9, 9]]))
    assert "b" not in names and names[0] == "a"


def test_a_concepts_log_odds_are_computed_once_per_selection(domain, segmenter, monkeypatch):
    """Selection by a concept scores every candidate once: the same log-odds make its
    selection columns and the table's classes (before: twice per selection)."""
    seg, _ = segmenter
    image, labels, _ = domain[0]
    concept = Concept(list(CLASSES))
    concept.add_labels(image, labels, _examples(domain[0], 2), segmenter=seg)
    first = seg.segment(domain[1][0], concept, labels=domain[1][1])
    calls = []
    logits = Concept.logits
    monkeypatch.setattr(
        Concept, "logits", lambda self, *a, **k: (calls.append(1), logits(self, *a, **k))[1]
    )
    again = seg.select(first.candidates, concept)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(again.table, first.table)
