"""Stacks are 3D: axes, objects linked across planes, selection over whole objects,
measurements, and 3D label files (issue "Stacks are 3D")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

import napari_slip
from napari_slip.core.axes import ImageAxes, parse_axes, read_axes, resolve_axes
from napari_slip.core.errors import InputError
from napari_slip.core.io import write_stack_labels_to
from napari_slip.core.measure import measure
from napari_slip.core.models.hub import default_hub
from napari_slip.core.params import StackParams
from napari_slip.core.pipeline.linked import link_parts
from napari_slip.core.pipeline.linking import link_sequence
from napari_slip.core.pipeline.segmenter import Segmenter

from ..floats import assert_close

YY, XX = np.mgrid[:64, :64]


def disc(cy, cx, r):
    return (YY - cy) ** 2 + (XX - cx) ** 2 < r * r


def two_nuclei_stack():
    """Nucleus A spans z 0-5 (radius varying), B spans z 0-3; each plane's ids its own."""
    labels = np.zeros((6, 64, 64), np.int32)
    for z, r in enumerate((4, 7, 8, 8, 7, 4)):
        labels[z][disc(20, 20, r)] = 1 + 10 * z
    for z, r in enumerate((5, 7, 7, 5)):
        labels[z][disc(45, 45, r)] = 2 + 10 * z
    image = np.where(labels > 0, 100.0, 0.0) + np.where(labels % 10 == 2, 50.0, 0.0)
    return image.astype(np.float32), labels


# --- axes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("axes", "ndim", "pattern"),
    [
        ("ZZX", 3, "repeats the axis Z"),
        ("ZQX", 3, "unknown axis letter"),
        ("ZYX", 4, "names 3 axes, but the image has 4"),
        ("SYX", 3, "S \\(RGB samples\\) must be the last"),
        ("ZYQ", 3, "unknown axis letter"),
        ("ZX", 2, "needs both Y and X"),
        ("", 2, "string of axis letters"),
    ],
)
def test_bad_axes_are_one_line(axes, ndim, pattern):
    with pytest.raises(InputError, match=pattern) as info:
        parse_axes(axes, ndim)
    assert "\n" not in str(info.value)


def test_a_stack_without_axes_names_the_choices():
    with pytest.raises(InputError) as info:
        resolve_axes((8, 64, 64))
    text = str(info.value)
    assert "axes='ZYX'" in text and "--axes ZYX" in text and "TCZYX" in text
    assert resolve_axes((64, 64)).letters == "YX"
    assert resolve_axes((64, 64, 3)).letters == "YXS"
    assert resolve_axes((3, 64, 64), channel_axis=0).letters == "CYX"


@pytest.mark.parametrize("size", [0, float("nan"), -1.0, float("inf")])
def test_pixel_sizes_must_be_positive_and_finite(size):
    with pytest.raises(InputError, match="must be a number above 0"):
        resolve_axes((4, 32, 32), "ZYX", pixel_size={"Z": size, "Y": 1, "X": 1})


def test_a_pixel_size_that_would_make_volumes_infinite_is_refused():
    with pytest.raises(InputError, match="at most 1e"):
        resolve_axes((4, 32, 32), "ZYX", pixel_size={"Z": 1e200, "Y": 0.5, "X": 0.5})
    ok = resolve_axes((4, 32, 32), "ZYX", pixel_size={"Z": 1e6, "Y": 0.5, "X": 0.5})
    assert ok.scale["Z"] == 1e6


def test_bad_stacks_refused_before_any_model_loads(tiny_clip_path, tiny_sam_path):
    image = np.zeros((10**6, 1, 1), np.uint8)
    cases = [
        (dict(axes="ZYX"), image, "1 x 1 pixel"),
        (dict(axes="ZZX"), np.zeros((4, 32, 32)), "repeats"),
        (dict(axes="ZYX"), np.zeros((4, 4, 32, 32)), "image has 4"),
        (dict(axes="ZYX", pixel_size={"Z": 0}), np.zeros((4, 32, 32)), "above 0"),
        ({}, np.zeros((4, 32, 32)), "axes='ZYX'"),
    ]
    for options, array, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            napari_slip.segment(
                array, "nucleus", sam=str(tiny_sam_path), clip=str(tiny_clip_path), **options
            )
    assert default_hub().loads == {"sam": 0, "clip": 0}


