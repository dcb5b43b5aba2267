"""A catalogue of bad and hostile inputs: each gets one clear line naming the input and
the fix (an ``InputError``/``CheckpointError`` in Python, exit status 2 on the command
line), and no file is created or changed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile
import torch

import napari_slip
from napari_slip.cli import main
from napari_slip.core.errors import CheckpointError, InputError, SlipError
from napari_slip.core.models.hub import ModelHub
from napari_slip.core.params import CropParams, SamProposalParams, SelectionParams
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.testing import TINY_CLIP, blobs_image

IMAGE, LABELS = blobs_image()


@pytest.fixture
def seg(tiny_sam_path, tiny_clip_path):
    return Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", hub=ModelHub())


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text
    return text


# --- the Python API: (call, expected error, message pattern) ----------------------------

BIG_ID = np.zeros((96, 96), np.int64)
BIG_ID[10:20, 10:20] = 2**31 - 1

API_CASES = {
    "empty prompt": (lambda s: s.segment(IMAGE, "  ", labels=LABELS), "prompt is empty"),
    "prompt not text": (lambda s: s.segment(IMAGE, 3, labels=LABELS), "prompt is empty"),
    "unknown mode": (lambda s: s.segment(IMAGE, "x", mode="all"), "Unknown selection mode"),
    "threshold 5": (lambda s: s.segment(IMAGE, "x", threshold=5), r"between -1 and 1"),
    "threshold -5": (lambda s: s.segment(IMAGE, "x", threshold=-5), r"between -1 and 1"),
    "threshold nan": (
        lambda s: s.segment(IMAGE, "x", threshold=float("nan")),
        r"between -1 and 1",
    ),
    "threshold text": (lambda s: s.segment(IMAGE, "x", threshold="high"), "must be a number"),
    "top_k -1": (lambda s: s.segment(IMAGE, "x", mode="topk", top_k=-1), "top_k must"),
    "top_k 0": (lambda s: s.segment(IMAGE, "x", top_k=0), "top_k must"),
    "top_k float": (lambda s: s.segment(IMAGE, "x", top_k=2.5), "top_k must"),
    "distractor is the prompt": (
        lambda s: s.segment(
            IMAGE, "cell", labels=LABELS, mode="distractors", distractors="Cell, dust"
        ),
        "is the prompt itself",
    ),
    "unknown option": (lambda s: s.segment(IMAGE, "x", proposal=LABELS), "unknown option"),
    "proposals=": (lambda s: s.segment(IMAGE, "x", proposals=LABELS), r"labels=\.\.\."),
    "inverted limits": (
        lambda s: s.segment(IMAGE, "x", labels=LABELS, contrast_limits=(4000, 10)),
        "low < high",
    ),
    "nan limits": (
        lambda s: s.segment(IMAGE, "x", labels=LABELS, contrast_limits=(np.nan, 10)),
        "finite",
    ),
    "limits shape": (
        lambda s: s.segment(IMAGE, "x", labels=LABELS, contrast_limits=(1, 2, 3)),
        "contrast_limits must be",
    ),
    "bad percentiles": (
        lambda s: s.segment(IMAGE, "x", labels=LABELS, percentiles=(90, 10)),
        "percentiles",
    ),
    "channel axis out of range": (
        lambda s: s.segment(np.stack([IMAGE] * 3), "x", channel_axis=5),
        "channel_axis=5 does not exist",
    ),
    "channel axis text": (
        lambda s: s.segment(np.stack([IMAGE] * 3), "x", channel_axis="c"),
        "axis number",
    ),
    "channel missing": (
        lambda s: s.segment(np.stack([IMAGE] * 3), "x", channel_axis=0, channels=[0, 7]),
        "Channel 7 does not exist",
    ),
    "4 channels as RGB": (
        lambda s: s.segment(np.stack([IMAGE] * 4), "x", channel_axis=0, channels=[0, 1, 2, 3]),
        "one to three channels",
    ),
    "3D without channel axis": (
        lambda s: s.segment(np.stack([IMAGE] * 5), "x"),
        r"shape \(5, 96, 96\)",
    ),
    "empty image": (lambda s: s.segment(np.zeros((0, 0)), "x"), "empty"),
    "string image": (lambda s: s.segment(np.array([["a"]]), "x"), "numeric"),
    "1-pixel image": (lambda s: s.segment(np.zeros((1, 50)), "x"), "too small"),
    "labels wrong shape": (
        lambda s: s.segment(IMAGE, "x", labels=LABELS[:50]),
        r"shape \(50, 96\) but the image is \(96, 96\)",
    ),
    "negative labels": (lambda s: s.segment(IMAGE, "x", labels=-LABELS), "negative"),
    "fractional labels": (
        lambda s: s.segment(IMAGE, "x", labels=LABELS + 0.5),
        "must be integers",
    ),
    "labels and source": (
        lambda s: s.segment(
            IMAGE, "x", labels=LABELS, source=napari_slip.core.LabelSource(LABELS)
        ),
        "either labels or a proposal source",
    ),
    "source not a source": (lambda s: s.segment(IMAGE, "x", source=3), "proposal source"),
    "template without slot": (
        lambda s: setattr(s, "templates", ["a photo"]),
        "exactly once",
    ),
    "template extra field": (
        lambda s: setattr(s, "templates", ["a {} of {kind}"]),
        "no other braces",
    ),
    "no image": (lambda s: s.segment(None, "x"), "No image given"),
    "normalisation without image": (
        lambda s: s.segment(None, "x", contrast_limits=(0, 1)),
        "need the image",
    ),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_python_api_bad_input(seg, name):
    call, pattern = API_CASES[name]
    with pytest.raises(InputError) as info:
        call(seg)
    assert re.search(pattern, _one_line(info.value)), str(info.value)


def test_a_sparse_huge_label_id_is_one_object_not_an_out_of_memory(seg):
    result = seg.segment(IMAGE, "x", labels=BIG_ID, mode="topk", top_k=5)
    assert result.n_objects == 1 and result.table["source_id"].tolist() == [2**31 - 1]
    assert result.table["area"].tolist() == [100]


PARAM_CASES = {
    "points_per_side 0": (lambda: SamProposalParams(points_per_side=0), "points_per_side"),
    "iou 2": (lambda: SamProposalParams(pred_iou_thresh=2), "pred_iou_thresh"),
    "stability -1": (lambda: SamProposalParams(stability_score_thresh=-1), "stability"),
    "nms text": (lambda: SamProposalParams(box_nms_thresh="a"), "box_nms_thresh"),
    "max_side 10": (lambda: SamProposalParams(max_side=10), "max_side"),
    "min_area -3": (lambda: SamProposalParams(min_area=-3), "min_area"),
    "batch 0": (lambda: SamProposalParams(points_per_batch=0), "points_per_batch"),
    "fill purple": (lambda: CropParams(fill="purple"), "Unknown fill 'purple'"),
    "fill 300": (lambda: CropParams(fill=(300, 0, 0)), "three values 0-255"),
    "margin 5": (lambda: CropParams(margin=5), "margin"),
    "background number": (lambda: SelectionParams(background=3), "background"),
    "distractors numbers": (lambda: SelectionParams(distractors=[1, 2]), "Phrases must be"),
    "device tpu": (
        lambda: Segmenter("a.pth", "b.safetensors", "tpu"),
        "Unknown device 'tpu'",
    ),
    "precision int4": (
        lambda: Segmenter("a.pth", "b.safetensors", "cpu", precision="int4"),
        "precision must be one of",
    ),
    "batch_size 0": (
        lambda: Segmenter("a.pth", "b.safetensors", "cpu", batch_size=0),
        "batch_size",
    ),
}


@pytest.mark.parametrize("name", sorted(PARAM_CASES))
def test_bad_parameters_are_refused_when_made(name):
    make, pattern = PARAM_CASES[name]
    with pytest.raises(InputError, match=pattern) as info:
        make()
    _one_line(info.value)


# --- hostile or broken model files ---------------------------------------------------------


def _sam_variant(tiny_sam_path, tmp_path, name, change):
    state = torch.load(tiny_sam_path, weights_only=True)
    change(state)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path


SAM_FILE_CASES = {
    "wrong rank": (
        lambda s: s.__setitem__("image_encoder.patch_embed.proj.weight", torch.zeros(3)),
        "consistent SAM weights",
    ),
    "wrong shape": (
        lambda s: s.__setitem__("mask_decoder.iou_token.weight", torch.zeros(5, 7)),
        "size mismatch",
    ),
    "not a tensor": (
        lambda s: s.__setitem__("image_encoder.pos_embed", [1, 2]),
        "is not a tensor",
    ),
    "missing weight": (
        lambda s: s.pop("image_encoder.neck.0.weight"),
        "not a Segment Anything checkpoint",
    ),
    "no relative positions": (
        lambda s: [s.pop(k) for k in list(s) if "rel_pos" in k],
        "no relative position weights",
    ),
    "extra key": (
        lambda s: s.__setitem__("image_encoder.extra.weight", torch.zeros(2)),
        "does not fit",
    ),
}


@pytest.mark.parametrize("name", sorted(SAM_FILE_CASES))
def test_malformed_sam_files_give_one_line(tiny_sam_path, tiny_clip_path, tmp_path, name):
    change, pattern = SAM_FILE_CASES[name]
    path = _sam_variant(tiny_sam_path, tmp_path, name.replace(" ", "_"), change)
    seg = Segmenter(str(path), str(tiny_clip_path), "cpu", hub=ModelHub())
    with pytest.raises(CheckpointError, match=pattern) as info:
        seg.segment(IMAGE, "x")
    _one_line(info.value)


def test_garbage_and_empty_sam_files(tiny_clip_path, tmp_path):
    for name, content in (("garbage.pth", b"not a checkpoint"), ("empty.pth", b"")):
        (tmp_path / name).write_bytes(content)
        seg = Segmenter(str(tmp_path / name), str(tiny_clip_path), "cpu", hub=ModelHub())
        with pytest.raises(CheckpointError, match="Could not read") as info:
            seg.segment(IMAGE, "x")
        _one_line(info.value)


def _clip_file(tmp_path, name, config, metadata=None, tensors=None):
    from safetensors.torch import save_file

    meta = {"open_clip_config": config if isinstance(config, str) else json.dumps(config)}
    meta.update(metadata or {})
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata=meta)
    return path


HUGE = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 1000, "width": 100000, "patch_size": 16},
    "text_cfg": {"width": 100000, "layers": 1000},
}
CLIP_FILE_CASES = {
    "billions of parameters": (HUGE, None, "billion parameters; refusing"),
    "config not json": ("{not json", None, "open_clip"),
    "config a list": ([1, 2], None, "not an open_clip model config|not a mapping"),
    "vision_cfg a string": ({"vision_cfg": "big"}, None, "not a mapping"),
    "missing text config": (
        {"embed_dim": 32, "vision_cfg": TINY_CLIP["vision_cfg"]},
        None,
        "does not describe an open_clip model|do not fit",
    ),
    "weights do not fit": (TINY_CLIP, None, "do not fit its open_clip_config"),
    "mean of two numbers": (
        TINY_CLIP,
        {"preprocess_cfg": json.dumps({"mean": [0.5, 0.5]})},
        "three finite numbers",
    ),
    "zero std": (
        TINY_CLIP,
        {"preprocess_cfg": json.dumps({"std": [0, 1, 1]})},
        "above 0",
    ),
    "preprocess a string": (TINY_CLIP, {"preprocess_cfg": '"fast"'}, "not a mapping"),
}


@pytest.mark.parametrize("name", sorted(CLIP_FILE_CASES))
def test_malformed_clip_files_give_one_line(tmp_path, name):
    config, metadata, pattern = CLIP_FILE_CASES[name]
    tensors = None
    if metadata is not None:  # a working model with broken preprocessing values
        from napari_slip.core.models.clip import build_clip

        tensors = {k: v.contiguous() for k, v in build_clip(TINY_CLIP).state_dict().items()}
    path = _clip_file(tmp_path, name.replace(" ", "_"), config, metadata, tensors)
    seg = Segmenter("/none.pth", str(path), "cpu", hub=ModelHub())
    with pytest.raises(CheckpointError, match=pattern) as info:
        seg.segment(IMAGE, "x", labels=LABELS)
    _one_line(info.value)


def test_a_clip_file_that_is_not_ours(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    seg = Segmenter("/none.pth", str(tmp_path / "other.safetensors"), "cpu", hub=ModelHub())
    with pytest.raises(CheckpointError, match="not a napari-slip CLIP checkpoint"):
        seg.segment(IMAGE, "x", labels=LABELS)


def test_a_truncated_cached_model_is_called_incomplete(
    isolated_cache, monkeypatch, tiny_clip_path
):
    from napari_slip.core.models import registry

    entry = registry.SamWeights(
        "vit_b", "http://127.0.0.1:9/sam_vit_b_01ec64.pth", "1" * 64, 1, ""
    )
    monkeypatch.setitem(registry.SAM_MODELS, "vit_b", entry)
    cached = isolated_cache / "sam" / "sam_vit_b_01ec64.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a file")
    seg = Segmenter("vit_b", str(tiny_clip_path), "cpu", hub=ModelHub())
    with pytest.raises(SlipError, match="incomplete or corrupt") as info:
        seg.segment(IMAGE, "x")
    assert str(cached) in _one_line(info.value) and "put it at" not in str(info.value)
    assert cached.read_bytes() == b"half a file"  # left for the user to decide


@pytest.mark.parametrize("content", ["[1, 2]", "{broken", '{"a": 5}', ""])
def test_a_corrupt_hash_memo_is_ignored(tiny_sam_path, isolated_cache, content):
    from napari_slip.core.models.download import file_sha256, sha256_of

    (isolated_cache / "hashes.json").write_text(content)
    assert file_sha256(tiny_sam_path) == sha256_of(tiny_sam_path)


def test_a_cache_folder_that_is_a_file_does_not_stop_local_models(
    tiny_sam_path, tiny_clip_path, tmp_path, monkeypatch, fast_sam_params
):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    monkeypatch.setenv("NAPARI_SLIP_CACHE", str(blocker))
    seg = Segmenter(
        str(tiny_sam_path), str(tiny_clip_path), "cpu", hub=ModelHub(), sam_params=fast_sam_params
    )
    result = seg.segment(IMAGE, "cell", mode="topk", top_k=1)
    assert result.labels.shape == IMAGE.shape and blocker.read_text() == "x"


# --- the command line -------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", IMAGE)
    tifffile.imwrite(tmp_path / "labels.tif", LABELS.astype(np.uint16))
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([IMAGE] * 3), photometric="minisblack")
    # Three planes as tifffile stores them by default (its axes "SYX": planar RGB).
    planar = {"photometric": "rgb", "planarconfig": "separate"}
    tifffile.imwrite(tmp_path / "planar.tif", np.stack([IMAGE] * 3), **planar)
    tifffile.imwrite(tmp_path / "line.tif", IMAGE[0])
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


CLI_CASES = {
    "1-D image": (["segment", "{d}/line.tif", "-p", "x", "-o", "{d}/o.tif"], r"shape \(96,\)"),
    "plain 3-plane tiff": (
        ["segment", "{d}/planar.tif", "-p", "x", "-o", "{d}/o.tif"],
        r"shape \(3, .*say what its axes are",
    ),
    "prompt names a missing concept file": (
        ["segment", "{d}/img.tif", "-p", "{d}/cells.concept", "-o", "{d}/o.tif"],
        "names a concept file, but there is no file",
    ),
    "batch workers 0": (
        ["batch", "{d}/img.tif", "-p", "x", "-o", "{d}/out", "--workers", "0"],
        "at least 1",
    ),
    "batch output is the input folder": (
        ["batch", "{d}", "-p", "x", "-o", "{d}"],
        "output folder is the input folder",
    ),
    "batch input inside the output": (
        ["batch", "{d}", "-p", "x", "-o", "{d}/.."],
        "lies inside the output folder",
    ),
    "missing image": (["segment", "{d}/nope.tif", "-p", "x", "-o", "{d}/o.tif"], "does not exist"),
    "text file as image": (
        ["segment", "{d}/notes.txt", "-p", "x", "-o", "{d}/o.tif"],
        "Unsupported image type",
    ),
    "output jpg": (["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.jpg"], "must end in"),
    "no prompt": (["segment", "{d}/img.tif", "-o", "{d}/o.tif"], "--prompt"),
    "empty prompt": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            " ",
            "-o",
            "{d}/o.tif",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "prompt is empty",
    ),
    "bad mode": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--mode", "all"],
        "mode",
    ),
    "threshold text": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--threshold", "high"],
        "--threshold",
    ),
    "threshold 5": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--threshold",
            "5",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "between -1 and 1",
    ),
    "top-k -2": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--top-k",
            "-2",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "top_k must",
    ),
    "bad device": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--device", "tpu"],
        "--device",
    ),
    "bad precision": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--precision", "int4"],
        "--precision",
    ),
    "bad channels": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--channels", "a,b"],
        "channels must be",
    ),
    "bad limits": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--contrast-limits", "1"],
        "LOW,HIGH",
    ),
    "inverted limits": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--contrast-limits",
            "9,1",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "low < high",
    ),
    "channel axis 9": (
        [
            "segment",
            "{d}/stack.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--channel-axis",
            "9",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "channel_axis=9 does not exist",
    ),
    "stack without channel axis": (
        ["segment", "{d}/stack.tif", "-p", "x", "-o", "{d}/o.tif"],
        r"shape \(3, 96, 96\)",
    ),
    "fill purple": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--fill", "purple"],
        "Unknown fill 'purple'",
    ),
    "points per side 0": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--points-per-side", "0"],
        "points_per_side",
    ),
    "iou 3": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--pred-iou-thresh", "3"],
        "pred_iou_thresh",
    ),
    "unknown sam": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--sam", "vit_z"],
        "neither a known name",
    ),
    "unknown clip": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--clip",
            "NoSuchModel:tag",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "Unknown open_clip model",
    ),
    "clip without tag": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--clip",
            "ViT-B-32",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "MODEL:TAG",
    ),
    "proposals wrong shape": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--proposals-from",
            "{d}/stack.tif",
        ],
        "Proposal labels",
    ),
    "template without slot": (
        [
            "segment",
            "{d}/img.tif",
            "-p",
            "x",
            "-o",
            "{d}/o.tif",
            "--template",
            "a photo",
            "--proposals-from",
            "{d}/labels.tif",
        ],
        "exactly once",
    ),
    "unknown option": (
        ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--speed"],
        "unrecognized arguments",
    ),
    "finetune missing data": (
        ["finetune", "{d}/nothing", "--base", "{clip}", "-o", "{d}/ft.safetensors"],
        "nothing",
    ),
    "finetune bad train": (
        ["finetune", "{d}", "--base", "{clip}", "-o", "{d}/ft.safetensors", "--train", "some"],
        "--train",
    ),
    "finetune output suffix": (
        ["finetune", "{d}", "--base", "{clip}", "-o", "{d}/ft.pt"],
        ".safetensors",
    ),
    "evaluate not a dataset": (
        ["evaluate", "{d}", "--clip", "{clip}"],
        "not a dataset folder",
    ),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_bad_input(files, tiny_clip_path, capsys, name):
    args, pattern = CLI_CASES[name]
    argv = [a.format(d=files, clip=tiny_clip_path) for a in args]
    if argv[0] == "segment" and "--clip" not in argv:
        argv += ["--clip", str(tiny_clip_path)]
    argv.append("-q")  # only the error on stderr
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("napari-slip: error:"), err
    assert re.search(pattern, err[0]), err[0]
    after = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing changed


def test_classes_csv_saved_by_excel_with_a_bom_is_read(tmp_path):
    from napari_slip.core.training.datasets import read_dataset_folder
    from napari_slip.core.training.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(tmp_path / "d", n_images=2, size=64)
    table = folder / "classes.csv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    items = read_dataset_folder(folder)
    assert len(items) == 2 and all(item.classes for item in items)


def test_classes_csv_in_latin1_is_refused_with_how_to_fix(tmp_path, capsys):
    from napari_slip.core.training.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(tmp_path / "d", n_images=2, size=64)
    table = folder / "classes.csv"
    table.write_bytes(table.read_text().replace("circle", "c\xedrculo").encode("latin-1"))
    code = main(["evaluate", str(folder), "--clip", "x.safetensors"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "is not UTF-8 text" in err[0] and "CSV UTF-8" in err[0]


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (
            lambda t: t.replace("2,circle", '2,"circle', 1),
            r"line \d+: the 'class' field 'circle'.*stray quote",
        ),
        (lambda t: t.replace("2,circle", '2,"cir\ncle"', 1), r"runs over several lines"),
        (lambda t: t.replace("2,circle", "2,circle, dividing", 1), r"line 3: more fields.*quotes"),
        (lambda t: t.replace("2,circle", "2", 1), r"line 3: the 'class' field is missing"),
    ],
    ids=["a stray quote", "a line break in a name", "an unquoted comma", "a short row"],
)
def test_a_garbled_classes_csv_is_refused_before_any_learning(
    tmp_path, capsys, tiny_clip_path, edit, pattern
):
    """``learn`` on a classes.csv that a stray quote (which swallows every row after
    it into one class name), a name over two lines, an unquoted comma or a short row
    garbled: exit 2 naming the line and the fix, no concept written (it used to learn
    garbled class names and lose half the objects, exit 0)."""
    from napari_slip.core.training.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(tmp_path / "d", n_images=3, size=64)
    table = folder / "classes.csv"
    table.write_text(edit(table.read_text()))
    out = tmp_path / "c.concept"
    code = main(["learn", str(folder), "-o", str(out), "--clip", str(tiny_clip_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert re.search(pattern, err[0]) and "classes.csv" in err[0], err[0]
    assert not out.exists()


def test_an_extremely_thin_image_is_refused_for_sam(seg):
    with pytest.raises(InputError, match=r"4 x 20000 pixels: too thin for SAM") as info:
        seg.segment(np.random.default_rng(0).random((4, 20000)), "x")
    _one_line(info.value)
    labels = np.zeros((4, 20000), np.int32)
    labels[:, 100:200] = 1  # with label proposals it works
    assert seg.segment(np.ones((4, 20000)), "x", labels=labels).n_objects == 1


def test_segment_is_safe_from_several_threads(tiny_clip_path):
    from concurrent.futures import ThreadPoolExecutor

    kwargs = {"clip": str(tiny_clip_path), "device": "cpu", "labels": LABELS}
    single = {
        k: napari_slip.segment(IMAGE, "cell", mode="topk", top_k=k, **kwargs).labels
        for k in (1, 2, 3, 4)
    }
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda k: (k, napari_slip.segment(IMAGE, "cell", mode="topk", top_k=k, **kwargs)),
                [1, 2, 3, 4] * 3,
            )
        )
    for k, result in runs:
        assert result.n_objects == k and np.array_equal(result.labels, single[k])


def test_processes_sharing_one_cache_folder_do_not_clobber_each_other(tmp_path):
    """Several processes save, read and prune embeddings and hash memos in one cache
    folder at once: every read gives a complete file or nothing, never an error."""
    import subprocess
    import sys

    code = """
