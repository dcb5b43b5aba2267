"""Nothing lost: an output never holds, replaces or lies inside an input; outputs of one
run never overlap; a folder output is swapped in whole only when complete, and a failure
while outputs are put in place restores the old ones; batches never replace files that
no batch wrote; interrupted runs leave no temporaries behind; outputs are readable as
the umask says. Each case checks the message and that every file is unchanged."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_slip
from napari_slip.cli import main
from napari_slip.core import io
from napari_slip.core.errors import InputError
from napari_slip.core.io import Outputs, remove_stale_temporaries
from napari_slip.testing import blobs_image


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-slip: error:"), err
    return err[0]


@pytest.fixture
def store(tmp_path):
    """X.zarr, a folder holding the image and its labels (as some users keep them)."""
    image, labels = blobs_image()
    (tmp_path / "X.zarr").mkdir()
    tifffile.imwrite(tmp_path / "X.zarr" / "cells.tif", image)
    tifffile.imwrite(tmp_path / "X.zarr" / "cells_labels.tif", labels.astype(np.uint16))
    return tmp_path


def _segment(image, labels, clip, *extra):
    args = ["segment", str(image), "-p", "a blob", "--proposals-from", str(labels)]
    return main([*args, "--clip", str(clip), "-q", *extra])


def test_a_folder_output_that_holds_the_inputs_is_refused_even_with_overwrite(
    store, tiny_clip_path, capsys
):
    before = _tree(store)
    folder = store / "X.zarr"
    code = _segment(
        folder / "cells.tif",
        folder / "cells_labels.tif",
        tiny_clip_path,
        "-o",
        str(folder),
        "--overwrite",
    )
    assert code == 2
    line = _error(capsys)
    assert "--output" in line and "holds the input" in line and "cells" in line
    assert _tree(store) == before


def test_an_output_inside_an_input_store_is_refused(tmp_path, tiny_clip_path, capsys):
    import zarr

    image, labels = blobs_image()
    z = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, dtype="uint8")
    z[:] = image
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    before = _tree(tmp_path)
    code = _segment(
        tmp_path / "img.zarr",
        tmp_path / "labels.tif",
        tiny_clip_path,
        "-o",
        str(tmp_path / "img.zarr" / "out.tif"),
    )
    assert code == 2 and "lies inside the input" in _error(capsys)
    assert _tree(tmp_path) == before


def test_a_table_inside_the_zarr_output_is_refused_before_anything_is_replaced(
    tmp_path, tiny_clip_path, capsys
):
    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    out = tmp_path / "L.zarr"
    assert (
        _segment(tmp_path / "img.tif", tmp_path / "labels.tif", tiny_clip_path, "-o", str(out))
        == 0
    )
    capsys.readouterr()
    before = _tree(tmp_path)
    code = _segment(
        tmp_path / "img.tif",
        tmp_path / "labels.tif",
        tiny_clip_path,
        "-o",
        str(out),
        "--table",
        str(out / "objects.csv"),
        "--overwrite",
    )
    line = _error(capsys)
    assert code == 2 and "--table lies inside --output" in line
    assert _tree(tmp_path) == before


def test_outputs_that_overlap_are_refused(tmp_path):
    with pytest.raises(InputError, match="b lies inside a"):
        Outputs({"a": tmp_path / "A.zarr", "b": tmp_path / "A.zarr" / "t.csv"}).check()
    with pytest.raises(InputError, match="b lies inside a"):
        Outputs({"b": tmp_path / "A.zarr" / "t.csv", "a": tmp_path / "A.zarr"}).check()


def test_a_symlinked_output_that_is_an_input_is_refused(tmp_path):
    (tmp_path / "img.tif").write_bytes(b"raw")
    (tmp_path / "link.tif").symlink_to(tmp_path / "img.tif")
    with pytest.raises(InputError, match="is also an input"):
        Outputs({"o": tmp_path / "link.tif"}, [tmp_path / "img.tif"], overwrite=True).check()
    assert (tmp_path / "img.tif").read_bytes() == b"raw"


def test_a_zarr_output_is_replaced_only_when_the_new_one_is_complete(tmp_path):
    old = io.create_zarr_labels(tmp_path / "L.zarr", (8, 8))
    old[:] = 7
    before = _tree(tmp_path)

    def half_then_fails(tmp):
        new = io.create_zarr_labels(tmp, (8, 8))
        new[:4] = 1
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match=r"No space left on device.*nothing was written"):
        Outputs({"labels": tmp_path / "L.zarr"}, overwrite=True).write({"labels": half_then_fails})
    assert _tree(tmp_path) == before  # the old store whole, no staged folder left

    def complete(tmp):
        io.create_zarr_labels(tmp, (8, 8))[:] = 3

    Outputs({"labels": tmp_path / "L.zarr"}, overwrite=True).write({"labels": complete})
    import zarr

    assert (zarr.open_array(str(tmp_path / "L.zarr"), mode="r")[:] == 3).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L.zarr"]


def test_a_failure_while_putting_outputs_in_place_restores_the_old_ones(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old A")
    io.create_zarr_labels(tmp_path / "L.zarr", (4, 4))[:] = 5
    before = _tree(tmp_path)
    real = os.replace
    calls = []

    def fails_on_the_last_move(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if Path(dst).name == "L.zarr" and Path(src).name.endswith(".part"):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", fails_on_the_last_move)
    outputs = Outputs({"a": tmp_path / "a.txt", "labels": tmp_path / "L.zarr"}, overwrite=True)
    with pytest.raises(InputError, match=r"Input/output error.*nothing was written"):
        outputs.write(
            {
                "a": lambda p: p.write_text("new A"),
                "labels": lambda p: io.create_zarr_labels(p, (4, 4)).__setitem__(slice(None), 9),
            }
        )
    assert any(dst == "a.txt" for _, dst in calls)  # a.txt had been replaced, then restored
    assert _tree(tmp_path) == before


def test_a_restore_that_fails_names_what_was_replaced_and_where_the_old_one_is(
    tmp_path, monkeypatch
):
    (tmp_path / "a.txt").write_text("old A")
    (tmp_path / "b.txt").write_text("old B")
    real = os.replace

    def broken(src, dst):
        if Path(dst).name == "b.txt" and Path(src).name.endswith(".part"):
            raise OSError(5, "Input/output error")
        if Path(dst).name == "a.txt" and Path(src).name.endswith(".old"):
            raise OSError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", broken)
    outputs = Outputs({"a": tmp_path / "a.txt", "b": tmp_path / "b.txt"}, overwrite=True)
    with pytest.raises(InputError) as info:
        outputs.write({"a": lambda p: p.write_text("new"), "b": lambda p: p.write_text("new")})
    message = str(info.value)
    assert "after replacing" in message and "a.txt" in message and "nothing was" not in message
    backup = Path(message.split("its old version is at ")[1].split(")")[0])
    assert backup.read_text() == "old A"  # the user's data is kept, and named
    assert (tmp_path / "b.txt").read_text() == "old B"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_are_readable_as_the_umask_says(tmp_path, umask):
    old = os.umask(umask)
    try:
        Outputs({"f": tmp_path / "f.csv", "z": tmp_path / "L.zarr"}).write(
            {"f": lambda p: p.write_text("x"), "z": lambda p: io.create_zarr_labels(p, (4, 4))}
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.csv").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "L.zarr").stat().st_mode) == 0o777 & ~umask


def test_a_long_output_name_works_and_a_too_long_one_is_refused_before_any_work(
    tmp_path, tiny_clip_path, capsys
):
    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    long_name = "n" * 246 + ".tif"  # 250 characters: legal; its temporary must be too
    code = _segment(
        tmp_path / "img.tif",
        tmp_path / "labels.tif",
        tiny_clip_path,
        "-o",
        str(tmp_path / long_name),
    )
    assert code == 0 and (tmp_path / long_name).is_file()
    capsys.readouterr()
    before = _tree(tmp_path)
    code = _segment(
        tmp_path / "img.tif",
        tmp_path / "labels.tif",
        tiny_clip_path,
        "-o",
        str(tmp_path / ("m" * 296 + ".tif")),
    )
    assert code == 2 and "file systems allow 255" in _error(capsys)
    assert _tree(tmp_path) == before


def test_stale_temporaries_are_found_and_old_versions_kept(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = [
        tmp_path / ".slip-A01.tif.k2j_9xq0.part",
        tmp_path / "sub" / ".slip-b.tif.abcd1234.part",
    ]
    for path in stale:
        path.write_bytes(b"half")
    (tmp_path / ".slip-c.zarr.zz00yy11.part").mkdir()
    stale.append(tmp_path / ".slip-c.zarr.zz00yy11.part")
    # A user's hidden files named alike are theirs: never removed.
    users = [tmp_path / "sub" / ".notes.20241201.part", tmp_path / ".A01.tif.k2j_9xq0.part"]
    kept = [tmp_path / ".slip-a.tif.abcd1234.old", tmp_path / "A01.tif", tmp_path / "x.part"]
    kept += users
    for path in kept:
        path.write_bytes(b"keep")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(not p.exists() for p in stale) and all(p.read_bytes() == b"keep" for p in kept)


# --- batches -----------------------------------------------------------------------------


@pytest.fixture
def plate(tmp_path):
    """plate/A01.ome.tif and B01.ome.tif, and plate/A01.tif: a raw image, not an input."""
    image, _ = blobs_image()
    (tmp_path / "plate").mkdir()
    tifffile.imwrite(tmp_path / "plate" / "A01.ome.tif", image)
    tifffile.imwrite(tmp_path / "plate" / "B01.ome.tif", image[::-1].copy())
    tifffile.imwrite(tmp_path / "plate" / "A01.tif", image[:, ::-1].copy())
    return tmp_path


def _batch_options(tiny_sam_path, tiny_clip_path, fast_sam_params):
    return {
        "sam": str(tiny_sam_path),
        "clip": str(tiny_clip_path),
        "device": "cpu",
        "sam_params": fast_sam_params,
        "mode": "topk",
        "top_k": 1,
    }


def test_batch_refuses_to_replace_a_file_it_did_not_write(
    plate, tiny_sam_path, tiny_clip_path, fast_sam_params
):
    before = _tree(plate)
    options = _batch_options(tiny_sam_path, tiny_clip_path, fast_sam_params)
    with pytest.raises(InputError) as info:
        napari_slip.batch(str(plate / "plate" / "*.ome.tif"), plate / "plate", "a blob", **options)
    message = str(info.value)
    assert "1 file(s)" in message and "A01.tif" in message and "overwrite" in message
    assert _tree(plate) == before  # refused before any work: no records, no summary
    summary = napari_slip.batch(
        str(plate / "plate" / "*.ome.tif"), plate / "plate", "a blob", overwrite=True, **options
    )
    assert sorted(summary.done) == ["A01.ome.tif", "B01.ome.tif"]
    assert (plate / "plate" / "A01.tif").read_bytes() != before["plate/A01.tif"]


def test_batch_refuses_a_results_folder_of_another_tool_and_updates_its_own(
    plate, tiny_sam_path, tiny_clip_path, fast_sam_params, capsys
):
    results = plate / "results"
    results.mkdir()
    (results / "objects.csv").write_text("cell,area\n1,20\n")  # last week's, another tool
    before = _tree(plate)
    args = [
        "batch",
        str(plate / "plate" / "B01.ome.tif"),
        "-p",
        "a blob",
        "-o",
        str(results),
        "--sam",
        str(tiny_sam_path),
        "--clip",
        str(tiny_clip_path),
        "--device",
        "cpu",
        "--points-per-side",
        "4",
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0",
        "--mode",
        "topk",
        "--top-k",
        "1",
        "-q",
    ]
    assert main(args) == 2
    line = _error(capsys)
    assert "objects.csv" in line and "were not written by a napari-slip batch" in line
    assert _tree(plate) == before
    assert main([*args, "--overwrite"]) == 0
    capsys.readouterr()
    # Its own outputs: a rerun with other parameters updates them without --overwrite.
    assert main([*args[:-3], "--top-k", "2", "-q"]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert summary["done"] == 1 and summary["params"]["selection"]["top_k"] == 2


def test_batch_removes_the_temporaries_a_killed_run_left(
    plate, tiny_sam_path, tiny_clip_path, fast_sam_params
):
    out = plate / "out"
    (out / "sub").mkdir(parents=True)
    left = [out / ".slip-B01.tif.ab12cd34.part", out / "sub" / ".slip-x.tif.zz99yy88.part"]
    users = out / "sub" / ".notes.20241201.part"  # a user's file named alike: theirs
    for path in [*left, users]:
        path.write_bytes(b"half-written")
    options = _batch_options(tiny_sam_path, tiny_clip_path, fast_sam_params)
    summary = napari_slip.batch(str(plate / "plate" / "B01.ome.tif"), out, "a blob", **options)
    assert summary.done == ["B01.ome.tif"]
    assert not any(p.exists() for p in left)
    assert [p for p in out.rglob("*") if p.name.endswith(".part")] == [users]
    assert users.read_bytes() == b"half-written"


def test_a_name_too_long_for_its_record_fails_that_image_alone(
    tmp_path, tiny_sam_path, tiny_clip_path, fast_sam_params
):
    image, _ = blobs_image()
    (tmp_path / "in").mkdir()
    long_name = "w" * 248 + ".tif"  # its record, NAME.json, would be 257 bytes
    tifffile.imwrite(tmp_path / "in" / long_name, image)
    tifffile.imwrite(tmp_path / "in" / "ok.tif", image)
    options = _batch_options(tiny_sam_path, tiny_clip_path, fast_sam_params)
    summary = napari_slip.batch(tmp_path / "in", tmp_path / "out", "a blob", **options)
    assert summary.done == ["ok.tif"]
    assert list(summary.failed) == [long_name]
    assert "could not write its record" in summary.failed[long_name]
    assert not (tmp_path / "out" / long_name).exists()  # no labels without their record
    outcome = json.loads((tmp_path / "out" / "summary.json").read_text())["images"]
    assert {o["status"] for o in outcome} == {"done", "failed"}


@pytest.mark.parametrize(
    "inputs",
    [np.zeros((8, 8)), [np.zeros((8, 8))], [], [3]],
    ids=["array", "arrays", "none", "int"],
)
def test_batch_given_no_paths_says_what_it_takes(tmp_path, inputs):
    with pytest.raises(InputError, match="takes image files, folders and globs"):
        napari_slip.batch(inputs, tmp_path / "out", "a blob")
    assert not (tmp_path / "out").exists()


def test_batch_into_a_folder_under_a_file_is_one_line(plate, capsys):
    (plate / "notes.txt").write_text("notes")
    code = main(
        [
            "batch",
            str(plate / "plate" / "B01.ome.tif"),
            "-p",
            "x",
            "-o",
            str(plate / "notes.txt" / "labels"),
            "-q",
        ]
    )
    assert code == 2 and "notes.txt is a file, not a folder" in _error(capsys)
    assert (plate / "notes.txt").read_text() == "notes"


# --- one way to write a file -------------------------------------------------------------


def test_an_atomic_write_is_whole_or_absent(tmp_path):
    from napari_slip.core.runtime.atomic import atomic_write, atomic_write_text

    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "summary.json"
    ]


def test_two_concept_saves_at_once_do_not_collide(tmp_path):
    """Each writer stages under its own name (a fixed ``.NAME.partial`` made two saves
    of one concept overwrite each other's half-written file)."""
    import threading

    from napari_slip.core.concepts import Concept
    from napari_slip.core.concepts.features import MEASUREMENTS, ObjectFeatures

    def concept(seed):
        rng = np.random.default_rng(seed)
        c = Concept(["a"], texts=False)
        clip = rng.normal(size=(3, 8)).astype(np.float32)
        clip /= np.linalg.norm(clip, axis=1, keepdims=True)
        c.add(ObjectFeatures(rng.normal(size=(3, len(MEASUREMENTS))), clip), "a")
        return c

    path = tmp_path / "cells.concept"
    errors = []

    def save(seed):
        try:
            for _ in range(5):
                concept(seed).save(path)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Concept.load(path).classes == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.concept"]