def test_axes_from_ome_and_imagej_tiffs(tmp_path):
    data = np.zeros((5, 3, 32, 40), np.uint16)
    ome = tmp_path / "ome.ome.tif"
    tifffile.imwrite(
        ome,
        data,
        ome=True,
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeX": 0.25,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeZ": 1.5,
        },
    )
    found = read_axes(ome)
    assert found.letters == "ZCYX"
    assert found.scale == {"X": 0.25, "Y": 0.25, "Z": 1.5}
    assert found.unit == "um"
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(
        ij,
        np.zeros((4, 5, 32, 40), np.uint16),
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "TZYX", "spacing": 3.0, "unit": "micron", "finterval": 10},
    )
    found = read_axes(ij)
    assert found.letters == "TZYX"
    assert found.scale == pytest.approx({"X": 0.5, "Y": 0.5, "Z": 3.0, "T": 10.0})
    assert found.unit == "um"
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 32, 32), np.uint8), photometric="minisblack")
    assert read_axes(plain) is None  # a plain multi-page file says nothing


def test_stack_labels_files_carry_their_axes(tmp_path):
    labels = np.zeros((3, 16, 16), np.int32)
    labels[1, 4:8, 4:8] = 7
    for name in ("labels.tif", "labels.zarr"):
        target = tmp_path / name
        write_stack_labels_to(
            target, labels, target.suffix, "ZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5}, "um"
        )
        found = read_axes(target)
        assert found == ImageAxes("ZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5}, "um")
        back = napari_slip.core.io.open_image(target)
        np.testing.assert_array_equal(np.asarray(back), labels)


# --- linking -----------------------------------------------------------------------


def test_linking_closes_a_gap_of_one_plane():
    frames = [np.zeros((64, 64), np.int32) for _ in range(4)]
    frames[0][disc(30, 30, 8)] = 1
    frames[1][disc(30, 30, 8)] = 2
    frames[3][disc(31, 30, 8)] = 4  # missed in plane 2
    assert sorted(link_sequence(frames, max_gap=1)) == [(1, 2), (2, 4)]
    assert sorted(link_sequence(frames, max_gap=0)) == [(1, 2)]


def test_linking_a_split_and_a_merge_keeps_one_to_one():
    a = np.zeros((64, 64), np.int32)
    a[10:30, 10:40] = 1  # one object ...
    b = np.zeros((64, 64), np.int32)
    b[10:30, 10:28] = 2  # ... splits: the larger half continues it
    b[10:30, 30:40] = 3
    assert link_sequence([a, b]) == [(1, 2)]
    # Two objects merge: the better-overlapping one continues, the other ends.
    c = np.zeros((64, 64), np.int32)
    c[10:30, 10:40] = 4
    assert link_sequence([b, c]) == [(2, 4)]


def test_touching_neighbours_stay_two_objects():
    parts = []
    for _ in range(4):
        plane = np.zeros((64, 64), np.int32)
        plane[disc(32, 22, 10)] = 1
        plane[disc(32, 42, 10) & (plane == 0)] = 2  # touching, shifting slightly
        parts.append((plane, np.array([0, 1])))
    linked = link_parts(parts, [(z,) for z in range(4)], (4, 64, 64), "Z", StackParams())
    assert linked.n_objects == 2
    objects = {tuple(linked.object_of_part[1 + 2 * z : 3 + 2 * z]) for z in range(4)}
    assert objects == {(0, 1)}


def test_time_series_links_frames_into_tracks():
    frames = np.zeros((5, 64, 64), np.int32)
    parts = []
    for t in range(5):
        plane = np.zeros((64, 64), np.int32)
        plane[disc(20 + 2 * t, 20, 6)] = 1  # moving slowly
        plane[disc(45, 45, 6)] = 2
        frames[t] = plane
        parts.append((plane, np.array([0, 1])))
    linked = link_parts(parts, [(t,) for t in range(5)], frames.shape, "T", StackParams())
    assert linked.n_objects == 2


# --- selection over linked objects -------------------------------------------------


@pytest.fixture
def seg(tiny_sam_path, tiny_clip_path):
    return Segmenter(str(tiny_sam_path), str(tiny_clip_path))


def test_a_zstack_gives_3d_objects_scored_over_their_planes(seg):
    image, labels = two_nuclei_stack()
    everything = seg.segment(
        image, "nucleus", labels=labels, axes="ZYX", mode="threshold", threshold=-1
    )
    assert everything.n_objects == 2 and everything.axes == "ZYX"
    assert sorted(everything.table["n_planes"]) == [4, 6]
    assert everything.labels.shape == labels.shape
    # Each 3D object carries one id in every plane it spans.
    for _, row in everything.table.iterrows():
        planes = np.flatnonzero((everything.labels == row["id"]).any(axis=(1, 2)))
        assert len(planes) == row["n_planes"]
    # Its score is its planes' similarities weighted by their areas.
    per_plane = seg.segment(
        image, "nucleus", labels=labels, axes="ZYX", mode="threshold", threshold=-1, link=False
    )
    assert per_plane.n_objects == 10
    for _, row in everything.table.iterrows():
        inside = per_plane.table["source_id"] % 10 == (1 if row["n_planes"] == 6 else 2)
        parts = per_plane.table[inside]
        expected = np.average(parts["similarity"], weights=parts["area"])
        assert_close([row["score"]], [expected], terms=len(parts))  # an area-weighted mean
    # best: the best 3D object, whole; a threshold keeps or drops whole objects.
    best = seg.segment(image, "nucleus", labels=labels, axes="ZYX", mode="best")
    top = everything.table.iloc[0]
    assert best.n_objects == 1 and best.table.iloc[0]["n_planes"] == top["n_planes"]
    scores = sorted(everything.table["score"])
    cut = (scores[0] + scores[1]) / 2
    kept = seg.segment(
        image, "nucleus", labels=labels, axes="ZYX", mode="threshold", threshold=cut
    )
    assert kept.n_objects == 1
    assert kept.table.iloc[0]["n_planes"] == top["n_planes"]
    assert np.count_nonzero(kept.labels) == top["area"]


def test_time_series_rows_per_track_and_frame(seg):
    image, labels = two_nuclei_stack()
    result = seg.segment(
        image, "nucleus", labels=labels, axes="TYX", mode="threshold", threshold=-1
    )
    table = result.table
    assert {"track_id", "t"} <= set(table.columns)
    assert result.n_objects == 2
    assert sorted(table.groupby("track_id")["t"].count()) == [4, 6]
    assert (table["track_id"] == table["id"]).all()
    assert "n_planes" not in table  # frames are times, not planes of one object
    for _, row in table.iterrows():
        assert np.count_nonzero(result.labels[row["t"]] == row["track_id"]) == row["area"]


def test_reselection_of_a_linked_stack_needs_no_image_work(seg):
    from napari_slip.core.params import SelectionParams
    from napari_slip.core.pipeline.stack import reselect_stack

    image, labels = two_nuclei_stack()
    first = seg.segment(image, "nucleus", labels=labels, axes="ZYX", mode="best")
    crops = seg.stats["clip_crop_embeddings"]
    assert crops > 0
    again = reselect_stack(seg, first, SelectionParams(mode="threshold", threshold=-1))
    assert again.n_objects == 2 and again.linked is first.linked
    assert "mean_intensity" in again.table
    assert seg.stats["clip_crop_embeddings"] == crops


# --- measurements ------------------------------------------------------------------


def test_measurements_match_regionprops():
    from skimage.measure import regionprops

    rng = np.random.default_rng(3)
    labels = np.zeros((5, 40, 50), np.int32)
    for i in range(1, 8):
        z, y, x = rng.integers(0, 4), rng.integers(0, 30), rng.integers(0, 40)
        labels[z : z + 2, y : y + 9, x : x + 7] = i
    image = rng.normal(100, 20, (*labels.shape, 2))
    table = measure(labels, image, "ZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5}, "um")
    props = regionprops(labels, intensity_image=image)
    assert list(table.index) == [p.label for p in props]
    for p in props:
        row = table.loc[p.label]
        assert row["area"] == p.area
        assert row["volume_um3"] == pytest.approx(p.area * 0.5)
        assert (row["centroid_z"], row["centroid_y"], row["centroid_x"]) == pytest.approx(
            p.centroid
        )
        z0, y0, x0, z1, y1, x1 = p.bbox
        assert (row["bbox_z0"], row["bbox_y0"], row["bbox_x0"]) == (z0, y0, x0)
        assert (row["bbox_z1"], row["bbox_y1"], row["bbox_x1"]) == (z1, y1, x1)
        assert row["n_planes"] == z1 - z0
        for c in range(2):
            assert row[f"mean_intensity_c{c}"] == pytest.approx(p.intensity_mean[c])
            assert row[f"max_intensity_c{c}"] == pytest.approx(p.intensity_max[c])


def test_plane_tables_carry_original_intensities(seg):
    image, labels = two_nuclei_stack()
    raw = (image[2] * 40).astype(np.uint16)  # 16-bit: not the models' 8-bit image
    result = seg.segment(raw, "nucleus", labels=labels[2], mode="threshold", threshold=-1)
    assert sorted(result.table["mean_intensity"]) == [4000.0, 6000.0]
    assert (result.table["max_intensity"] >= result.table["mean_intensity"]).all()


# --- the command line and batches --------------------------------------------------


def _cli(*args):
    from napari_slip.cli import main

    return main([str(a) for a in args])


def test_cli_segments_an_ome_zstack_into_one_3d_label_image(tmp_path, tiny_clip_path, capsys):
    image, labels = two_nuclei_stack()
    src, props = tmp_path / "stack.ome.tif", tmp_path / "props.tif"
    tifffile.imwrite(
        src,
        image,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5},
    )
    tifffile.imwrite(props, labels)
    out, table = tmp_path / "labels.tif", tmp_path / "objects.csv"
    common = [
        "--clip",
        tiny_clip_path,
        "--proposals-from",
        props,
        "--mode",
        "threshold",
        "--threshold",
        "-1",
        "-q",
    ]
    assert _cli("segment", src, "-p", "nucleus", "-o", out, "--table", table, *common) == 0
    written = tifffile.imread(out)
    assert written.shape == labels.shape and len(np.unique(written)) == 3
    assert read_axes(out).letters == "ZYX" and read_axes(out).scale["Z"] == 2.0
    rows = pd.read_csv(table)
    assert len(rows) == 2 and "volume_um3" in rows and "mean_intensity" in rows
    assert sorted(rows["volume_um3"]) == pytest.approx(sorted(rows["area"] * 0.5))
    # --per-plane keeps today's per-plane ids.
    out2 = tmp_path / "per_plane.zarr"
    assert _cli("segment", src, "-p", "nucleus", "-o", out2, "--per-plane", *common) == 0
    assert len(np.unique(np.asarray(napari_slip.core.io.open_image(out2)))) == 11
    assert read_axes(out2).letters == "ZYX"


def test_cli_stack_without_axes_is_refused_then_given(tmp_path, tiny_clip_path, capsys):
    image, labels = two_nuclei_stack()
    src, props = tmp_path / "plain.tif", tmp_path / "props.tif"
    tifffile.imwrite(src, image)
    tifffile.imwrite(props, labels)
    args = [
        "segment",
        src,
        "-p",
        "nucleus",
        "-o",
        tmp_path / "o.tif",
        "--clip",
        tiny_clip_path,
        "--proposals-from",
        props,
        "-q",
    ]
    assert _cli(*args) != 0
    err = capsys.readouterr().err
    assert "--axes ZYX" in err and len(err.strip().splitlines()) == 1
    assert _cli(*args, "--axes", "TYX", "--mode", "threshold", "--threshold", "-1") == 0
    assert read_axes(tmp_path / "o.tif").letters == "TYX"


def recovered(truth: np.ndarray, labels: np.ndarray) -> float:
    """The share of ``truth``'s 3D objects matched by one of ``labels`` at IoU >= 0.5."""
    from napari_slip.core.pipeline.linking import overlaps

    ia, ib, inter = overlaps(truth, labels)
    size_t, size_l = np.bincount(truth.ravel()), np.bincount(labels.ravel())
    iou = inter / (size_t[ia] + size_l[ib] - inter)
    return len(set(ia[iou >= 0.5].tolist())) / int(truth.max())


def test_linking_recovers_the_3d_nuclei_when_each_plane_is_given(seg):
    from napari_slip.testing.scenes import nuclei_stack

    image, truth = nuclei_stack(4, size=128, depth=6, radius=(8, 16))
    per_plane = np.zeros_like(truth)
    for z in range(len(truth)):  # each plane's objects, numbered on their own
        ids = np.unique(truth[z])[1:]
        lut = np.zeros(truth.max() + 1, np.int32)
        lut[ids] = np.arange(1, len(ids) + 1)
        per_plane[z] = lut[truth[z]]
    options = dict(labels=per_plane, axes="ZYX", mode="threshold", threshold=-1)
    linked = seg.segment(image, "nucleus", **options)
    assert recovered(truth, linked.labels) >= 0.9
    assert linked.n_objects == truth.max()
    unlinked = seg.segment(image, "nucleus", link=False, **options)
    assert recovered(truth, unlinked.labels) < 0.5  # planes alone are not the objects


def test_batch_segments_stacks_with_the_trained_sam(tmp_path, tiny_clip_path, trained_sam_path):
    from napari_slip.testing.scenes import nuclei_stack
    from napari_slip.testing.trained_sam import FIXTURE_AMG

    image, truth = nuclei_stack(1, depth=4)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", image, photometric="minisblack")  # no axes in it
    summary = napari_slip.batch(
        folder,
        tmp_path / "out",
        "nucleus",
        sam=str(trained_sam_path),
        clip=str(tiny_clip_path),
        sam_params=napari_slip.SamProposalParams(**FIXTURE_AMG),
        mode="threshold",
        threshold=-1,
        workers=1,
        axes="ZYX",
        pixel_size={"Z": 2, "Y": 0.5, "X": 0.5},
    )
    assert summary.done and not summary.failed
    written = tifffile.imread(tmp_path / "out" / "a.tif")
    assert written.shape == image.shape
    assert read_axes(tmp_path / "out" / "a.tif").letters == "ZYX"
    assert recovered(truth, written) >= 0.8
    objects = pd.read_csv(tmp_path / "out" / "objects.csv")
    assert {"n_planes", "volume_um3", "centroid_z", "mean_intensity"} <= set(objects.columns)
    assert objects["n_planes"].max() > 1


def test_tzyx_links_z_into_3d_objects_then_t_into_tracks(seg):
    image, labels = two_nuclei_stack()
    movie = np.stack([image] * 3)
    props = np.stack([labels + 100 * t * (labels > 0) for t in range(3)])
    result = seg.segment(
        movie, "nucleus", labels=props, axes="TZYX", mode="threshold", threshold=-1
    )
    assert result.axes == "TZYX" and result.n_objects == 2
    table = result.table
    assert len(table) == 6 and sorted(table["n_planes"]) == [4, 4, 4, 6, 6, 6]
    for row in table.itertuples():
        assert np.count_nonzero(result.labels[row.t] == row.track_id) == row.area


def test_channels_give_one_intensity_column_each(seg):
    image, labels = two_nuclei_stack()
    second = np.where(labels > 0, 7.0, 1.0).astype(np.float32)
    stack = np.stack([image, second], axis=1)  # Z, C, Y, X
    result = seg.segment(
        stack, "nucleus", labels=labels, axes="ZCYX", mode="threshold", threshold=-1
    )
    assert result.labels.shape == labels.shape
    assert (result.table["mean_intensity_c1"] == 7.0).all()
    assert (result.table["max_intensity_c0"] >= 100).all()


@pytest.mark.parametrize(
    ("flags", "pattern"),
    [
        (["--axes", "ZZX"], "repeats the axis Z"),
        (["--axes", "TZYX"], "names 4 axes, but the image has 3"),
        (["--axes", "ZYX", "--pixel-size", "Z=0,Y=1,X=1"], "above 0"),
        (["--axes", "ZYX", "--pixel-size", "Q=2"], "do not have"),
        (["--axes", "ZYX", "--pixel-size", "Z=2,Z=3"], "gives Z twice"),
        (["--axes", "ZYX", "--pixel-size", "Z=1e200,Y=1,X=1"], "at most 1e+09"),
    ],
)
def test_cli_bad_stack_options_are_one_line(tmp_path, tiny_clip_path, capsys, flags, pattern):
    image, _ = two_nuclei_stack()
    src = tmp_path / "plain.tif"
    tifffile.imwrite(src, image)
    code = _cli(
        "segment",
        src,
        "-p",
        "nucleus",
        "-o",
        tmp_path / "o.tif",
        "--clip",
        tiny_clip_path,
        "--proposals",
        "relevance",
        "-q",
        *flags,
    )
    err = capsys.readouterr().err
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert pattern in err
    assert not (tmp_path / "o.tif").exists()
    assert default_hub().loads == {"sam": 0, "clip": 0}


def test_default_leading_letters_follow_napari():
    from napari_slip.core.pipeline.stack import lead_letters

    assert [lead_letters(None, n) for n in range(4)] == ["", "Z", "TZ", "0TZ"]
    assert lead_letters("T", 1) == "T"
    with pytest.raises(InputError, match="2 leading axes"):
        lead_letters("T", 2)