import os, sys, torch
from pathlib import Path
from napari_slip.core.models.download import file_sha256, sha256_of
from napari_slip.core.models.promptable import ImageEmbedding
from napari_slip.core.pipeline.embedding_cache import load_embedding, save_embedding
me = int(sys.argv[1])
folder = Path(os.environ["NAPARI_SLIP_CACHE"])
weights = folder.parent / "w.bin"
for i in range(40):
    emb = ImageEmbedding(torch.full((1, 8, 16, 16), float(i)), (64, 64), (64, 64))
    save_embedding(folder / "embeddings" / "shared.safetensors", emb, limit_bytes=10**9)
    got = load_embedding(folder / "embeddings" / "shared.safetensors")
    if got is not None:  # a complete file from one writer, never a mix or an error
        assert got.features.shape == (1, 8, 16, 16)
        assert float(got.features.view(-1)[0]) == float(got.features.view(-1)[-1])
    assert file_sha256(weights) == sha256_of(weights)
print("ok")
"""
    cache = tmp_path / "cache"
    (tmp_path / "w.bin").write_bytes(b"weights" * 1000)
    env = {**__import__("os").environ, "NAPARI_SLIP_CACHE": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-500:] for o in outs]
    assert not list((cache / "embeddings").glob("*.part"))
    import json

    memo = json.loads((cache / "hashes.json").read_text())
    assert list(memo.values()) == [__import__("hashlib").sha256(b"weights" * 1000).hexdigest()]


def test_processes_remembering_hashes_at_once_lose_no_entry(tmp_path):
    """hashes.json is a read-modify-write memo: a lock keeps concurrent writers from
    dropping each other's entries (before the lock, some were lost)."""
    import json
    import subprocess
    import sys

    code = """
import sys
from pathlib import Path
from napari_slip.core.models.download import file_sha256
me, folder = int(sys.argv[1]), Path(sys.argv[2])
for i in range(25):
    f = folder / f"w{me}-{i}.bin"
    f.write_bytes(f"{me}-{i}".encode())
    file_sha256(f)
"""
    cache, files = tmp_path / "cache", tmp_path / "files"
    files.mkdir()
    env = {**__import__("os").environ, "NAPARI_SLIP_CACHE": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i), str(files)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    memo = json.loads((cache / "hashes.json").read_text())
    assert len(memo) == 100


