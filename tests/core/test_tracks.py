"""Tracks keep their identity through crossings and a missed frame, and a cell that
divides gets two new tracks with its own as their parent. Ids are asserted frame by
frame (each frame's true objects given as proposals, numbered anew in every frame,
so that only linking decides)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.pipeline.segmenter import Segmenter

SIZE = 64


@pytest.fixture(scope="module")
def seg(tiny_clip_path):
    return Segmenter("/no/such/sam.pth", str(tiny_clip_path), "cpu", disk_cache=False)


def _disc(y, x, r):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


def _movie(cells_per_frame):
    """(image, per-frame proposals, truth): ``cells_per_frame[t]`` lists (true id,
    y, x, r) painted in order (later ones occlude); proposals are numbered per
    frame in a shuffled order."""
    rng = np.random.default_rng(0)
    n = len(cells_per_frame)
    truth = np.zeros((n, SIZE, SIZE), np.int32)
    proposals = np.zeros_like(truth)
    for t, cells in enumerate(cells_per_frame):
        order = rng.permutation(len(cells)) + 1 + 10 * t
        for (k, y, x, r), local in zip(cells, order, strict=True):
            mask = _disc(y, x, r)
            truth[t][mask] = k
            proposals[t][mask] = local
    image = np.where(truth > 0, 900.0, 150.0) + rng.normal(0, 20, truth.shape)
    return np.clip(image, 0, 65535).astype(np.uint16), proposals, truth


def _segment(seg, image, proposals):
    options = {"axes": "TYX", "mode": "threshold", "threshold": -1}
    return seg.segment(image, "cell", labels=proposals, **options)


def _ids(result, truth, k):
    """The result's id under true cell ``k`` in each frame (None: absent there)."""
    out = []
    for t in range(len(truth)):
        inside = truth[t] == k
        if not inside.any():
            out.append(None)
            continue
        ids, counts = np.unique(result.labels[t][inside], return_counts=True)
        out.append(int(ids[np.argmax(counts)]))
    return out


def test_two_cells_that_cross_keep_their_ids_frame_by_frame(seg):
    frames = [[(1, 28, 8 + 4 * t, 7), (2, 36, 56 - 4 * t, 7)] for t in range(12)]
    image, proposals, truth = _movie(frames)
    result = _segment(seg, image, proposals)
    a, b = _ids(result, truth, 1), _ids(result, truth, 2)
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]  # no swap, no break
    table = result.table
    assert sorted(table[table["track_id"] == a[0]]["t"]) == list(range(12))


def test_a_cell_missed_for_one_frame_keeps_its_track(seg):
    frames = [[(1, 20, 12 + 2 * t, 7), (2, 44, 44, 8)] for t in range(8)]
    frames[3] = [frames[3][1]]  # cell 1 not found in frame 3
    image, proposals, truth = _movie(frames)
    result = _segment(seg, image, proposals)
    ids = _ids(result, truth, 1)
    assert ids[3] is None and len({i for i in ids if i is not None}) == 1
    assert _ids(result, truth, 2) == [_ids(result, truth, 2)[0]] * 8
    tracks = result.tracks.set_index("track_id")
    assert tracks.loc[ids[0], "n_frames"] == 7 and tracks.loc[ids[0], "start"] == 0


def test_a_dividing_cell_gets_two_new_tracks_with_their_parent(seg):
    frames = [[(1, 32, 32, 9), (9, 10, 10, 5)] for _ in range(4)]
    for t in range(4, 8):  # daughters 2 and 3 move apart from where the mother was
        frames.append([(2, 32, 27 - 2 * (t - 4), 6), (3, 32, 37 + 2 * (t - 4), 6), (9, 10, 10, 5)])
    image, proposals, truth = _movie(frames)
    result = _segment(seg, image, proposals)
    mother, one, two = (_ids(result, truth, k) for k in (1, 2, 3))
    assert mother[:4] == [mother[0]] * 4 and mother[4:] == [None] * 4
    assert one[4:] == [one[4]] * 4 and two[4:] == [two[4]] * 4
    assert len({mother[0], one[4], two[4]}) == 3  # neither daughter continues her
    tracks = result.tracks.set_index("track_id")
    assert tracks.loc[one[4], "parent_track"] == mother[0]
    assert tracks.loc[two[4], "parent_track"] == mother[0]
    assert tracks.loc[mother[0], "parent_track"] == 0
    assert (tracks.loc[mother[0], "start"], tracks.loc[mother[0], "end"]) == (0, 3)
    assert (tracks.loc[one[4], "start"], tracks.loc[one[4], "n_frames"]) == (4, 4)
    other = _ids(result, truth, 9)  # the bystander: one track, no parent
    assert len(set(other)) == 1 and tracks.loc[other[0], "parent_track"] == 0
    table = result.table
    rows = table[table["track_id"] == one[4]]
    assert (rows["parent_track"] == mother[0]).all() and sorted(rows["t"]) == [4, 5, 6, 7]
