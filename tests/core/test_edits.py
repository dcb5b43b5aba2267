"""Edits that change only what they touch (no Qt): add, remove, refine and merge one
object with the trained fixture SAM, undo and redo bit for bit, on the right image,
with a run's measurement columns, teaching a concept without re-scoring anything."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import napari_slip
from napari_slip.core.concepts import Concept
from napari_slip.core.edits import NothingToDo
from napari_slip.core.errors import InputError
from napari_slip.core.params import SamProposalParams
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.testing.scenes import scenes
from napari_slip.testing.trained_sam import FIXTURE_AMG


def _iou(a, b):
    return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())


@pytest.fixture(scope="module")
def seg(trained_sam_path, tmp_path_factory):
    from napari_slip.testing import write_tiny_clip

    clip = write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip.safetensors")
    params = SamProposalParams(**FIXTURE_AMG, min_area=30)
    return Segmenter(str(trained_sam_path), str(clip), "cpu", sam_params=params, disk_cache=False)


@pytest.fixture(scope="module")
def scene():
    """Two scenes of the fixture's kind (9 and 7 objects), and for the first a result
    to edit: 3 of its objects, the first of which also covers the left half of a
    fourth object (so SAM's mask of that one overlaps an existing object)."""
    rgbs, truths = scenes(3, seed=11)
    rgbs, truths = [rgbs[2], rgbs[1]], [truths[2], truths[1]]
    truth = truths[0]
    ids = np.unique(truth)[1:]
    given = np.where(np.isin(truth, ids[:3]), truth, 0)
    ys, xs = np.nonzero(truth == ids[3])
    half = xs < np.median(xs)
    given[ys[half], xs[half]] = ids[0]
    return rgbs, truths, given


def _result(seg, rgb, given):
    """Every given object kept, ids 1..3 (proposals from the label image)."""
    return seg.segment(rgb, "nucleus", labels=given, mode="threshold", threshold=-1)


def _missed(labels, truth):
    """Truth objects with no pixel in ``labels``, largest first, with their centre."""
    out = []
    for k in np.unique(truth)[1:]:
        inside = truth == k
        if not labels[inside].any():
            ys, xs = np.nonzero(inside)
            centre = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            out.append((int(inside.sum()), int(k), (ys[centre] + 0.5, xs[centre] + 0.5)))
    return [(k, yx) for _, k, yx in sorted(out, reverse=True)]


def test_add_and_remove_change_only_their_object_and_undo_bit_for_bit(seg, scene):
    rgbs, truths, given = scene
    result = _result(seg, rgbs[0], given)
    assert result.n_objects == 3
    editor = napari_slip.edit(result, seg, image=rgbs[0], scale={"Y": 0.5, "X": 0.5}, unit="um")
    before = editor.labels.copy()
    assert np.array_equal(before, result.labels) and editor.labels is not result.labels
    (truth_id, (y, x)), *_ = _missed(before, truths[0])

    edit = editor.add_at(y, x)
    assert edit.kind == "add" and edit.label == 4 and edit.message == "Added object 4."
    new = editor.labels == 4
    assert _iou(new, truths[0] == truth_id) >= 0.7  # the fixture SAM's mask of the object
    assert np.array_equal(editor.labels[~new], before[~new])  # nothing else changed
    assert not before[new].any()  # only background pixels were taken
    table = editor.table().set_index("id")
    assert table.index.tolist() == [1, 2, 3, 4]
    assert table.loc[4, "area"] == new.sum()
    assert {"mean_intensity_c0", "area_um2"} <= set(table.columns)  # as a run's table
    assert table.loc[4, "mean_intensity_c0"] == pytest.approx(rgbs[0][new][:, 0].mean())
    assert table.loc[4, "area_um2"] == pytest.approx(new.sum() * 0.25)
    assert np.isfinite(table.loc[4, "similarity"])

    after_add = editor.labels.copy()
    removed = editor.remove_at(*np.argwhere(before == 1)[0])
    assert removed.label == 1
    assert not (editor.labels == 1).any()
    changed = after_add != editor.labels
    assert np.array_equal(changed, after_add == 1)  # exactly the object's pixels
    assert editor.table()["id"].tolist() == [2, 3, 4]  # ids of the others as they were

    editor.undo()
    assert np.array_equal(editor.labels, after_add)
    editor.undo()
    assert np.array_equal(editor.labels, before)
    assert editor.undo() is None
    editor.redo()
    assert np.array_equal(editor.labels, after_add)


def test_an_added_object_takes_no_pixel_of_a_touching_one(seg, scene):
    """SAM's mask of the fourth object overlaps object 1 (which holds its left half):
    the new object gets the free right half only, object 1 keeps every pixel."""
    rgbs, truths, given = scene
    editor = napari_slip.edit(_result(seg, rgbs[0], given), seg)
    before = editor.labels.copy()
    target = truths[0] == np.unique(truths[0])[4]
    ys, xs = np.nonzero(target & (before == 0))
    centre = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    edit = editor.add_at(ys[centre], xs[centre])
    new = editor.labels == edit.label
    assert edit.mask is not None and np.array_equal(edit.mask, new)
    assert np.array_equal(editor.labels == 1, before == 1)
    assert np.array_equal(editor.labels[~new], before[~new])
    assert _iou(new, target & (before == 0)) >= 0.7


def test_background_and_labelled_clicks_add_nothing(seg, scene):
    rgbs, truths, given = scene
    result = _result(seg, rgbs[0], given)
    editor = napari_slip.edit(result, seg)
    before = editor.labels.copy()
    background = np.argwhere((truths[0] == 0) & (before == 0))
    # A pixel far from every object: SAM's answer there is the background itself.
    from scipy import ndimage

    far = ndimage.distance_transform_edt(truths[0] == 0)
    y, x = np.unravel_index(np.argmax(far), far.shape)
    with pytest.raises(NothingToDo, match="nothing was added"):
        editor.add_at(y, x)
    with pytest.raises(NothingToDo, match="object 1 already"):
        editor.add_at(*np.argwhere(before == 1)[0])
    with pytest.raises(NothingToDo, match="no object here"):
        editor.remove_at(*background[0])
    with pytest.raises(InputError, match="outside the image"):
        editor.add_at(-3, 5)
    assert np.array_equal(editor.labels, before) and not editor.done


def test_refine_keeps_the_id_and_merge_keeps_the_first(seg, scene):
    rgbs, truths, given = scene
    editor = napari_slip.edit(_result(seg, rgbs[0], given), seg)
    before = editor.labels.copy()
    (truth_id, (y, x)), (_, (y2, x2)), *_ = _missed(before, truths[0])
    editor.add_at(y, x)
    truth = truths[0] == truth_id
    # A negative point just outside the object: SAM's answer stays the object.
    ys, xs = np.nonzero(truth)
    outside = (ys.min() - 3 + 0.5, x)
    others = editor.labels.copy()
    edit = editor.refine(4, points=[(*outside, False)])
    assert edit.label == 4 and edit.kind == "refine"
    assert editor.prompts[4]["points"] == [(y, x, True), (*outside, False)]
    assert _iou(editor.labels == 4, truth) >= 0.7
    for k in (1, 2, 3):
        assert np.array_equal(editor.labels == k, others == k)  # the others whole
    # A box prompt (the fixture SAM never learnt boxes, so only what may change is
    # judged here): the id stays, no other object loses or gains a pixel.
    refined = editor.labels.copy()
    box = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    with contextlib.suppress(NothingToDo):  # SAM's answer too large or empty
        editor.refine(4, box=box)
    for k in (1, 2, 3):
        assert np.array_equal(editor.labels == k, refined == k)
    assert (editor.labels == 4).any()
    if editor.done[-1].kind == "refine" and editor.done[-1] is not edit:
        editor.undo()
    assert np.array_equal(editor.labels, refined)
    editor.add_at(y2, x2)
    merged = editor.labels.copy()
    editor.merge(4, 5)
    assert not (editor.labels == 5).any()
    assert np.array_equal(editor.labels == 4, (merged == 4) | (merged == 5))
    editor.undo()
    assert np.array_equal(editor.labels, merged)
    with pytest.raises(InputError, match="no object 9"):
        editor.refine(9, points=[(y, x, True)])


def test_edits_decode_on_their_own_image_after_another_was_segmented(seg, scene):
    """The editor holds its image's cache: segmenting image B afterwards does not make
    an edit of A's result decode B's embedding."""
    rgbs, truths, given = scene
    editor = napari_slip.edit(_result(seg, rgbs[0], given), seg)
    (truth_id, (y, x)), *_ = _missed(editor.labels, truths[0])
    seg.segment(rgbs[1], "nucleus", mode="topk", top_k=2)  # the segmenter moves on
    editor.add_at(y, x)
    assert _iou(editor.labels == 4, truths[0] == truth_id) >= 0.7


def test_edits_teach_the_concept_without_changing_other_objects(seg, scene):
    rgbs, truths, given = scene
    result = _result(seg, rgbs[0], given)
    concept = Concept(["nucleus"])
    editor = napari_slip.edit(result, seg, concept=concept)
    before = editor.labels.copy()
    (_, (y, x)), *_ = _missed(before, truths[0])
    editor.add_at(y, x)
    editor.remove_at(*np.argwhere(before == 2)[0])
    assert concept.counts() == {"nucleus": 1, None: 1}
    assert np.array_equal(editor.labels == 1, before == 1)  # no re-scoring of object 1
    editor.undo()
    assert concept.counts() == {"nucleus": 1, None: 0}


def test_an_edit_described_after_it_is_written_is_the_same_edit(seg, scene):
    """A GUI writes an add's pixels first and describes it after: the same pixels,
    the same example and similarity as an add described at once."""
    rgbs, truths, given = scene
    result = _result(seg, rgbs[0], given)
    (_, (y, x)), *_ = _missed(result.labels, truths[0])
    at_once = napari_slip.edit(result, seg, concept=Concept(["nucleus"])).propose_add(y, x)
    editor = napari_slip.edit(result, seg, concept=Concept(["nucleus"]))
    bare = editor.propose_add(y, x, describe=False)
    assert not bare.described and bare.example is None
    assert "similarity" not in bare.rows[bare.label]
    for axis, other in zip(bare.index, at_once.index, strict=True):
        np.testing.assert_array_equal(axis, other)
    editor.record(bare)  # written: its pixels count, it teaches nothing yet
    bare.apply(editor.labels)
    assert editor.concept.counts() == {"nucleus": 0, None: 0}
    described = editor.describe(bare)
    assert described.rows[bare.label]["similarity"] == at_once.rows[at_once.label]["similarity"]
    np.testing.assert_array_equal(described.example.clip, at_once.example.clip)
    editor.record(described)
    assert editor.concept.counts() == {"nucleus": 1, None: 0}
    table = editor.table().set_index("id")
    assert table.loc[bare.label, "similarity"] == described.rows[bare.label]["similarity"]


def test_examples_follow_an_undo_made_elsewhere(seg, scene):
    """Pixels restored by someone else (napari's Ctrl+Z) take the edit's example out of
    the concept, newest first; written again (Ctrl+Shift+Z), it comes back. An answer
    "no" (no pixel) never blocks the walk; a new edit ends what could be redone."""
    from napari_slip.core.edits.more import Question, answer

    rgbs, truths, given = scene
    result = _result(seg, rgbs[0], given)
    concept = Concept(["nucleus"])
    editor = napari_slip.edit(result, seg, concept=concept)
    (_, (y, x)), (_, (y2, x2)), *_ = _missed(editor.labels, truths[0])
    first = editor.add_at(y, x)
    removed = editor.remove_at(*np.argwhere(editor.labels == 2)[0])
    nowhere = np.zeros_like(editor.labels, bool)
    question = Question(0, 0.5, nowhere, (0, 0, 1, 1), first.example, {})
    editor.apply(answer(editor, question, yes=False))
    assert concept.counts() == {"nucleus": 1, None: 2}
    assert not editor.lessons.follow(editor.labels)  # nothing undone: nothing changes
    removed.revert(editor.labels)  # as napari's Ctrl+Z does: pixels only
    assert editor.lessons.follow(editor.labels)
    assert concept.counts() == {"nucleus": 1, None: 1}  # the "no" stays
    first.revert(editor.labels)
    editor.lessons.follow(editor.labels)
    assert concept.counts() == {"nucleus": 0, None: 1}
    first.apply(editor.labels)  # Ctrl+Shift+Z: the oldest undone comes back first
    editor.lessons.follow(editor.labels)
    assert concept.counts() == {"nucleus": 1, None: 1}
    editor.apply(editor.propose_add(y2, x2))  # a new edit: the removal cannot come back
    removed.apply(editor.labels)
    editor.lessons.follow(editor.labels)
    assert concept.counts() == {"nucleus": 2, None: 1}


def test_find_more_proposes_like_the_examples_and_applies_in_one_step(seg, scene):
    """After a few clicks, the concept proposes additions (candidates like the added
    objects, on background only) and removals; nothing changes until the suggestion
    is applied, and one undo takes all of it back."""
    from napari_slip.core.edits.more import suggest

    rgbs, truths, _ = scene
    truth = truths[0]
    result = seg.segment(rgbs[0], "nucleus", mode="topk", top_k=1)
    editor = napari_slip.edit(result, seg, concept=Concept(["nucleus"]))
    with pytest.raises(InputError, match="Teach the concept first"):
        suggest(editor)
    before = editor.labels.copy()
    if before.any() and (before > 0).mean() > 0.5:  # the random CLIP kept background
        editor.remove_at(*np.argwhere(before == 1)[0])
    for _, (y, x) in _missed(editor.labels, truth)[:2]:
        editor.add_at(y, x)
    taught = editor.labels.copy()
    more = suggest(editor)
    assert np.array_equal(editor.labels, taught)  # a preview: nothing written yet
    assert more.message == f"Adds {len(more.added)}, removes {len(more.removed)}."
    assert more.added, "nothing like the two clicked nuclei was proposed"
    preview = more.preview()
    assert set(np.unique(preview)) <= {0, 1, 2}
    editor.apply(more.edit)
    for label in more.added:
        new = editor.labels == label
        assert not taught[new].any()  # background pixels only
        overlap = max(_iou(new, truth == k) for k in np.unique(truth)[1:])
        assert overlap >= 0.5  # a nucleus, like the examples
    for label in more.removed:
        assert not (editor.labels == label).any()
    for label in editor.chosen:  # what the user drew is never taken away
        assert np.array_equal(editor.labels == label, taught == label)
    editor.undo()
    assert np.array_equal(editor.labels, taught)  # one step


@pytest.fixture(scope="module")
def linked_stack(trained_sam_path, tmp_path_factory):
    """A dense z-stack of nuclei (touching, 1-8 planes deep) segmented from its true
    sections, all but one nucleus, and linked into 3D objects."""
    from napari_slip.testing import write_tiny_clip
    from napari_slip.testing.scenes import nuclei_stack

    clip = write_tiny_clip(tmp_path_factory.mktemp("clip3d") / "clip.safetensors")
    params = SamProposalParams(**FIXTURE_AMG, min_area=30)
    seg = Segmenter(
        str(trained_sam_path), str(clip), "cpu", sam_params=params, disk_cache=False, cache_size=16
    )
    image, truth = nuclei_stack(3, depth=8)
    depths = {
        k: len({z for z in range(8) if (truth[z] == k).any()}) for k in range(1, truth.max() + 1)
    }
    target = max(depths, key=lambda k: (depths[k], (truth == k).sum()))
    given = np.where(truth == target, 0, truth)
    result = seg.segment(
        image, "nucleus", labels=given, axes="ZYX", mode="threshold", threshold=-1
    )
    assert result.linked is not None
    return seg, image, truth, target, result


def test_a_click_on_a_linked_stack_adds_and_removes_whole_3d_objects(linked_stack):
    seg, _, truth, target, result = linked_stack
    editor = napari_slip.edit(result, seg)
    before = editor.labels.copy()
    inside = truth == target
    z = int(np.argmax(inside.sum(axis=(1, 2))))  # the nucleus's widest section
    ys, xs = np.nonzero(inside[z])
    centre = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    edit = editor.add_at(ys[centre] + 0.5, xs[centre] + 0.5, plane=(z,))
    new = editor.labels == edit.label
    planes = {int(p) for p in np.nonzero(new.any(axis=(1, 2)))[0]}
    assert planes >= {z} and len(planes) >= 2, planes  # carried to its other sections
    assert _iou(new, inside) >= 0.7
    assert np.array_equal(editor.labels[~new], before[~new])  # nothing else changed
    row = editor.table().set_index("id").loc[edit.label]
    assert row["area"] == new.sum() and row["n_planes"] == len(planes)
    # Removing from any plane takes the whole 3D object.
    other = int(before[z][before[z] > 0][0])
    zs = np.nonzero((before == other).any(axis=(1, 2)))[0]
    y, x = np.argwhere(before[zs[-1]] == other)[0]
    editor.remove_at(y, x, plane=(int(zs[-1]),))
    assert not (editor.labels == other).any()
    gone = before == other
    assert np.array_equal(editor.labels[~gone & ~new], before[~gone & ~new])
    editor.undo()
    editor.undo()
    assert np.array_equal(editor.labels, before)
    with pytest.raises(InputError, match="was not segmented"):
        editor.add_at(5, 5, plane=(99,))


def test_split_cuts_one_object_at_its_neck_and_keeps_the_rest(seg, scene):
    """Two touching nuclei given as one object: two points, one in each, split it at
    the neck; the first part keeps the id, the other gets the next one; nothing else
    changes and undo restores it."""
    rgbs, truths, given = scene
    truth = truths[0]
    a, b = (int(k) for k in np.unique(truth)[1:3])
    merged = given.copy()
    merged[truth == b] = a  # objects a and b as one label (they need not touch)
    bridge = np.zeros_like(truth, dtype=bool)
    (ya, xa), (yb, xb) = (np.argwhere(truth == k).mean(axis=0).astype(int) for k in (a, b))
    for t in np.linspace(0, 1, 200):  # a thin neck joining their centres
        y, x = int(ya + t * (yb - ya)), int(xa + t * (xb - xa))
        bridge[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True
    merged[bridge & (merged == 0)] = a
    result = seg.segment(rgbs[0], "nucleus", labels=merged, mode="threshold", threshold=-1)
    editor = napari_slip.edit(result, seg)
    before = editor.labels.copy()
    label = int(before[ya, xa])
    edit = editor.split((ya + 0.5, xa + 0.5), (yb + 0.5, xb + 0.5))
    new = editor.labels == edit.label
    assert edit.label == before.max() + 1 and new[yb, xb] and not new[ya, xa]
    assert _iou(new, truth == b) >= 0.8  # the cut is at the neck, near b's own edge
    assert np.array_equal((editor.labels == label) | new, before == label)
    assert np.array_equal(editor.labels[before != label], before[before != label])
    with pytest.raises(NothingToDo, match="inside one object"):
        editor.split((ya + 0.5, xa + 0.5), (ya + 0.5, xa + 0.5))
    editor.undo()
    assert np.array_equal(editor.labels, before)


def test_ask_me_shows_the_least_sure_and_answers_teach(seg, scene):
    from napari_slip.core.edits.more import answer, ask

    rgbs, truths, _ = scene
    result = seg.segment(rgbs[0], "nucleus", mode="topk", top_k=1)
    concept = Concept(["nucleus"])
    editor = napari_slip.edit(result, seg, concept=concept)
    with pytest.raises(InputError, match="Teach the concept first"):
        ask(editor)
    (_, (y, x)), *_ = _missed(editor.labels, truths[0])
    editor.add_at(y, x)
    questions = ask(editor, n=3)
    assert 1 <= len(questions) <= 3
    doubt = [abs(q.probability - 0.5) for q in questions]
    assert doubt == sorted(doubt)  # the least sure first
    before = editor.labels.copy()
    no = editor.apply(answer(editor, questions[0], yes=False))
    assert np.array_equal(editor.labels, before) and no.kind == "not"
    assert concept.counts()[None] == 1  # remembered as "not this"
    if len(questions) > 1:
        yes = editor.apply(answer(editor, questions[1], yes=True))
        new = editor.labels == yes.label
        assert np.array_equal(new, questions[1].mask & (before == 0))
        assert concept.counts()["nucleus"] == 2
    editor.undo()
    editor.undo()
    assert np.array_equal(editor.labels, before) and concept.counts()[None] == 0


def test_a_click_on_a_tracked_time_series_adds_one_track(trained_sam_path, tmp_path):
    """Along T the same: the clicked object is carried frame by frame and keeps one id
    (its track) in every frame; the table has its row per frame."""
    from napari_slip.testing import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip.safetensors")
    params = SamProposalParams(**FIXTURE_AMG, min_area=30)
    seg = Segmenter(
        str(trained_sam_path), str(clip), "cpu", sam_params=params, disk_cache=False, cache_size=8
    )
    rgbs, truths = scenes(3, seed=11)
    rgb, truth = rgbs[2], truths[2]
    frames = [np.roll(rgb, 2 * t, axis=1) for t in range(5)]  # drifting 2 px a frame
    truth_t = np.stack([np.roll(truth, 2 * t, axis=1) for t in range(5)])
    target = int(np.unique(truth)[1])
    given = np.where(truth_t == target, 0, truth_t)
    options = {"axes": "TYXS", "mode": "threshold", "threshold": -1}
    result = seg.segment(np.stack(frames), "nucleus", labels=given, **options)
    assert result.linked is not None
    editor = napari_slip.edit(result, seg)
    before = editor.labels.copy()
    ys, xs = np.nonzero(truth_t[2] == target)
    c = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    made = editor.add_at(ys[c] + 0.5, xs[c] + 0.5, plane=(2,))
    for t in range(5):
        new = editor.labels[t] == made.label
        assert _iou(new, truth_t[t] == target) >= 0.7, t  # one id, frame by frame
    assert np.array_equal(
        editor.labels[editor.labels != made.label], before[editor.labels != made.label]
    )
    rows = editor.table()
    mine = rows[rows["id"] == made.label]
    assert sorted(mine["t"]) == [0, 1, 2, 3, 4] and set(mine["track_id"]) == {made.label}


def test_refine_works_on_one_plane_of_a_3d_object(linked_stack):
    """Refining a linked 3D object on one plane redraws that plane's section only; its
    id stays, its other planes and every other object are as they were."""
    seg, _, _, _, result = linked_stack
    editor = napari_slip.edit(result, seg)
    before = editor.labels.copy()
    spans = {int(k): np.nonzero((before == k).any(axis=(1, 2)))[0] for k in np.unique(before)[1:]}
    label, planes = next((k, z) for k, z in spans.items() if len(z) >= 3)
    z = int(planes[len(planes) // 2])
    ys, xs = np.nonzero(before[z] == label)
    c = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    edit = editor.refine(label, points=[(ys[c] + 0.5, xs[c] + 0.5, True)], plane=(z,))
    assert edit.label == label and set(edit.index[0].tolist()) <= {z}
    others = np.ones(before.shape, dtype=bool)
    others[z] = False
    assert np.array_equal(editor.labels[others], before[others])
    assert (editor.labels[z] == label).any()
    untouched = (before[z] != label) & (editor.labels[z] != label)
    assert np.array_equal(editor.labels[z][untouched], before[z][untouched])