def test_huge_label_ids_are_measured_without_one_slot_per_possible_id():
    """One object of id 2^31-1 (and one of 2^62) measures as the same objects with
    small ids do, with memory bounded by the objects, not by the largest id."""
    import tracemalloc

    import pandas as pd

    from napari_slip.core.measure import with_measurements

    small = np.zeros((64, 64), np.int64)
    small[10:20, 10:20], small[30:40, 5:9], small[50:60, 48:61] = 2, 1, 3
    huge = np.select([small == 1, small == 2, small == 3], [7, 2**31 - 1, 2**62], 0)
    image = np.random.default_rng(0).random((64, 64, 2))
    ids = {1: 7, 2: 2**31 - 1, 3: 2**62}
    table = pd.DataFrame({"id": [1, 2, 3], "score": [0.1, 0.2, 0.3]})
    expected = with_measurements(table, small, image, "YX", {"Y": 0.5, "X": 0.5}, "um")
    tracemalloc.start()
    try:
        got = with_measurements(
            table.assign(id=table["id"].map(ids)), huge, image, "YX", {"Y": 0.5, "X": 0.5}, "um"
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6  # one slot per possible id would be 16 GB
    assert got["id"].tolist() == [7, 2**31 - 1, 2**62]
    pd.testing.assert_frame_equal(got.drop(columns="id"), expected.drop(columns="id"))


def test_learn_refuses_a_class_with_no_object_and_says_what_it_skips(
    tmp_path, tiny_clip_path, capsys
):
    from napari_slip.testing.concept_scenes import write_concept_folder

    data = write_concept_folder(tmp_path / "data", 2, seed=5)
    table = data / "classes.csv"
    original = table.read_text()
    table.write_text(original + "scene000,99,ghost\n")  # label 99 is in no label image
    out = tmp_path / "c.concept"
    args = ["learn", str(data), "-o", str(out), "--clip", str(tiny_clip_path), "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ghost'" in err[0] and "scene000 label 99" in err[0]
    assert not out.exists()  # refused before any work
    table.write_text(original + "scene000,97,round\n")  # round has other objects
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning: skipped 1 row(s)" in err and "scene000 label 97 (round)" in err
    assert out.is_file()


def test_a_glob_rerun_does_not_take_its_own_outputs_for_inputs(
    tmp_path, tiny_sam_path, tiny_clip_path
):
    from napari_slip.core.batches import batch
    from napari_slip.core.params import SamProposalParams

    (tmp_path / "plate" / "a").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "plate" / "a" / "img.tif", IMAGE)
    pattern, out = str(tmp_path / "plate" / "**" / "*.tif"), tmp_path / "plate" / "labels"
    options = {"sam": str(tiny_sam_path), "clip": str(tiny_clip_path), "device": "cpu"}
    options["sam_params"] = SamProposalParams(points_per_side=2)
    first = batch([pattern], out, "cell", workers=1, **options)
    assert first.done == ["img.tif"] and (out / "img.tif").is_file()
    again = batch([pattern], out, "cell", workers=1, **options)  # its labels match too
    assert again.n_inputs == 1 and again.skipped == ["img.tif"] and not again.failed


def test_a_text_only_concept_saves_and_loads(tmp_path):
    from napari_slip.core.concepts import Concept

    concept = Concept(["mitotic", "interphase"])  # classes with their texts, no example
    path = concept.save(tmp_path / "texts.concept")
    loaded = Concept.load(path)
    assert loaded.classes == ["mitotic", "interphase"] and loaded.texts == concept.texts
    assert len(loaded.examples) == 0


@pytest.mark.parametrize("damage", ["{broken", '{"images": "x", "params_hash": 5}', "[]", ""])
def test_a_batch_resumes_past_a_damaged_summary(tmp_path, tiny_sam_path, tiny_clip_path, damage):
    from napari_slip.core.batches import batch
    from napari_slip.core.params import SamProposalParams

    (tmp_path / "plate").mkdir()
    tifffile.imwrite(tmp_path / "plate" / "a.tif", IMAGE)
    options = {"sam": str(tiny_sam_path), "clip": str(tiny_clip_path), "device": "cpu"}
    options["sam_params"] = SamProposalParams(points_per_side=2)
    out = tmp_path / "out"
    assert batch([tmp_path / "plate"], out, "cell", workers=1, **options).done == ["a.tif"]
    (out / "summary.json").write_text(damage)
    again = batch([tmp_path / "plate"], out, "cell", workers=1, **options)
    assert again.skipped == ["a.tif"] and not again.failed
    import json

    assert json.loads((out / "summary.json").read_text())["params_hash"]  # rewritten whole


def test_a_batch_with_a_concept_of_another_clip_stops_before_any_image(
    tmp_path, tiny_sam_path, tiny_clip_path
):
    from napari_slip.core.batches import batch
    from napari_slip.core.concepts import Concept
    from napari_slip.core.models.download import file_sha256
    from napari_slip.testing import write_tiny_clip

    concept = Concept(["cell"])
    concept.bind_clip("tiny_clip.safetensors", file_sha256(tiny_clip_path))
    other = write_tiny_clip(tmp_path / "other_clip.safetensors", seed=3)
    (tmp_path / "plate").mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / "plate" / name, IMAGE)
    with pytest.raises(InputError, match=r"learnt with CLIP tiny_clip\.safetensors") as info:
        batch(
            [tmp_path / "plate"],
            tmp_path / "out",
            concept,
            sam=str(tiny_sam_path),
            clip=str(other),
        )
    assert "other_clip.safetensors" in str(info.value)
    assert not (tmp_path / "out").exists()  # once, before any image: nothing written


