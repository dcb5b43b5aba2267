"""Objects written for QuPath (GeoJSON), Fiji (ImageJ ROIs) and OME readers, read back
with the reference readers (shapely, roifile, tifffile, zarr): every polygon covers
exactly its object's pixels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import roifile
import shapely
import tifffile
import zarr
from shapely.geometry import shape

from napari_slip.core.errors import InputError
from napari_slip.core.export import export_objects, geojson, save_labels, table_beside
from napari_slip.testing.dense import dense_nuclei_stack

HUGE = 2**31 - 7  # an id that a lookup table by id could not hold


def _hard_plane() -> np.ndarray:
    """Touching objects, a ring with a hole (and an island inside it), an object in two
    pieces, one at the image's edge, and a huge id."""
    labels = np.zeros((48, 64), np.int32)
    labels[4:20, 4:14] = 1
    labels[4:20, 14:30] = 2  # touches 1 along a whole side
    yy, xx = np.mgrid[:48, :64]
    r = np.hypot(yy - 30, xx - 45)
    labels[(r >= 5) & (r < 11)] = 3  # a ring
    labels[r < 2] = 4  # an island in its hole
    labels[30:36, 2:8] = 5
    labels[40:46, 10:16] = 5  # the same object's second piece
    labels[0:6, 50:64] = HUGE  # at the edge, with a huge id
    labels[24, 20] = 6  # one pixel
    return labels


def _raster(geometry, like: np.ndarray) -> np.ndarray:
    """The pixels whose centres the geometry contains (pixel (r, c) centred at
    (c + 0.5, r + 0.5) in the pixel-corner coordinates the files use)."""
    yy, xx = np.mgrid[: like.shape[0], : like.shape[1]]
    return shapely.contains_xy(geometry, xx + 0.5, yy + 0.5)


def test_geojson_polygons_cover_exactly_each_objects_pixels(tmp_path):
    labels = _hard_plane()
    table = pd.DataFrame(
        {"id": [1, 2, 3, 4, 5, 6, HUGE], "score": np.linspace(0.9, 0.3, 7), "prompt": "cell"}
    )
    table["class"] = ["round", "", "ring", "round", "", "", "edge"]
    path = export_objects(tmp_path / "cells.geojson", labels, table, name="cell")
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    features = {f["properties"]["measurements"]["label"]: f for f in collection["features"]}
    assert set(features) == {1, 2, 3, 4, 5, 6, HUGE}
    for label, feature in features.items():
        geometry = shape(feature["geometry"])
        assert geometry.is_valid, label
        assert np.array_equal(_raster(geometry, labels), labels == label), label
        props = feature["properties"]
        assert props["objectType"] == "detection" and len(props["classification"]["color"]) == 3
        row = table[table["id"] == label].iloc[0]
        assert props["measurements"]["score"] == pytest.approx(row["score"])
        assert props["classification"]["name"] == (row["class"] or "cell")
    assert features[3]["geometry"]["type"] == "Polygon"  # the ring: one hole
    assert len(features[3]["geometry"]["coordinates"]) == 2
    assert features[5]["geometry"]["type"] == "MultiPolygon"  # two pieces


def test_imagej_rois_read_back_with_roifile_in_their_planes(tmp_path):
    _, truth = dense_nuclei_stack(1, shape=(6, 48, 48))
    path = export_objects(tmp_path / "rois.zip", truth, axes="ZYX")
    rois = roifile.roiread(path)
    assert len(rois) >= truth.max() and all(r.roitype == roifile.ROI_TYPE.POLYGON for r in rois)
    covered = np.zeros_like(truth)
    for roi in rois:
        label = int(roi.name.split("-")[0])
        z = roi.z_position - 1
        polygon = shapely.Polygon(roi.coordinates())
        inside = _raster(polygon, truth[z])
        # A polygon has no holes: it covers its object's piece, maybe more (a hole).
        assert (truth[z][inside] == label).mean() > 0.6
        covered[z][inside & (truth[z] == label)] = label
    assert np.array_equal(covered, truth)  # every pixel of every object, in its plane


