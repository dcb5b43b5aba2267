"""Proposals guided by the relevance map: where points go, what regions become, and
guided mode's recall against SAM's full grid with the trained fixture SAM."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.params import GuidedParams, SamProposalParams, TileParams
from napari_slip.core.pipeline.guided import guided_points, relevance_regions, unit_map
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.runtime.generators import drain
from napari_slip.testing.trained_sam import FIXTURE_AMG, match_objects

from ..floats import assert_close


def _bumps(shape=(100, 120), centres=((30, 40, 0.9), (70, 90, 0.7))):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.float32)
    for cy, cx, peak in centres:
        out = np.maximum(out, peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60))
    return out


def test_unit_map_scales():
    cos = np.array([[0.1, 0.2], [0.3, 0.3]], np.float32)
    assert_close(unit_map(cos, probability=False), [[0, 0.5], [1, 1]], terms=1, scale=1.0)
    np.testing.assert_array_equal(unit_map(np.full((2, 2), 0.3), False), np.zeros((2, 2)))
    np.testing.assert_array_equal(unit_map(np.array([[1.2, -0.1]]), True), [[1, 0]])


def test_points_go_to_the_peaks_first_then_the_safety_grid():
    unit = _bumps()
    points = guided_points(unit, GuidedParams(level=0.5, peaks=5, safety_grid=3))
    # the two regions' peaks first, strongest first, as (x, y) pixel centres
    np.testing.assert_allclose(points[:2], [[40.5, 30.5], [90.5, 70.5]])
    assert len(points) == 2 + 9  # no other local maxima above the level; a 3 x 3 grid
    grid = points[2:]
    assert grid[:, 0].min() < 25 and grid[:, 0].max() > 95 and grid[:, 1].max() > 80
    none = guided_points(np.zeros((50, 50), np.float32), GuidedParams(safety_grid=2))
    assert len(none) == 4  # nothing above the level: the safety grid alone
    capped = guided_points(unit, GuidedParams(level=0.5, peaks=1, safety_grid=0))
    np.testing.assert_allclose(capped, [[40.5, 30.5]])
    with pytest.raises(InputError, match="needs peaks or a safety grid"):
        GuidedParams(peaks=0, safety_grid=0)


def test_regions_above_the_level_are_proposals():
    unit = _bumps(centres=((30, 40, 0.9), (70, 90, 0.7), (10, 110, 0.52)))
    props = relevance_regions(unit, GuidedParams(level=0.5, min_region=10))
    assert len(props) == 2  # the third region is under min_area
    first = props.full_mask(0)
    assert first[30, 40] and not first[70, 90] and first.sum() == (unit[:, :65] > 0.5).sum()
    assert_close(props.quality[:1], [unit[first].mean()], terms=int(first.sum()))
    assert len(relevance_regions(unit, GuidedParams(level=0.5, min_region=1))) == 3


@pytest.fixture(scope="module")
def guided_segmenter(trained_sam_path, decoder_fixture):
    return Segmenter(
        sam=str(trained_sam_path),
        clip=str(decoder_fixture.clip),
        decoder=decoder_fixture.decoder,
        disk_cache=False,
        sam_params=SamProposalParams(**FIXTURE_AMG),
    )


def _class_labels(item, name):
    ids = [label for label, c in item.classes.items() if c == name]
    return np.where(np.isin(item.labels, ids), item.labels, 0)


def test_guided_recall_against_the_full_grid(guided_segmenter, held_out):
    """Trained SAM fixture + fixture decoder on held-out synthetic images: guided mode
    finds most of the target objects the full grid finds, decoding a fraction of the
    points; each new prompt on a seen image decodes only the points it adds."""
    seg = guided_segmenter
    grid_found = guided_found = total = 0
    grid_points_total = guided_points_total = 0
    for item in held_out:
        seg.set_image(item.image)
        before = seg.stats["sam_decoded_points"]
        grid = drain(seg.iter_proposals())
        grid_points_total += seg.stats["sam_decoded_points"] - before
        grid_masks = [grid.full_mask(i) for i in range(len(grid))]
        for name in sorted(set(item.classes.values())):
            truth = _class_labels(item, name)
            before = seg.stats["sam_decoded_points"]
            guided = drain(seg.iter_proposals(seg.proposal_source("guided", name)))
            guided_points_total += seg.stats["sam_decoded_points"] - before
            total += len(np.unique(truth)) - 1
            grid_found += match_objects(truth, grid_masks)[0]
            guided_found += match_objects(
                truth, [guided.full_mask(i) for i in range(len(guided))]
            )[0]
    assert grid_found >= 0.8 * total
    assert guided_found >= 0.75 * grid_found, (guided_found, grid_found, total)
    assert guided_points_total <= grid_points_total / 3, (guided_points_total, grid_points_total)


def test_a_new_prompt_decodes_only_new_points(guided_segmenter, held_out):
    seg = guided_segmenter
    item = held_out[3]
    names = sorted(set(item.classes.values()))
    first = seg.segment(item.image, names[0], proposals="guided")
    assert first.provenance["proposals"]["source"] == "guided"
    assert first.provenance["sam"] is not None and first.provenance["decoder"] is not None
    encodings = seg.stats["sam_image_encodings"]
    decoded = seg.stats["sam_decoded_points"]
    n_first = GuidedParams().safety_grid ** 2  # at least the safety grid was decoded
    assert decoded >= n_first
    seg.segment(None, names[0], proposals="guided", mode="threshold", threshold=0.0)
    assert seg.stats["sam_decoded_points"] == decoded  # a mode change decodes nothing
    seg.segment(None, names[1], proposals="guided")
    new = seg.stats["sam_decoded_points"] - decoded
    assert new < GuidedParams().peaks  # the shared safety grid is not decoded again
    assert seg.stats["sam_image_encodings"] == encodings  # one image encoding in all


@pytest.fixture(scope="module")
def mosaic(held_out):
    """Four held-out images side by side (256 px): labels and classes of all four."""
    images = [item.image for item in held_out[:4]]
    image = np.concatenate(
        [np.concatenate(images[:2], axis=1), np.concatenate(images[2:], axis=1)]
    )
    labels = np.zeros(image.shape[:2], np.int32)
    classes: dict[int, str] = {}
    offset = 0
    for k, item in enumerate(held_out[:4]):
        y, x = (k // 2) * 128, (k % 2) * 128
        labels[y : y + 128, x : x + 128] = np.where(item.labels > 0, item.labels + offset, 0)
        classes.update({label + offset: name for label, name in item.classes.items()})
        offset += int(item.labels.max())
    return image, labels, classes


def test_guided_works_tile_by_tile(guided_segmenter, mosaic, monkeypatch):
    """Tiles on: the map of the whole image places points in each tile, SAM decodes
    them tile by tile, the masks merge across tile borders. Most of what SAM's tiled
    grid finds, with far fewer points; a tile whose points are all decoded already is
    not encoded again."""
    from napari_slip.core.pipeline.sources import TiledGuidedSource

    image, labels, classes = mosaic
    seg = guided_segmenter
    seg.set_tile_params(TileParams(tiles="on", tile_size=128, overlap=32))
    try:
        seg.set_image(image)
        before = seg.stats["sam_decoded_points"]
        grid = drain(seg.iter_proposals())
        grid_points = seg.stats["sam_decoded_points"] - before
        grid_masks = [grid.full_mask(i) for i in range(len(grid))]
        grid_found = guided_found = total = guided_points = 0
        for name in sorted(set(classes.values())):
            source = seg.proposal_source("guided", name)
            assert isinstance(source, TiledGuidedSource)
            before = seg.stats["sam_decoded_points"]
            guided = drain(seg.iter_proposals(source))
            guided_points += seg.stats["sam_decoded_points"] - before
            ids = [label for label, c in classes.items() if c == name]
            truth = np.where(np.isin(labels, ids), labels, 0)
            total += len(ids)
            grid_found += match_objects(truth, grid_masks)[0]
            guided_found += match_objects(
                truth, [guided.full_mask(i) for i in range(len(guided))]
            )[0]
        assert grid_found >= 0.7 * total
        assert guided_found >= 0.75 * grid_found, (guided_found, grid_found, total)
        assert guided_points <= grid_points / 3, (guided_points, grid_points)
        # The safety grid alone: every tile's points are decoded already.
        encodings = seg.stats["sam_image_encodings"]
        before = seg.stats["sam_decoded_points"]
        seg.guided_params = GuidedParams(peaks=0)
        only_grid = drain(seg.iter_proposals(seg.proposal_source("guided", "anything")))
        assert len(only_grid) > 0
        assert seg.stats["sam_image_encodings"] == encodings
        assert seg.stats["sam_decoded_points"] == before
    finally:
        seg.set_tile_params(TileParams())
        seg.guided_params = GuidedParams()


def test_guided_tiles_read_a_lazy_image_a_region_at_a_time(guided_segmenter, mosaic, monkeypatch):
    """A dask/zarr-like image: the map reads CLIP windows, SAM reads tiles; the same
    proposals as the image in memory."""
    from napari_slip.core.pipeline import images
    from napari_slip.testing.arrays import CountingArray

    monkeypatch.setattr(images, "SAMPLE_PIXELS", 64 * 64)
    monkeypatch.setattr(images, "KEY_STRIP_PIXELS", 64 * 64)
    image, _, _ = mosaic
    seg = guided_segmenter
    seg.set_tile_params(TileParams(tiles="on", tile_size=128, overlap=32))
    try:
        in_memory = drain(seg.iter_proposals(_guided(seg, image, "circle")))
        lazy = CountingArray(image)
        encodings = seg.stats["sam_image_encodings"]
        from_lazy = drain(seg.iter_proposals(_guided(seg, lazy, "circle")))
        assert isinstance(seg.image, images.LazyImage)
        assert seg.stats["sam_image_encodings"] == encodings + 9  # 3 x 3 tiles, read anew
        assert lazy.reads and max(lazy.reads) <= 128 * 128 * 3  # a tile at most
        assert len(from_lazy) == len(in_memory) > 0
        np.testing.assert_array_equal(from_lazy.boxes, in_memory.boxes)
    finally:
        seg.set_tile_params(TileParams())


def _guided(seg, image, prompt):
    seg.set_image(image)
    return seg.proposal_source("guided", prompt)
