"""Shape measurements equal scikit-image's: 2D perimeter, eccentricity, solidity; 3D
surface area (marching cubes, physical units), sphericity, extent and principal axis
lengths; in a run's table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import marching_cubes, mesh_surface_area, regionprops

from napari_slip.core.measure import with_measurements
from napari_slip.core.shape import shape_table
from tests.floats import assert_close


def _ellipses(rng, shape=(96, 120), n=6):
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx = rng.uniform(15, shape[0] - 15), rng.uniform(15, shape[1] - 15)
        a, b, t = rng.uniform(4, 12), rng.uniform(3, 8), rng.uniform(0, np.pi)
        u = np.cos(t) * (xx - cx) + np.sin(t) * (yy - cy)
        v = -np.sin(t) * (xx - cx) + np.cos(t) * (yy - cy)
        labels[((u / a) ** 2 + (v / b) ** 2 <= 1) & (labels == 0)] = k
    labels[5:9, 5:30] = n + 1  # a bar: solidity 1
    labels[60:70, 100:110] = n + 2
    labels[62:70, 103:107] = 0  # a U: solidity well below 1
    return labels


def test_2d_shapes_are_scikit_images():
    labels = _ellipses(np.random.default_rng(0))
    table = shape_table(labels, "YX", {"Y": 0.4, "X": 0.4}, "um")
    props = {p.label: p for p in regionprops(labels)}
    assert sorted(table.index) == sorted(props)
    for label, p in props.items():
        row = table.loc[label]
        assert row["perimeter"] == pytest.approx(p.perimeter)
        assert row["perimeter_um"] == pytest.approx(0.4 * p.perimeter)
        assert row["eccentricity"] == pytest.approx(p.eccentricity)
        assert row["solidity"] == pytest.approx(p.solidity)
    assert table.loc[7, "solidity"] == pytest.approx(1.0) and table.loc[8, "solidity"] < 0.8
    rectangular = shape_table(labels, "YX", {"Y": 0.5, "X": 0.25}, "um")
    assert rectangular["perimeter_um"].isna().all()  # one spacing only: not guessed


def _ellipsoid(shape, centre, axes):
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return sum(((g - c) / a) ** 2 for g, c, a in zip((zz, yy, xx), centre, axes, strict=True)) <= 1


def test_3d_shapes_are_scikit_images_in_physical_units():
    spacing = (2.0, 0.5, 0.5)
    labels = np.zeros((16, 64, 64), np.int32)
    labels[_ellipsoid(labels.shape, (7, 20, 20), (3, 12, 12))] = 1  # a sphere of 6 um
    labels[_ellipsoid(labels.shape, (8, 45, 40), (3, 16, 6))] = 2  # elongated
    table = shape_table(labels, "ZYX", dict(zip("ZYX", spacing, strict=True)), "um")
    for label, p in ((p.label, p) for p in regionprops(labels, spacing=spacing)):
        row = table.loc[label]
        padded = np.pad(p.image, 1).astype(np.uint8)
        vertices, faces, _, _ = marching_cubes(padded, 0.5, spacing=spacing)
        area = mesh_surface_area(vertices, faces)
        assert_close(row["surface_area_um2"], area, terms=len(faces))
        volume = p.area  # physical with spacing
        sphericity = np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area
        assert_close(row["sphericity"], sphericity, terms=len(faces), depth=4)
        assert row["extent"] == pytest.approx(p.extent)
        assert_close(row["major_axis_length_um"], p.axis_major_length, terms=p.num_pixels)
        assert_close(row["minor_axis_length_um"], p.axis_minor_length, terms=p.num_pixels)
    assert table.loc[1, "sphericity"] > 0.85 and table.loc[2, "sphericity"] < 0.85
    lengths = [f"{k}_axis_length_um" for k in ("major", "middle", "minor")]
    major, middle, minor = table.loc[2, lengths]
    assert major == pytest.approx(16.0, rel=0.1)  # 2 x 16 px x 0.5 um
    assert middle == pytest.approx(12.0, rel=0.15) and minor == pytest.approx(6.0, rel=0.15)


def test_a_runs_table_and_an_edit_keep_the_shape_columns():
    labels = _ellipses(np.random.default_rng(1))
    table = labels_table(labels)
    out = with_measurements(table, labels, None, "YX", {"Y": 0.5, "X": 0.5}, "um")
    assert {"perimeter", "perimeter_um", "eccentricity", "solidity"} <= set(out.columns)
    edited = labels.copy()
    edited[edited == 3] = 0
    scale = {"Y": 0.5, "X": 0.5}
    again = with_measurements(table[table["id"] != 3], edited, None, "YX", scale, "um")
    kept = out.set_index("id").drop(index=3)
    np.testing.assert_array_equal(again.set_index("id")["solidity"], kept["solidity"])


def labels_table(labels):
    import pandas as pd

    ids = [int(i) for i in np.unique(labels) if i]
    return pd.DataFrame({"id": ids, "score": np.linspace(1, 0, len(ids))})


def test_kept_rows_equal_a_fresh_measurement_after_edits():
    """Rows kept by each object's pixels (and the image under it) equal what measuring
    again gives, after objects are removed, changed and added, in 2D and 3D."""
    from napari_slip.core.measure import kept_measure, measure

    rng = np.random.default_rng(2)
    labels = _ellipses(rng, shape=(96, 120), n=8)
    image = rng.random((96, 120, 2)) * 1000
    scale = {"Y": 0.5, "X": 0.5}
    first = kept_measure(labels, image, "YX", scale, "um")
    pd.testing.assert_frame_equal(first, measure(labels, image, "YX", scale, "um"))
    edited = labels.copy()
    edited[edited == 3] = 0  # removed
    edited[40:44, :] = np.where(edited[40:44, :] == 0, 0, 5)  # object 5 grows a band
    edited[2:6, 100:110] = 11  # added
    again = kept_measure(edited, image, "YX", scale, "um")
    expected = measure(edited, image, "YX", scale, "um")
    assert list(again.index) == list(expected.index)
    assert (again.dtypes == expected.dtypes).all()
    scale_of = {c: float(np.abs(expected[c]).max()) for c in expected.columns}
    for column in expected.columns:
        got, want = again[column].to_numpy(), expected[column].to_numpy()
        assert_close(got, want, terms=edited.size, scale=scale_of[column])
    stack = np.stack([edited, edited, labels])
    image3 = np.stack([image, image, image])[..., 0]
    pd.testing.assert_frame_equal(
        kept_measure(stack, image3, "ZYX"), measure(stack, image3, "ZYX"), rtol=1e-12
    )
