"""Every size is bounded before it is allocated, and a bad file is one line: SAM state
dicts with integer keys, empty tensors or absurd block numbers; decoder configs that
ask for gigabytes or hold the wrong types; decoders that do not fit the CLIP; training
data with a class no pixel belongs to; option values past their bounds; and the
command line's last line of defence for what escapes (MemoryError, a bug)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import tifffile
import torch

from napari_slip.cli import main
from napari_slip.core.errors import CheckpointError, InputError
from napari_slip.core.models import sam as sam_module
from napari_slip.core.models.decoder import (
    DECODER_KEY,
    DecoderConfig,
    TextDecoder,
    load_decoder,
    save_decoder,
)
from napari_slip.core.params import DecoderParams, GuidedParams, SamProposalParams, TileParams
from napari_slip.testing import write_tiny_sam
from napari_slip.testing.tiny import write_tiny_efficientvit_sam


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-slip: error:"), err
    return err[0]


@pytest.fixture
def sam_state(tmp_path):
    path = write_tiny_sam(tmp_path / "tiny.pth")
    return torch.load(path, weights_only=True)


def _save(state, path):
    torch.save(state, path)
    return path


# --- SAM files ---------------------------------------------------------------------------


def test_integer_keys_are_one_line(sam_state, tmp_path):
    path = _save({**sam_state, 7: torch.zeros(2)}, tmp_path / "ints.pth")
    with pytest.raises(CheckpointError, match="the key 7 is not a name"):
        sam_module.load_sam(path)


def test_an_empty_pos_embed_is_refused_before_anything_is_built(sam_state, tmp_path):
    state = {**sam_state, "image_encoder.pos_embed": torch.zeros(1, 0, 0, 32)}
    path = _save(state, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match=r"empty tensor 'image_encoder.pos_embed'"):
        sam_module.load_sam(path)


def test_a_block_numbered_250000_builds_nothing(tmp_path):
    path = write_tiny_efficientvit_sam(tmp_path / "evit.pth")
    state = torch.load(path, weights_only=True)
    key = next(k for k in state if ".neck.middle.op_list.0." in k)
    state[key.replace(".op_list.0.", ".op_list.250000.")] = state[key].clone()
    _save(state, tmp_path / "evil.pth")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="numbers a block 250000"):
        sam_module.load_sam(tmp_path / "evil.pth")
    assert time.monotonic() - start < 10


def test_an_architecture_far_larger_than_its_weights_is_refused(sam_state, tmp_path, monkeypatch):
    path = _save(sam_state, tmp_path / "tiny.pth")
    sam_module.load_sam(path)  # fits as it is
    monkeypatch.setattr(sam_module, "SIZE_FACTOR", 0.5)
    monkeypatch.setattr(sam_module, "SIZE_SLACK", 0)
    with pytest.raises(CheckpointError, match=r"architecture read from it has [\d,]+ parameters"):
        sam_module.load_sam(path)


def test_a_non_tensor_value_is_one_line(sam_state, tmp_path):
    path = _save({**sam_state, "image_encoder.pos_embed": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="is not a tensor of weights"):
        sam_module.load_sam(path)


# --- decoder files -----------------------------------------------------------------------

BASE = dict(taps=(0, 1), width=32, embed_dim=32, grid=4, clip_size=32, window=32, dim=16)


@pytest.fixture
def decoder_file(tmp_path):
    torch.manual_seed(0)
    return save_decoder(TextDecoder(DecoderConfig(**BASE)), tmp_path / "d.safetensors", {})


def _with_config(path, out, **changes):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    config = {**json.loads(meta[DECODER_KEY]), **changes}
    meta[DECODER_KEY] = json.dumps(config)
    save_file(state, str(out), metadata=meta)
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 10**9}, "width must be a whole number from 8 to 8192; got 1000000000"),
        ({"window": 10**6}, "window must be a whole number from 8 to 4096"),
        ({"heads": 0}, "heads must be a whole number from 1 to 64; got 0"),
        ({"dim": -8}, "dim must be a whole number from 8 to 1024; got -8"),
        ({"taps": "1,2"}, "taps must be a list of block indices; got '1,2'"),
        ({"taps": [0, 10**6]}, "taps must be 1 to 16 block indices from 0 to 256"),
        ({"grid": "4"}, "grid must be a whole number from 1 to 256; got '4'"),
        ({"upsample": True}, "upsample must be a whole number"),
        ({"colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_a_decoder_config_is_checked_field_by_field_before_building(
    decoder_file, tmp_path, changes, message
):
    bad = _with_config(decoder_file, tmp_path / "bad.safetensors", **changes)
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_decoder(bad)
    assert time.monotonic() - start < 10  # nothing gigantic was built


def test_a_decoder_that_does_not_fit_the_clip_is_refused_without_a_hash(
    decoder_file, tmp_path, tiny_clip_path
):
    from napari_slip.core.models.hub import ModelHub
    from napari_slip.core.pipeline.modelset import ModelSet

    bad = _with_config(decoder_file, tmp_path / "wide.safetensors", taps=[0, 5])
    models = ModelSet(ModelHub(), "/no/sam.pth", str(tiny_clip_path), "cpu", "fp32", bad)
    with pytest.raises(InputError, match=r"taps block 5, this CLIP has 1"):
        models.load("decoder")


def test_decoder_metadata_of_the_wrong_types_does_not_break_the_listing(
    decoder_file, tmp_path, capsys, monkeypatch, isolated_cache
):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from napari_slip.core.models.download import checkpoint_dir

    with safe_open(str(decoder_file), framework="pt") as fh:
        meta = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    meta.update(class_names="7", metrics=json.dumps([1, 2]), clip_spec=json.dumps(5))
    folder = checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "odd.safetensors"), metadata=meta)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "odd" in out and "a trained decoder" in out


# --- training data and option bounds -------------------------------------------------------


def _dataset(folder, labels, classes_csv):
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    tifffile.imwrite(folder / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(folder / "labels" / "a.tif", labels)
    (folder / "classes.csv").write_text(classes_csv)
    return folder


@pytest.mark.parametrize(
    ("labels", "classes", "message"),
    [
        (np.zeros((32, 32), np.uint16), "image,label,class\na.tif,1,cell\n", "belongs to 'cell'"),
        (
            np.pad(np.ones((8, 8), np.uint16), 12),
            "image,label,class\na.tif,1,cell\na.tif,9,ghost\n",
            "belongs to 'ghost'",
        ),
    ],
    ids=["all zeros", "an id that occurs nowhere"],
)
def test_train_decoder_refuses_a_class_no_pixel_belongs_to(
    tmp_path, tiny_clip_path, capsys, labels, classes, message
):
    data = _dataset(tmp_path / "data", labels, classes)
    out = tmp_path / "d.safetensors"
    code = main(
        [
            "train-decoder",
            str(data),
            "--clip",
            str(tiny_clip_path),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--epochs",
            "1",
            "-q",
        ]
    )
    assert code == 2 and message in _error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--window", "100000"], "window must be between 8 and 4096"),
        (["--template", "a photo of {} {x}"], "no other braces"),
        (["--dim", "100000"], "dim must be between 8 and 1024"),
    ],
)
def test_train_decoder_options_are_bounded(tmp_path, tiny_clip_path, capsys, flags, message):
    out = tmp_path / "d.safetensors"
    code = main(
        [
            "train-decoder",
            str(tmp_path),
            "--clip",
            str(tiny_clip_path),
            "-o",
            str(out),
            *flags,
            "-q",
        ]
    )
    assert code == 2 and message in _error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SamProposalParams(points_per_side=100000), "points_per_side must be between"),
        (lambda: GuidedParams(safety_grid=100000), "safety_grid must be between 0 and 256"),
        (lambda: GuidedParams(peaks=10**9), "peaks must be between 0 and 4096"),
        (lambda: TileParams(overlap=10**6), "overlap must be between 0 and 8192"),
        (lambda: DecoderParams(window=100000), "window must be between 8 and 4096"),
    ],
)
def test_option_bounds(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_a_relevance_window_past_its_bound_is_one_line(tiny_clip_path):
    from napari_slip.core.pipeline.segmenter import Segmenter

    seg = Segmenter("/no/sam.pth", str(tiny_clip_path), "cpu", disk_cache=False)
    with pytest.raises(InputError, match="relevance window must be 8 to 4096 pixels"):
        seg.relevance("cell", np.zeros((64, 64), np.uint8), window=100000)
    seg.relevance_window = 100000  # the attribute is bounded the same way
    with pytest.raises(InputError, match="got 100000"):
        seg.relevance("cell")
    seg.relevance_window = 32
    assert seg.relevance("cell").shape == (64, 64)
    assert seg.stats["relevance_windows"] > 1  # 32 px windows over a 64 px image


# --- what escapes: one line, the traceback in the log --------------------------------------


def test_memory_error_and_a_bug_are_one_line_with_the_traceback_logged(
    tmp_path, tiny_clip_path, capsys, monkeypatch, isolated_cache
):
    from napari_slip.cli import models as models_command

    def out_of_memory(_args):
        raise MemoryError

    monkeypatch.setattr(models_command, "run", out_of_memory)
    assert main(["models"]) == 2
    assert "out of memory" in _error(capsys)

    def bug(_args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(models_command, "run", bug)
    assert main(["models"]) == 3
    line = _error(capsys)
    assert "unexpected ZeroDivisionError: division by zero" in line and "please report" in line
    log = isolated_cache / "napari-slip.log"
    assert log.is_file() and "ZeroDivisionError" in log.read_text()
    assert str(log) in line


# --- the rest of the catalogue: CLIP configs, reports, decoders in batches -----------------


def _rewrite_metadata(path, out, key, change):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    meta[key] = json.dumps(change(json.loads(meta[key])))
    save_file(state, str(out), metadata=meta)
    return out


@pytest.mark.parametrize(
    ("tower", "name", "value"),
    [("vision_cfg", "width", -32), ("text_cfg", "layers", 0), ("vision_cfg", "patch_size", -8)],
)
def test_a_clip_config_with_a_negative_size_is_one_line(
    tiny_clip_path, tmp_path, tower, name, value
):
    from napari_slip.core.models.clip import CONFIG_KEY, load_clip_checkpoint

    def change(config):
        config[tower][name] = value
        return config

    bad = _rewrite_metadata(tiny_clip_path, tmp_path / "neg.safetensors", CONFIG_KEY, change)
    with pytest.raises(CheckpointError, match=rf"{tower}\.{name} must be a positive number"):
        load_clip_checkpoint(bad)


def test_evaluate_json_naming_a_folder_is_refused_before_any_work(
    tmp_path, tiny_clip_path, capsys
):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "keep.txt").write_text("mine")
    code = main(
        [
            "evaluate",
            str(tmp_path / "data"),
            "--clip",
            str(tiny_clip_path),
            "--json",
            str(tmp_path / "report"),
            "-q",
        ]
    )
    assert code == 2 and "--json" in _error(capsys)
    assert (tmp_path / "report" / "keep.txt").read_text() == "mine"


def test_a_batch_with_a_decoder_of_another_clip_stops_before_the_first_image(
    tmp_path, tiny_clip_path, decoder_fixture
):
    import napari_slip

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((64, 64), np.uint8))
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match=r"was trained on .* not on"):
        napari_slip.batch(
            [tmp_path / "a.tif", tmp_path / "b.tif"],
            tmp_path / "out",
            "cell",
            clip=str(tiny_clip_path),
            decoder=str(decoder_fixture.decoder),
            proposals="relevance",
            device="cpu",
        )
    assert not (tmp_path / "out").exists()


def test_rgb_label_images_for_train_decoder_are_one_line(tmp_path, tiny_clip_path, capsys):
    labels = np.zeros((32, 32, 3), np.uint8)
    labels[4:12, 4:12] = 1
    data = _dataset(tmp_path / "data", labels, "image,label,class\na.tif,1,cell\n")
    out = tmp_path / "d.safetensors"
    code = main(
        [
            "train-decoder",
            str(data),
            "--clip",
            str(tiny_clip_path),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--epochs",
            "1",
            "-q",
        ]
    )
    line = _error(capsys)
    assert code == 2 and ("2D label image" in line or "label image" in line), line
    assert not out.exists()
