"""Outputs lose nothing: inputs are never written over, existing files only with
--overwrite, problems are found before any model work, and the files of one run appear
together or not at all (no temporaries left, a true message)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_slip.cli import main
from napari_slip.core.errors import InputError
from napari_slip.core.io import Outputs
from napari_slip.testing import blobs_image


@pytest.fixture
def files(tmp_path):
    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    return tmp_path


def _segment(files, tiny_clip_path, *extra):
    return main(
        [
            "segment",
            str(files / "img.tif"),
            "-p",
            "cell",
            "--proposals-from",
            str(files / "labels.tif"),
            "--clip",
            str(tiny_clip_path),
            "-q",
            *extra,
        ]
    )


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-slip: error:"), err
    return err[0]


@pytest.mark.parametrize(
    ("output", "match"),
    [
        ("img.tif", "--output .*img.tif is also an input"),
        ("labels.tif", "--output .*labels.tif is also an input"),
    ],
)
def test_inputs_are_never_written_over(files, tiny_clip_path, capsys, output, match):
    before = _snapshot(files)
    assert _segment(files, tiny_clip_path, "-o", str(files / output), "--overwrite") == 2
    import re

    assert re.search(match, _error(capsys))
    assert _snapshot(files) == before


def test_an_existing_output_needs_overwrite(files, tiny_clip_path, capsys):
    (files / "out.tif").write_bytes(b"my precious labels")
    assert _segment(files, tiny_clip_path, "-o", str(files / "out.tif")) == 2
    assert "exists already; pass --overwrite" in _error(capsys)
    assert (files / "out.tif").read_bytes() == b"my precious labels"
    assert _segment(files, tiny_clip_path, "-o", str(files / "out.tif"), "--overwrite") == 0
    assert tifffile.imread(files / "out.tif").max() >= 1


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["-o", "{d}/folder.tif"], "--output .*folder.tif is a folder; give a file name"),
        (["-o", "{d}/img.tif/x.tif"], "img.tif is a file, not a folder"),
        (["-o", "{d}/a.tif", "--table", "{d}/a.tif"], "are the same file"),
        (["-o", "{d}/a.tif", "--table", "{d}"], "--table .* is a folder"),
    ],
)
def test_unwritable_outputs_are_refused_before_any_work(
    files, tiny_clip_path, capsys, extra, match
):
    import re

    (files / "folder.tif").mkdir()
    # A SAM that does not exist: reaching any model work would fail differently.
    args = [a.format(d=files) for a in extra]
    code = main(["segment", str(files / "missing.tif"), "-p", "x", "--sam", "/no/such.pth", *args])
    assert code == 2
    assert re.search(match, _error(capsys))  # the output, not the missing image


def test_a_failure_while_writing_leaves_nothing_and_says_so(
    files, tiny_clip_path, capsys, monkeypatch
):
    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    before = _snapshot(files)
    code = _segment(
        files, tiny_clip_path, "-o", str(files / "o.tif"), "--table", str(files / "o.csv")
    )
    assert code == 2
    line = _error(capsys)
    assert "No space left on device" in line and "nothing was written" in line
    assert _snapshot(files) == before  # no labels without their table, no temporaries


def test_ctrl_c_while_writing_leaves_nothing(files, tiny_clip_path, capsys, monkeypatch):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    before = _snapshot(files)
    code = _segment(
        files, tiny_clip_path, "-o", str(files / "o.tif"), "--table", str(files / "o.csv")
    )
    assert code == 130
    assert "interrupted; nothing was written" in capsys.readouterr().err
    assert _snapshot(files) == before


def test_finetune_never_replaces_its_base_or_an_existing_checkpoint(
    tiny_clip_path, tmp_path, capsys
):
    before = tiny_clip_path.read_bytes()
    code = main(
        ["finetune", str(tmp_path), "--base", str(tiny_clip_path), "-o", str(tiny_clip_path)]
    )
    assert code == 2 and "is also an input" in _error(capsys)
    assert tiny_clip_path.read_bytes() == before
    (tmp_path / "old.safetensors").write_bytes(b"an earlier model")
    code = main(
        [
            "finetune",
            str(tmp_path / "data"),
            "--base",
            str(tiny_clip_path),
            "-o",
            str(tmp_path / "old.safetensors"),
        ]
    )
    assert code == 2 and "exists already" in _error(capsys)
    assert (tmp_path / "old.safetensors").read_bytes() == b"an earlier model"


def test_outputs_write_all_or_nothing(tmp_path):
    outputs = Outputs({"a": tmp_path / "a.txt", "b": tmp_path / "sub" / "b.txt"})
    outputs.check()
    written = outputs.write({"a": lambda p: p.write_text("A"), "b": lambda p: p.write_text("B")})
    assert [p.read_text() for p in written] == ["A", "B"]

    def fails(p):
        raise OSError(5, "Input/output error")

    again = Outputs({"c": tmp_path / "c.txt", "d": tmp_path / "d.txt"})
    with pytest.raises(InputError, match=r"Input/output error.*nothing was written"):
        again.write({"c": lambda p: p.write_text("C"), "d": fails})
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.txt"]
