"""Batches: inputs, resuming by parameter hash, bad inputs, a real Dask LocalCluster of
worker processes (including a worker that dies mid-image), and the command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import napari_slip
from napari_slip.cli import main
from napari_slip.core.batches import collect_inputs
from napari_slip.core.errors import InputError
from napari_slip.core.params import SamProposalParams
from napari_slip.testing.scenes import scenes
from napari_slip.testing.trained_sam import FIXTURE_AMG

#: The readable inputs of the ``folder`` fixture (``broken.tif`` is not).
GOOD_INPUTS = ["a.tif", "b.ome.tif", "row2/c.tif", "row2/d.png", "row2/e.zarr"]


@pytest.fixture
def folder(tmp_path):
    """A small plate: four scenes in two folders, one png, and a corrupt file."""
    images, _ = scenes(4, seed=7)
    (tmp_path / "in" / "row2").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "in" / "a.tif", images[0])
    tifffile.imwrite(tmp_path / "in" / "b.ome.tif", images[1])
    tifffile.imwrite(tmp_path / "in" / "row2" / "c.tif", images[2])
    from PIL import Image

    Image.fromarray(images[3]).save(tmp_path / "in" / "row2" / "d.png")
    import zarr

    z = zarr.open_array(
        str(tmp_path / "in" / "row2" / "e.zarr"),
        mode="w",
        shape=(256, 256, 3),
        chunks=(128, 128, 3),
        dtype="uint8",
    )
    z[:] = scenes(5, seed=7)[0][4]
    (tmp_path / "in" / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    return tmp_path


#: The readable inputs of the ``folder`` fixture (``broken.tif`` is not).
GOOD_INPUTS = ["a.tif", "b.ome.tif", "row2/c.tif", "row2/d.png", "row2/e.zarr"]


def _options(sam, clip):
    return {
        "sam": str(sam),
        "clip": str(clip),
        "device": "cpu",
        "sam_params": SamProposalParams(**FIXTURE_AMG),
        "mode": "topk",
        "top_k": 2,
        "precision": "fp32",
    }


def test_collect_inputs_names_and_refusals(folder):
    items = collect_inputs([folder / "in"], exclude=folder / "out")
    assert [i.name for i in items] == [
        "a.tif",
        "b.ome.tif",
        "broken.tif",
        "row2/c.tif",
        "row2/d.png",
        "row2/e.zarr",
    ]
    assert [i.labels_name for i in items][1] == "b.tif"
    assert [i.name for i in collect_inputs([str(folder / "in" / "*.tif")])] == [
        "a.tif",
        "b.ome.tif",
        "broken.tif",
    ]
    with pytest.raises(InputError, match="matches no image"):
        collect_inputs([str(folder / "nothing*.tif")])
    tifffile.imwrite(folder / "a.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(InputError, match=r"would both write a\.tif"):
        collect_inputs([folder / "a.tif", folder / "in" / "a.tif"])


def test_batch_in_process_resumes_and_reports_bad_inputs(folder, trained_sam_path, tiny_clip_path):
    out = folder / "out"
    events = []
    summary = napari_slip.batch(
        folder / "in",
        out,
        "object",
        workers=1,
        progress=events.append,
        **_options(trained_sam_path, tiny_clip_path),
    )
    assert sorted(summary.done) == GOOD_INPUTS
    assert list(summary.failed) == ["broken.tif"]
    assert "holds no image data" in summary.failed["broken.tif"]
    assert events[-1].done == events[-1].total == 6
    # Progress inside each image, not only between images: its stages, named after it.
    inner = [e for e in events if e.stage != "batch"]
    assert {"proposals", "scoring"} <= {e.stage for e in inner}
    assert any(e.message.startswith("image 1/6 ") for e in inner)
    for name in ("a.tif", "b.tif", "row2/c.tif", "row2/d.tif", "row2/e.tif"):
        labels = tifffile.imread(out / name)
        assert labels.shape == (256, 256) and 1 <= labels.max() <= 2
    objects = pd.read_csv(out / "objects.csv")
    assert set(objects["image"]) == {
        "a.tif",
        "b.ome.tif",
        "row2/c.tif",
        "row2/d.png",
        "row2/e.zarr",
    }
    assert (objects.groupby("image")["id"].max() <= 2).all()
    info = json.loads((out / "summary.json").read_text())
    assert info["done"] == 5 and info["failed"] == 1
    bad = next(i for i in info["images"] if i["input"].endswith("broken.tif"))
    assert bad["status"] == "failed" and "holds no image data" in bad["error"]

    # Resume: done inputs are skipped (their files untouched), the failed one retried.
    stamp = (out / "a.tif").stat().st_mtime_ns
    again = napari_slip.batch(
        folder / "in", out, "object", workers=1, **_options(trained_sam_path, tiny_clip_path)
    )
    assert len(again.skipped) == 5 and list(again.failed) == ["broken.tif"] and not again.done
    assert (out / "a.tif").stat().st_mtime_ns == stamp
    # Interrupted (labels claimed, never finished) and stale (other parameters) are
    # redone; labels with no record at all are not ours: replaced only with overwrite.
    record = out / ".napari-slip" / "row2" / "c.tif.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "status": "writing"}))
    redo = napari_slip.batch(
        folder / "in", out, "object", workers=1, **_options(trained_sam_path, tiny_clip_path)
    )
    assert redo.done == ["row2/c.tif"]
    record.unlink()
    with pytest.raises(InputError, match=r"not written by a napari-slip batch.*c\.tif"):
        napari_slip.batch(
            folder / "in", out, "object", workers=1, **_options(trained_sam_path, tiny_clip_path)
        )
    redo = napari_slip.batch(
        folder / "in",
        out,
        "object",
        workers=1,
        overwrite=True,
        **_options(trained_sam_path, tiny_clip_path),
    )
    assert redo.done == ["row2/c.tif"]
    options = {**_options(trained_sam_path, tiny_clip_path), "top_k": 1}
    stale = napari_slip.batch(folder / "in", out, "object", workers=1, **options)
    assert len(stale.done) == 5 and tifffile.imread(out / "a.tif").max() == 1
    assert not [p for p in out.rglob(".*.part")]


def test_output_folder_inside_the_inputs_is_not_read_back(
    folder, trained_sam_path, tiny_clip_path
):
    out = folder / "in" / "results"
    napari_slip.batch(
        folder / "in" / "row2",
        out,
        "object",
        workers=1,
        **_options(trained_sam_path, tiny_clip_path),
    )
    again = napari_slip.batch(
        folder / "in" / "row2",
        out,
        "object",
        workers=1,
        **_options(trained_sam_path, tiny_clip_path),
    )
    assert again.n_inputs == 3 and len(again.skipped) == 3


def crash_once_reader(path):
    """Reads an image; the first time it meets c.tif it kills its worker process."""
    marker = Path(path).parent / ".crashed"
    if Path(path).name == "c.tif" and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)  # a worker dying mid-image, as an out-of-memory kill would
    from napari_slip.core.io import open_image

    return open_image(path)


def test_batch_on_a_local_cluster_of_two_worker_processes(
    folder, trained_sam_path, tiny_clip_path
):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    out = folder / "out"
    summary = napari_slip.batch(
        folder / "in",
        out,
        "object",
        workers=2,
        reader=crash_once_reader,
        **_options(trained_sam_path, tiny_clip_path),
    )
    assert summary.workers == 2
    assert sorted(summary.done) == GOOD_INPUTS
    assert list(summary.failed) == ["broken.tif"]
    # c.tif's worker died once; the scheduler gave it to a worker again.
    crashed_pid = int((folder / "in" / "row2" / ".crashed").read_text())
    record = json.loads((out / ".napari-slip" / "row2" / "c.tif.json").read_text())
    assert record["status"] == "done" and crashed_pid != os.getpid()
    # Each worker process loaded its models once, whatever the number of its images.
    records = [json.loads(p.read_text()) for p in (out / ".napari-slip").rglob("*.json")]
    done = [r for r in records if r["status"] == "done"]
    assert all(r["worker"]["model_loads"] == {"sam": 1, "clip": 1} for r in done), done
    assert len({r["worker"]["pid"] for r in done}) < len(done)  # a worker did several
    assert tifffile.imread(out / "row2" / "c.tif").max() >= 1
    assert not [p for p in out.rglob("*.part")]
    objects = pd.read_csv(out / "objects.csv")
    assert (objects["image"] == "row2/c.tif").sum() == tifffile.imread(out / "row2/c.tif").max()
    # The same answers as in one process (models are the same, so are the labels).
    one = napari_slip.batch(
        folder / "in",
        folder / "one",
        "object",
        workers=1,
        **_options(trained_sam_path, tiny_clip_path),
    )
    assert one.params == summary.params
    for name in ("a.tif", "b.tif", "row2/c.tif", "row2/d.tif", "row2/e.tif"):
        assert np.array_equal(tifffile.imread(out / name), tifffile.imread(folder / "one" / name))


def test_cli_batch_resumes_and_exits_1_when_an_input_failed(
    folder, trained_sam_path, tiny_clip_path, capsys
):
    args = [
        "batch",
        str(folder / "in" / "row2"),
        str(folder / "in" / "broken.tif"),
        "-p",
        "object",
        "-o",
        str(folder / "out"),
        "--sam",
        str(trained_sam_path),
        "--clip",
        str(tiny_clip_path),
        "--device",
        "cpu",
        "--workers",
        "1",
        "--mode",
        "topk",
        *[f"--{k.replace('_', '-')}={v}" for k, v in FIXTURE_AMG.items()],
    ]
    assert main(args) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith("napari-slip: broken.tif: ")
    assert err[-2].endswith("holds no image data (a damaged or empty file?).")
    assert "4 images: 3 segmented, 1 failed" in err[-1]
    assert main(args[:2] + args[3:]) == 0  # without the broken file: all skipped
    assert "3 images: 0 segmented, 3 already done (skipped)." in capsys.readouterr().err
    assert main(["batch", str(folder / "in"), "-p", "x", "-o", str(folder / "in" / "a.tif")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_batch_with_a_decoder_and_prompt_guided_proposals(tmp_path, decoder_fixture, held_out):
    """Folder runs take the decoder and the guided modes; relevance regions need no
    SAM; the decoder joins the parameter hash, so changing it redoes the images."""
    from napari_slip.core.batches import make_config

    (tmp_path / "in").mkdir()
    for item in held_out[:2]:
        tifffile.imwrite(tmp_path / "in" / f"{item.name}.tif", item.image)
    name = sorted(held_out[0].classes.values())[0]
    options = dict(
        sam="/no/such/sam.pth",
        clip=str(decoder_fixture.clip),
        proposals="relevance",
        decoder=decoder_fixture.decoder,
        mode="threshold",
        threshold=-1.0,
        rgb=True,
    )
    summary = napari_slip.batch(tmp_path / "in", tmp_path / "out", name, **options)
    assert sorted(summary.done) == sorted(f"{i.name}.tif" for i in held_out[:2])
    labels = tifffile.imread(tmp_path / "out" / f"{held_out[0].name}.tif")
    assert labels.max() >= 1
    with_decoder = make_config(name, **options)
    without = make_config(name, **{**options, "decoder": None})
    assert with_decoder.digest() != without.digest()
    assert with_decoder.describe()["decoder"].startswith("sha256:")
    with pytest.raises(InputError, match="proposals are sam, relevance or guided"):
        make_config(name, **{**options, "proposals": "labels"})


def test_a_batch_is_its_run_plus_its_own_fields_and_old_digests_hold():
    """BatchConfig holds the RunConfig whole (no mirror of its fields); the hash that
    names a batch's outputs is the one batches recorded before (values computed by
    the field-by-field BatchConfig before it held the run), so finished images resume."""
    from napari_slip.core.batches import make_config
    from napari_slip.core.config import RunConfig
    from napari_slip.core.params import StackParams

    named = {"sam": "vit_b", "clip": "ViT-B-32:laion2b_s34b_b79k"}
    plain = make_config("nucleus", mode="threshold", threshold=0.2, distractors="dust", **named)
    assert isinstance(plain.run, RunConfig) and plain.run.selection.threshold == 0.2
    assert plain.digest() == "fb7cf355cdd5ab08"
    stack = make_config(
        "nucleus",
        axes="ZYX",
        pixel_size={"Z": 2.0, "Y": 0.5, "X": 0.5},
        link=False,
        tiles="on",
        **named,
    )
    assert stack.digest() == "f7b16adb5c048c79"
    # Any option of the run changes the hash, without a line in BatchConfig.
    deeper = make_config("nucleus", stack_params=StackParams(max_gap=2), **named)
    assert deeper.digest() != make_config("nucleus", **named).digest()
    assert deeper.describe()["stack_params"]["max_gap"] == 2
    # A field added since (``option(new=True)``) is recorded only when set.
    from napari_slip.core.params import SamProposalParams

    assert "max_area_share" not in plain.describe()["sam_params"]
    capped = make_config("nucleus", sam_params=SamProposalParams(max_area_share=0.5), **named)
    assert capped.describe()["sam_params"]["max_area_share"] == 0.5
    assert capped.digest() != make_config("nucleus", **named).digest()