def test_a_plane_read_as_xy_writes_rows_by_columns_and_says_so(
    tmp_path, tiny_sam_path, tiny_clip_path
):
    image, labels = IMAGE[:64], LABELS[:64].astype(np.uint16)  # not square
    tifffile.imwrite(tmp_path / "xy.tif", image)
    tifffile.imwrite(tmp_path / "xy_labels.tif", labels)  # in the file's own order
    args = ["segment", str(tmp_path / "xy.tif"), "-p", "x", "-o", str(tmp_path / "o.tif")]
    args += ["--axes", "XY", "--proposals-from", str(tmp_path / "xy_labels.tif")]
    args += ["--mode", "threshold", "--threshold", "-1", "--clip", str(tiny_clip_path)]
    assert main([*args, "--sam", str(tiny_sam_path), "--device", "cpu", "-q"]) == 0
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "YX"
        out = tif.asarray()
    assert out.shape == labels.T.shape  # rows are the file's columns: Y, then X
    for value in np.unique(labels)[1:]:
        assert len(np.unique(out[value == labels.T])) == 1  # each object whole, in place
    assert np.array_equal(out > 0, labels.T > 0)


def test_a_wrong_pixel_size_in_the_file_is_replaced_by_the_one_given(
    tmp_path, tiny_sam_path, tiny_clip_path, capsys
):
    stack, labels = np.stack([IMAGE] * 3), np.stack([LABELS] * 3).astype(np.uint16)
    meta = {"axes": "ZYX", "spacing": 1e12, "unit": "um"}  # a broken Z size
    tifffile.imwrite(tmp_path / "s.tif", stack, imagej=True, metadata=meta)
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    args = ["segment", str(tmp_path / "s.tif"), "-p", "x", "-o", str(tmp_path / "o.tif")]
    args += ["--proposals-from", str(tmp_path / "l.tif"), "--mode", "threshold"]
    args += ["--threshold", "-1", "--sam", str(tiny_sam_path), "--clip", str(tiny_clip_path)]
    args += ["--device", "cpu", "-q", "--table", str(tmp_path / "t.csv")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--pixel-size" in err and not (tmp_path / "o.tif").exists()
    assert main([*args, "--pixel-size", "Z=2,Y=0.5,X=0.5"]) == 0  # as the message says
    import pandas as pd

    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) and (table["volume_um3"] == table["area"] * 0.5).all()
