"""The command line, end to end on small images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from napari_slip.cli import main
from napari_slip.core.models import registry as models
from napari_slip.testing import blobs_image

FAST = [
    "--points-per-side",
    "4",
    "--points-per-batch",
    "8",
    "--pred-iou-thresh",
    "0",
    "--stability-score-thresh",
    "0",
    "--min-area",
    "20",
]


@pytest.fixture
def files(tmp_path):
    image, labels = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    return tmp_path


def test_segment_with_sam_proposals_writes_labels_table_and_provenance(
    files, tiny_sam_path, tiny_clip_path, capsys
):
    code = main(
        [
            "segment",
            str(files / "img.tif"),
            "--prompt",
            "nucleus",
            "-o",
            str(files / "out.tif"),
            "--table",
            str(files / "objects.csv"),
            "--provenance",
            str(files / "prov.json"),
            "--mode",
            "topk",
            "--top-k",
            "2",
            "--sam",
            str(tiny_sam_path),
            "--clip",
            str(tiny_clip_path),
            "--device",
            "cpu",
            *FAST,
        ]
    )
    assert code == 0
    labels = tifffile.imread(files / "out.tif")
    table = pd.read_csv(files / "objects.csv")
    assert labels.shape == (96, 96) and labels.dtype == np.uint16
    assert sorted(np.unique(labels[labels > 0]).tolist()) == table["id"].tolist()
    assert 1 <= len(table) <= 2
    for row in table.itertuples():
        assert row.area == int((labels == row.id).sum())
    prov = json.loads((files / "prov.json").read_text())
    assert prov["proposals"]["source"] == "sam" and prov["prompt"] == "nucleus"
    err = capsys.readouterr().err.strip().splitlines()
    # Not a terminal: a line when each stage starts and ends, never one per batch.
    assert "napari-slip: embedding (SAM image encoder)" in err
    assert "napari-slip: proposals (SAM mask decoder)" in err
    assert sum("proposals" in line for line in err) == 2
    assert err[-1].startswith("napari-slip: Found ") and err[-1].endswith(
        f"Wrote {files / 'out.tif'}, {files / 'objects.csv'} and {files / 'prov.json'}."
    )


def test_input_side_reaches_sam_and_its_record(tmp_path, tiny_clip_path):
    """``--input-side``: SAM sees the image in that square (the fixture trained at
    several scales, at 3/4 of its side, still finds the scene's objects where they
    are), and the provenance records it."""
    from napari_slip.testing.scenes import scenes
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_SCALES_PATH, match_objects

    rgb, truth = (x[0] for x in scenes(1, seed=31))
    tifffile.imwrite(tmp_path / "scene.tif", rgb, photometric="rgb")
    amg = [f"--{k.replace('_', '-')}={v}" for k, v in FIXTURE_AMG.items()]
    found = {}
    for side in (None, 192):
        args = ["segment", str(tmp_path / "scene.tif"), "-p", "cell", "-q"]
        args += ["--sam", str(FIXTURE_SCALES_PATH), "--clip", str(tiny_clip_path)]
        args += [
            "-o",
            str(tmp_path / f"{side}.tif"),
            "--provenance",
            str(tmp_path / f"{side}.json"),
        ]
        args += ["--mode", "threshold", "--threshold", "-1", *amg]
        assert main([*args, *(["--input-side", str(side)] if side else [])]) == 0
        prov = json.loads((tmp_path / f"{side}.json").read_text())
        assert prov["proposals"]["input_side"] == side
        labels = tifffile.imread(tmp_path / f"{side}.tif")
        hits, total, _ = match_objects(truth, [labels == i for i in np.unique(labels) if i])
        found[side] = hits / total
    assert found[None] >= 0.7 and found[192] >= 0.7, found


def test_segment_with_proposals_from_labels(files, tiny_clip_path):
    code = main(
        [
            "segment",
            str(files / "img.tif"),
            "-p",
            "cell",
            "-o",
            str(files / "out.png"),
            "--table",
            str(files / "t.csv"),
            "--mode",
            "threshold",
            "--threshold",
            "-1",
            "--proposals-from",
            str(files / "labels.tif"),
            "--sam",
            "/no/sam.pth",
            "--clip",
            str(tiny_clip_path),
            "-q",
        ]
    )
    assert code == 0
    out = np.asarray(Image.open(files / "out.png"))
    _, labels = blobs_image()
    table = pd.read_csv(files / "t.csv")
    assert sorted(table["source_id"]) == [1, 2, 3, 4]
    for row in table.itertuples():
        assert np.array_equal(out == row.id, labels == row.source_id)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["segment", "{d}/missing.tif", "-p", "x", "-o", "{d}/o.tif"], "does not exist"),
        (["segment", "{d}/stack.tif", "-p", "x", "-o", "{d}/o.tif"], r"shape \(3, 96, 96\)"),
        (["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.jpg"], "must end in .tif, .png"),
        (
            [
                "segment",
                "{d}/img.tif",
                "-p",
                "",
                "-o",
                "{d}/o.tif",
                "--proposals-from",
                "{d}/labels.tif",
            ],
            "prompt is empty",
        ),
        (
            [
                "segment",
                "{d}/img.tif",
                "-p",
                "x",
                "-o",
                "{d}/o.tif",
                "--fill",
                "a,b",
                "--proposals-from",
                "{d}/labels.tif",
            ],
            "must be a name or R,G,B",
        ),
        (
            [
                "segment",
                "{d}/img.tif",
                "-p",
                "x",
                "-o",
                "{d}/o.tif",
                "--fill",
                "purple",
                "--proposals-from",
                "{d}/labels.tif",
            ],
            "Unknown fill 'purple'",
        ),
        (
            ["segment", "{d}/img.tif", "-p", "x", "-o", "{d}/o.tif", "--input-side", "100"],
            "input_side must be a multiple of 16",
        ),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(files, tiny_clip_path, capsys, args, match):
    tifffile.imwrite(
        files / "stack.tif", np.zeros((3, 96, 96), np.uint16), photometric="minisblack"
    )
    argv = [a.format(d=files) for a in args] + ["--clip", str(tiny_clip_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("napari-slip: error:")
    import re

    assert re.search(match, err[0])
    assert not (files / "o.tif").exists()


def test_offline_named_model_stops_with_a_clear_message(
    files, tiny_clip_path, isolated_cache, monkeypatch, capsys
):
    entry = models.SamWeights("vit_b", "http://127.0.0.1:9/sam_vit_b_01ec64.pth", "0" * 64, 1, "x")
    monkeypatch.setitem(models.SAM_MODELS, "vit_b", entry)
    code = main(
        [
            "segment",
            str(files / "img.tif"),
            "-p",
            "x",
            "-o",
            str(files / "o.tif"),
            "--clip",
            str(tiny_clip_path),
            "-q",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and entry.url in err
    assert str(isolated_cache / "sam" / "sam_vit_b_01ec64.pth") in err
    assert "give a local file with --sam PATH" in err and "sam='" not in err  # CLI words
    assert len(err.splitlines()) == 1
    assert not (files / "o.tif").exists()


def test_models_lists_cache_state(isolated_cache, tiny_sam_path, capsys):
    target = isolated_cache / "sam" / "sam_vit_b_01ec64.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_sam_path.read_bytes())
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("sam") and "vit_b" in ln)
    assert "cached" in line and str(target) in line
    assert "vit_h" in out and "ViT-B-32:laion2b_s34b_b79k" in out and str(isolated_cache) in out


def test_models_lists_trained_decoders(isolated_cache, decoder_fixture, capsys):
    import shutil

    from napari_slip.core.models.download import checkpoint_dir

    checkpoint_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(decoder_fixture.decoder, checkpoint_dir() / "shapes.safetensors")
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(i for i, ln in enumerate(out) if ln.startswith("decoder") and "shapes" in ln)
    assert "classes: circle" in out[row + 1] and "validation IoU" in out[row + 1]
    assert not any(ln.startswith("clip-checkpoint") and "shapes" in ln for ln in out)


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "napari_slip.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("napari-slip ")


def test_progress_on_a_terminal_is_one_bar_per_stage_with_rate_and_time_left():
    import io

    from napari_slip.cli import StageProgress
    from napari_slip.core.runtime.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = StageProgress(stream=out)
    for done in range(0, 65, 16):
        bar(Progress("proposals", done, 64, "SAM mask decoder"))
    bar(Progress("scoring", 1, 2, "CLIP"))
    bar.close()
    lines = out.getvalue().split("\n")
    assert len(lines) == 3 and lines[-1] == ""  # one line per stage
    last = lines[0].split("\r")[-1]
    assert "[" + "#" * 24 + "] 64/64" in last and "/s" in last and "0 s left" in last
    assert "1/2" in lines[1].split("\r")[-1]


def test_a_resumed_batch_shows_an_honest_rate_and_a_log_line_per_image():
    """Skipped images are not counted in the rate (it read 2355158.0/s), and a log (not
    a terminal) says something per image instead of staying silent for minutes."""
    import io

    from napari_slip.cli import StageProgress
    from napari_slip.core.runtime.progress import Progress

    bar = StageProgress.bar(Progress("batch", 105, 110, ""), elapsed=10.0, first=100)
    assert "0.5/s" in bar and "10 s left" in bar
    log = io.StringIO()
    printer = StageProgress(stream=log)
    printer(Progress("batch", 100, 110, "100 already done"))
    for k in range(101, 104):
        printer(Progress("batch", k, 110, f"img{k}.tif: 3 objects"))
    printer.close()
    lines = log.getvalue().splitlines()
    assert lines[0] == "napari-slip: batch (100 already done)"
    assert lines[1:4] == [
        f"napari-slip: batch {k}/110 img{k}.tif: 3 objects" for k in (101, 102, 103)
    ]


def test_nothing_found_table_lists_the_candidates_and_their_scores(files, tiny_clip_path, capsys):
    code = main(
        [
            "segment",
            str(files / "img.tif"),
            "-p",
            "cell",
            "-o",
            str(files / "none.tif"),
            "--table",
            str(files / "none.csv"),
            "--proposals-from",
            str(files / "labels.tif"),
            "--mode",
            "threshold",
            "--threshold",
            "0.999",
            "--clip",
            str(tiny_clip_path),
            "-q",
        ]
    )
    assert code == 0
    table = pd.read_csv(files / "none.csv")
    assert len(table) == 4 and not table["kept"].any()  # the four labelled objects
    assert table["score"].is_monotonic_decreasing and (table["score"] < 0.999).all()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("napari-slip: Nothing found for 'cell'")
    assert f"best of 4 candidates scored {table['score'].max():.3f}" in line


def test_every_option_says_what_it_does_and_its_default():
    from napari_slip.cli import build_parser

    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest == "help" or not action.option_strings:
                continue
            flag = f"{name} {action.option_strings[0]}"
            assert action.help, f"{flag} has no help"
            if action.default not in (None, False, (), []):
                assert "default" in action.help, f"{flag} does not say its default"
    help_text = " ".join(
        parser._subparsers._group_actions[0].choices["segment"].format_help().split()
    )
    assert "{best,threshold,distractors,topk}" in help_text  # choices are listed
    assert "black, white, gray, mean, none or R,G,B" in help_text


def test_a_bad_fill_is_refused_by_the_parser(files, capsys):
    code = main(["segment", str(files / "img.tif"), "-p", "x", "-o", "o.tif", "--fill", "teal"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Unknown fill 'teal'" in err[0]


def test_train_decoder_evaluate_and_segment_with_it(
    tmp_path, decoder_fixture, held_out, tiny_clip_path, trained_sam_path, capsys
):
    """train-decoder -> evaluate --decoder -> segment --proposals relevance|guided."""
    from napari_slip.core.models.decoder import load_decoder

    phrases = tmp_path / "phrases.csv"
    phrases.write_text("class,phrase\ncircle,round blob\ncircle,red disc\n")
    out = tmp_path / "dec.safetensors"
    args = ["train-decoder", str(decoder_fixture.data), "--clip", str(decoder_fixture.clip)]
    args += ["-o", str(out), "--epochs", "2", "--dim", "16", "--paraphrases", str(phrases), "-q"]
    assert main(args) == 0
    meta = load_decoder(out).metadata
    assert meta["paraphrases"] == {"circle": ["round blob", "red disc"]}
    assert meta["training"]["epochs"] == 2 and meta["clip_spec"] == str(decoder_fixture.clip)
    assert "Saved the decoder" in capsys.readouterr().err
    assert main(args) == 2  # the file exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err

    report = tmp_path / "report.json"
    code = main(
        [
            "evaluate",
            str(decoder_fixture.data),
            "--clip",
            str(decoder_fixture.clip),
            "--decoder",
            str(decoder_fixture.decoder),
            "--json",
            str(report),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["mean_iou"] > 0.3  # its own training images
    assert "circle" in printed and f"{data['mean_iou']:.3f}" in printed

    item = held_out[0]
    Image.fromarray(item.image).save(tmp_path / "img.png")
    name = sorted(set(item.classes.values()))[0]
    common = ["--clip", str(decoder_fixture.clip), "--decoder", str(decoder_fixture.decoder)]
    tiled = ["--tiles", "on", "--tile-size", "64", "--overlap", "16"]
    for proposals, extra, source in [
        ("relevance", [], "relevance"),
        ("guided", [], "guided"),
        ("guided", tiled, "guided-tiles"),
    ]:
        labels = tmp_path / f"{source}.tif"
        prov = tmp_path / f"{source}.json"
        args = ["segment", str(tmp_path / "img.png"), "-p", name, "-o", str(labels)]
        args += ["--provenance", str(prov), "--proposals", proposals, "--sam"]
        args += [str(trained_sam_path), "--relevance-out", str(tmp_path / f"{source}-map.tif")]
        code = main([*args, *common, *extra, "--mode", "threshold", "--threshold", "-1", "-q"])
        assert code == 0, capsys.readouterr().err
        written = json.loads(prov.read_text())
        assert written["proposals"]["source"] == source
        assert written["decoder"]["sha256"] == load_decoder(decoder_fixture.decoder).sha256
        assert tifffile.imread(labels).max() >= 1
        relevance = tifffile.imread(tmp_path / f"{proposals}-map.tif")
        assert (
            relevance.shape == item.labels.shape and 0 <= relevance.min() <= relevance.max() <= 1
        )

    wrong = ["segment", str(tmp_path / "img.png"), "-p", name, "-o", str(tmp_path / "w.tif")]
    mismatched = [
        "--clip",
        str(tiny_clip_path),
        "--decoder",
        str(out),
        "--sam",
        str(trained_sam_path),
    ]
    assert main([*wrong, *mismatched, *FAST]) == 2
    assert "was trained on" in capsys.readouterr().err
    assert main([*wrong, "--proposals", "labels"]) == 2
    assert "--proposals-from" in capsys.readouterr().err
    assert not (tmp_path / "w.tif").exists()


def test_a_one_plane_stacks_labels_come_back_as_its_proposals(
    tmp_path, tiny_sam_path, tiny_clip_path
):
    """A one-plane z-stack's labels (OME-TIFF, Z = 1) are read back without their Z:
    OME cannot tell one Z plane from none, and readers squeeze it. Given back as the
    stack's proposals they get the Z back instead of being refused (before: "Proposal
    labels have 2 axes"), and every object is kept pixel for pixel."""
    image, truth = blobs_image()
    tifffile.imwrite(tmp_path / "one.tif", image[None].astype(np.uint16))
    tifffile.imwrite(tmp_path / "truth.tif", truth[None].astype(np.uint16))  # (1, H, W)
    models = ["--sam", str(tiny_sam_path), "--clip", str(tiny_clip_path), "--device", "cpu"]
    keep_all = ["--mode", "threshold", "--threshold", "-1", "-q", "--axes", "ZYX", *models]
    first, second = tmp_path / "first.tif", tmp_path / "second.tif"
    stack = str(tmp_path / "one.tif")
    given = str(tmp_path / "truth.tif")
    main(["segment", stack, "-p", "cell", "-o", str(first), "--proposals-from", given, *keep_all])
    labels = tifffile.imread(first)
    assert labels.shape == truth.shape  # our stack labels, squeezed by the reader
    main(
        [
            "segment",
            stack,
            "-p",
            "cell",
            "-o",
            str(second),
            "--proposals-from",
            str(first),
            *keep_all,
        ]
    )
    again = tifffile.imread(second)
    for value in (int(v) for v in np.unique(labels) if v):
        ids = np.unique(again[labels == value])
        assert len(ids) == 1 and ids[0] > 0
        assert ((again == ids[0]) == (labels == value)).all()
    assert len(np.unique(labels)) == len(np.unique(truth)) == len(np.unique(again))