def test_a_stacks_geojson_puts_each_object_in_its_plane():
    _, truth = dense_nuclei_stack(2, shape=(5, 40, 40))
    collection = geojson(truth, axes="ZYX")
    for z in range(truth.shape[0]):
        plane = np.zeros(truth.shape[1:], truth.dtype)
        for f in collection["features"]:
            if f["geometry"]["plane"]["z"] == z:
                label = f["properties"]["measurements"]["label"]
                plane[_raster(shape(f["geometry"]), plane)] = label
        assert np.array_equal(plane, truth[z]), z


@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.zarr"])
def test_saved_labels_keep_axes_pixel_sizes_and_the_table(tmp_path, suffix):
    _, truth = dense_nuclei_stack(3, shape=(4, 32, 32))
    truth = truth.astype(np.int64)
    truth[truth == truth.max()] = 70_000  # beyond uint16: written as uint32
    table = pd.DataFrame({"id": np.unique(truth)[1:], "volume_um3": 1.5})
    scale = {"Z": 2.0, "Y": 0.5, "X": 0.5}
    path = tmp_path / f"cells{suffix}"
    written = save_labels(path, truth, table, "ZYX", scale, "um")
    assert written == [path, tmp_path / "cells.csv"] == [path, table_beside(path)]
    pd.testing.assert_frame_equal(pd.read_csv(written[1]), table)
    if suffix == ".ome.tif":
        with tifffile.TiffFile(path) as tif:
            assert tif.series[0].axes == "ZYX"
            data = tif.asarray()
            ome = tif.ome_metadata
        for key, value in (("PhysicalSizeZ", "2.0"), ("PhysicalSizeX", "0.5")):
            assert f'{key}="{value}"' in ome
    else:
        group = zarr.open_group(str(path), mode="r")
        data = group["0"][...]
        meta = group.attrs["multiscales"][0]
        assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
        assert meta["axes"][0]["unit"] == "micrometer"
        assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
    assert np.array_equal(data, truth) and data.dtype == np.uint32


def test_exports_refuse_to_overwrite_or_guess_and_write_nothing(tmp_path):
    labels = _hard_plane()
    path = tmp_path / "cells.geojson"
    path.write_text("the user's own file")
    with pytest.raises(InputError, match="exists"):
        export_objects(path, labels)
    assert path.read_text() == "the user's own file"
    with pytest.raises(InputError, match=r"\.csv .*\.geojson .*\.zip"):
        export_objects(tmp_path / "cells.xlsx", labels)
    with pytest.raises(InputError, match="OME-TIFF"):
        save_labels(tmp_path / "cells.png", labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.geojson"]
    export_objects(path, labels, overwrite=True)
    assert len(json.loads(path.read_text())["features"]) == 7


def test_the_command_line_writes_geojson_and_rois_beside_the_labels(
    tmp_path, tiny_sam_path, tiny_clip_path
):
    from napari_slip.cli import main
    from napari_slip.testing import blobs_image

    image, truth = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "truth.tif", truth.astype(np.uint16))
    args = ["segment", str(tmp_path / "img.tif"), "-p", "cell", "-o", str(tmp_path / "out.tif")]
    args += ["--proposals-from", str(tmp_path / "truth.tif"), "--mode", "threshold"]
    args += ["--threshold", "-1", "--sam", str(tiny_sam_path), "--clip", str(tiny_clip_path)]
    args += ["--device", "cpu", "-q", "--geojson", str(tmp_path / "cells.geojson")]
    assert main([*args, "--rois", str(tmp_path / "cells.zip")]) == 0
    labels = tifffile.imread(tmp_path / "out.tif")
    assert labels.max() == truth.max()
    features = json.loads((tmp_path / "cells.geojson").read_text())["features"]
    for feature in features:
        label = feature["properties"]["measurements"]["label"]
        assert np.array_equal(_raster(shape(feature["geometry"]), labels), labels == label)
        assert feature["properties"]["classification"]["name"] == "cell"
        assert "score" in feature["properties"]["measurements"]
    assert sorted(f["properties"]["measurements"]["label"] for f in features) == list(
        range(1, labels.max() + 1)
    )
    rois = roifile.roiread(tmp_path / "cells.zip")
    for roi in rois:
        inside = _raster(shapely.Polygon(roi.coordinates()), labels)
        assert np.array_equal(inside, labels == int(roi.name))
    assert main([*args, "--rois", str(tmp_path / "cells.roi")]) == 2  # refused, nothing lost
