"""Tiles: the grid, merging across tile borders, lazy inputs, labels to zarr, and what
tiling buys on a mosaic of small objects (judged with the trained fixture SAM)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.params import SamProposalParams, TileParams
from napari_slip.core.pipeline.images import LazyImage
from napari_slip.core.pipeline.proposals import Proposals
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.pipeline.tiles import TiledSamSource, merge_tiles, tile_grid
from napari_slip.core.runtime.generators import drain
from napari_slip.testing.arrays import CountingArray
from napari_slip.testing.metrics import label_metrics, object_metrics
from napari_slip.testing.scenes import nuclei_mosaic
from napari_slip.testing.trained_sam import FIXTURE_AMG


def test_tile_grid_covers_the_image_with_the_overlap():
    tiles = tile_grid((1000, 700), 256, 32)
    covered = np.zeros((1000, 700), int)
    for y0, x0, y1, x1 in tiles:
        assert y1 - y0 == 256 and x1 - x0 == 256  # every tile full size
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    ys = sorted({t[0] for t in tiles})
    assert all(b - a <= 256 - 32 for a, b in itertools.pairwise(ys))
    assert tile_grid((100, 80), 256, 32) == [(0, 0, 100, 80)]  # small image: one tile


def _props(shape, boxes_masks, quality=None):
    boxes = np.asarray([b for b, _ in boxes_masks], dtype=np.int64).reshape(-1, 4)
    masks = [m for _, m in boxes_masks]
    q = np.full(len(masks), 0.9, np.float32) if quality is None else np.asarray(quality)
    return Proposals(tuple(shape), boxes, masks, q, np.zeros(len(masks), np.int64))


def _crop(full):
    ys, xs = np.nonzero(full)
    box = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    return box, full[box[0] : box[2], box[1] : box[3]]


def test_merge_joins_pieces_and_duplicates_but_not_neighbours():
    shape = (100, 180)
    tiles = [(0, 0, 100, 100), (0, 80, 100, 180)]  # shared band: columns 80-99
    cut = np.zeros(shape, bool)
    cut[40:60, 70:115] = True  # crosses both tile borders
    whole = np.zeros(shape, bool)
    whole[10:20, 82:96] = True  # inside the band: seen whole by both tiles
    left, right = np.zeros(shape, bool), np.zeros(shape, bool)
    left[70:90, 84:90] = True  # two touching objects inside the band
    right[70:90, 90:96] = True
    both = left | right
    tile_a = _props(shape, [_crop(cut & (np.arange(180) < 100)), _crop(whole), _crop(both)])
    tile_b = _props(
        shape, [_crop(cut & (np.arange(180) >= 80)), _crop(whole), _crop(left), _crop(right)]
    )
    merged = merge_tiles([tile_a, tile_b], tiles, shape, merge_iou=0.7)
    full = [merged.full_mask(i) for i in range(len(merged))]
    assert sum(np.array_equal(m, cut) for m in full) == 1  # the cut object, one mask
    assert sum(np.array_equal(m, whole) for m in full) == 1  # the duplicate, once
    # Two touching objects agree with the mask of both only half: nothing is merged.
    for m in (left, right, both):
        assert sum(np.array_equal(f, m) for f in full) == 1
    assert len(merged) == 5
    assert sorted(merged.source_ids.tolist()) == [1, 1, 1, 2, 2]  # pieces per object
    # A looser rule still gives the two-object mask one partner in tile b, never both.
    loose = merge_tiles([tile_a, tile_b], tiles, shape, merge_iou=0.4)
    assert len(loose) == 4


def test_merge_iou_one_keeps_every_piece():
    shape = (50, 90)
    tiles = [(0, 0, 50, 50), (0, 40, 50, 90)]
    full = np.zeros(shape, bool)
    full[10:20, 42:48] = True
    merged = merge_tiles(
        [_props(shape, [_crop(full)]), _props(shape, [_crop(full)])], tiles, shape, merge_iou=1.0
    )
    assert len(merged) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tiles": "sometimes"},
        {"tile_size": 32},
        {"overlap": -1},
        {"tile_size": 256, "overlap": 128},
        {"merge_iou": 1.5},
    ],
)
def test_bad_tile_params_are_refused(kwargs):
    with pytest.raises(InputError):
        TileParams(**kwargs)


@pytest.fixture(scope="module")
def mosaic():
    return nuclei_mosaic(3, (512, 768), spacing=44)


@pytest.fixture
def fixture_segmenter(trained_sam_path, tiny_clip_path):
    return Segmenter(
        str(trained_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=SamProposalParams(**FIXTURE_AMG, min_area=30),
        tile_params=TileParams(tiles="on", overlap=32),
        precision="fp32",
        disk_cache=False,
    )


def test_tiles_keep_small_objects_that_shrinking_loses(fixture_segmenter, mosaic):
    rgb, truth = mosaic
    seg = fixture_segmenter
    seg.set_image(rgb)
    tiled = drain(seg.iter_proposals())
    seg.set_tile_params(TileParams(tiles="off"))
    shrunk = drain(seg.iter_proposals())  # SAM sees the image at 256 px: 3x smaller
    t, s = object_metrics(truth, tiled), object_metrics(truth, shrunk)
    assert t["objects"] > 150
    assert t["recall"] >= 0.9, t
    assert s["recall"] <= 0.2, s
    assert tiled.decoded_points == len(tile_grid(rgb.shape[:2], 256, 32)) * 16 * 16
    seg.set_tile_params(TileParams(tiles="on", overlap=32))
    result = seg.segment(None, "nucleus", mode="threshold", threshold=-1)
    assert result.provenance["proposals"]["source"] == "sam-tiles"
    assert result.provenance["proposals"]["overlap"] == 32
    assert result.provenance["sam"]["sha256"] == seg.sam.sha256  # the model is recorded
    # Objects crossing a tile border are found whole; objects seen by two tiles are
    # offered once, not once per tile.
    crossing = _crossing(truth, tile_grid(rgb.shape[:2], 256, 32))
    merged = object_metrics(crossing, tiled)
    seg.set_tile_params(TileParams(tiles="on", overlap=32, merge_iou=1.0))  # no merging
    unmerged = object_metrics(truth, drain(seg.iter_proposals()))
    assert merged["objects"] > 20
    assert merged["recall"] >= 0.9, merged
    # (SAM itself offers some objects twice: 7 of 32 on one 256 px tile of this field.)
    assert t["duplicates"] < 0.8 * unmerged["duplicates"], (t, unmerged)
    assert t["masks"] < 0.85 * unmerged["masks"], (t, unmerged)


def _crossing(truth, tiles):
    """``truth`` with only the objects that cross a tile border inside the image."""
    h, w = truth.shape
    rows = {y for t in tiles for y in (t[0], t[2])} - {0, h}
    cols = {x for t in tiles for x in (t[1], t[3])} - {0, w}
    cut = [truth[y - 1 : y + 1].ravel() for y in rows] + [
        truth[:, x - 1 : x + 1].ravel() for x in cols
    ]
    ids = np.unique(np.concatenate(cut))
    return np.where(np.isin(truth, ids[ids > 0]), truth, 0)


def test_lazy_input_is_read_tile_by_tile(fixture_segmenter, mosaic, monkeypatch):
    rgb, _ = mosaic
    gray = rgb[..., 0].astype(np.uint16) * 200  # 16-bit, normalised by percentiles
    lazy = CountingArray(gray)
    seg = fixture_segmenter
    seg.set_image(lazy)
    assert isinstance(seg.image, LazyImage)
    lazy.reads.clear()
    from_lazy = drain(seg.iter_proposals())
    assert lazy.reads and max(lazy.reads) <= 256 * 256  # never more than a tile at once
    seg2 = Segmenter(
        seg.sam_spec,
        seg.clip_spec,
        "cpu",
        sam_params=seg.sam_params,
        tile_params=seg.tile_params,
        precision="fp32",
        disk_cache=False,
    )
    seg2.set_image(gray)
    from_numpy = drain(seg2.iter_proposals())
    assert len(from_lazy) == len(from_numpy) > 50
    assert np.array_equal(from_lazy.boxes, from_numpy.boxes)
    # Scoring reads crop windows only; windows longer than MAX_WINDOW (here 128) are
    # read every n-th pixel, so a mask spanning the image never loads it whole.
    from napari_slip.core.pipeline import crops

    monkeypatch.setattr(crops, "MAX_WINDOW", 128)
    lazy.reads.clear()
    result = seg.segment(None, "nucleus", mode="topk", top_k=20)
    assert max(lazy.reads) <= 128 * 128
    assert result.n_objects == 20


def test_a_plane_of_a_lazy_stack_is_read_tile_by_tile(fixture_segmenter, monkeypatch):
    """A z-stack kept lazy (zarr, dask): the chosen plane is never read whole."""
    from napari_slip.core.pipeline import crops, images
    from napari_slip.core.pipeline.stack import iter_segment_stack

    monkeypatch.setattr(images, "SAMPLE_PIXELS", 128 * 128)
    monkeypatch.setattr(images, "KEY_STRIP_PIXELS", 128 * 128)
    monkeypatch.setattr(crops, "MAX_WINDOW", 128)
    rgb, truth = nuclei_mosaic(4, (300, 520), spacing=44)
    stack = CountingArray(np.stack([np.zeros_like(rgb[..., 0]), rgb[..., 0]]))
    result = drain(
        iter_segment_stack(
            fixture_segmenter, stack, "nucleus", planes=[(1,)], mode="threshold", threshold=-1
        )
    )
    assert result.labels.shape == (2, 300, 520)
    assert not result.labels[0].any()
    assert label_metrics(truth, result.labels[1])["recall"] >= 0.85
    assert stack.reads and max(stack.reads) <= 256 * 256


def test_labels_painted_into_zarr_match_memory(fixture_segmenter, mosaic, tmp_path):
    import zarr

    rgb, _ = mosaic
    seg = fixture_segmenter
    candidates = drain(seg.iter_candidates(rgb))
    in_memory = seg.select(candidates, "nucleus", mode="threshold", threshold=-1)
    on_disk = seg.select(
        candidates, "nucleus", mode="threshold", threshold=-1, labels_out=tmp_path / "l.zarr"
    )
    stored = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")
    assert np.array_equal(np.asarray(stored), in_memory.labels)
    assert in_memory.labels.max() > 100
    assert on_disk.table.equals(in_memory.table)


def test_auto_tiles_only_above_max_side(tiny_sam_path, tiny_clip_path):
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=SamProposalParams(max_side=256),
        tile_params=TileParams(tiles="auto"),
    )
    assert not seg.tiled((256, 200))
    assert seg.tiled((300, 200))
    seg.set_image(np.zeros((300, 200), np.uint8))
    from napari_slip.core.pipeline.collect import pick_source

    assert isinstance(
        pick_source(None, None, seg.current_session(), seg.sam_params, seg.tile_params),
        TiledSamSource,
    )


def test_cli_tiles_a_tif_into_a_zarr_store(trained_sam_path, tiny_clip_path, tmp_path, capsys):
    import tifffile
    import zarr

    from napari_slip.cli import main

    rgb, truth = nuclei_mosaic(5, (300, 520), spacing=44)
    tifffile.imwrite(tmp_path / "field.tif", rgb[..., 0], tile=(128, 128))
    out = tmp_path / "labels.zarr"
    args = [
        "segment",
        str(tmp_path / "field.tif"),
        "-p",
        "nucleus",
        "-o",
        str(out),
        "--table",
        str(tmp_path / "t.csv"),
        "--mode",
        "threshold",
        "--threshold",
        "-1",
        "--sam",
        str(trained_sam_path),
        "--clip",
        str(tiny_clip_path),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--tiles",
        "on",
        "--overlap",
        "32",
        "--min-area",
        "30",
        *[f"--{k.replace('_', '-')}={v}" for k, v in FIXTURE_AMG.items()],
    ]
    assert main(args) == 0
    labels = np.asarray(zarr.open_array(str(out), mode="r"))
    assert labels.shape == truth.shape
    assert label_metrics(truth, labels)["recall"] >= 0.85
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("napari-slip: tiles (") for line in err) == 1  # one stage
    assert err[-1].endswith(f"Wrote {out} and {tmp_path / 't.csv'}.")
    # A second run needs --overwrite, and then replaces the store whole.
    assert main(args) == 2
    assert "exists already" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--mode", "topk", "--top-k", "3"]) == 0
    again = np.asarray(zarr.open_array(str(out), mode="r"))
    assert again.max() == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_default_overlap_holds_for_a_sam_of_256_px(trained_sam_path, tiny_clip_path, mosaic):
    """The defaults are valid for every SAM: the default 128 px overlap is at most a
    quarter of a tile of SAM's own size (64 px for this 256 px SAM); one given by the
    user is kept, and refused where it cannot work."""
    rgb, _ = mosaic
    params = SamProposalParams(**{**FIXTURE_AMG, "min_area": 30, "points_per_side": 4})
    seg = Segmenter(str(trained_sam_path), str(tiny_clip_path), "cpu", sam_params=params)
    seg.set_tile_params(TileParams(tiles="on"))  # the default overlap
    seg.set_image(rgb)
    proposals = drain(seg.iter_proposals())
    assert proposals.decoded_points == len(tile_grid(rgb.shape[:2], 256, 64)) * 4 * 4
    assert TileParams(tiles="on").overlap_for(1024) == 128  # SAM's own 1,024 px: as before
    assert TileParams(tiles="on", overlap=100).overlap_for(256) == 100  # given: kept
    seg.set_tile_params(TileParams(tiles="on", overlap=130))
    with pytest.raises(InputError, match=r"overlap \(130 px\) must be less than half"):
        drain(seg.iter_proposals())
