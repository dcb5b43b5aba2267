"""Fine-tuning: the loss, what is trained, splits, checkpoints, cancel, and proof it learns."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from napari_slip.cli import main
from napari_slip.core.errors import InputError
from napari_slip.core.models.clip import build_clip, load_clip_checkpoint, read_clip_metadata
from napari_slip.core.models.listing import describe_checkpoint, find_clip_checkpoints
from napari_slip.core.training.datasets import Pairs, load_pairs, read_dataset_folder
from napari_slip.core.training.evaluate import evaluate
from napari_slip.core.training.finetune import (
    FinetuneParams,
    contrastive_loss,
    finetune,
    iter_finetune_to_file,
    split_pairs,
    trainable_names,
)
from napari_slip.core.training.synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset
from napari_slip.testing import TINY_CLIP, write_tiny_clip

# A tiny CLIP with a little more capacity than the plumbing tests' one.
SMALL_CLIP = json.loads(json.dumps(TINY_CLIP))
SMALL_CLIP["embed_dim"] = 64
SMALL_CLIP["vision_cfg"].update(layers=2, width=64, head_width=32)
SMALL_CLIP["text_cfg"].update(layers=2, width=64)
FAST = FinetuneParams(epochs=25, lr=1e-3, train="all", batch_size=32, patience=25)


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    train = make_synthetic_dataset(root / "train", n_images=30, seed=1)
    test = make_synthetic_dataset(root / "test", n_images=12, seed=2)
    base = write_tiny_clip(root / "base.safetensors", config=SMALL_CLIP)
    return train, test, base


def test_finetuning_lifts_held_out_hit_rate_from_chance(domain, tmp_path):
    """The proof (SLIP's central result, on a synthetic domain): chance -> far above it."""
    train, test, base = domain
    out = finetune(train, str(base), tmp_path / "tuned.safetensors", FAST, device="cpu")
    report = evaluate(test, [str(base), str(out)], device="cpu")
    before, after = report[str(base)], report[str(out)]
    assert before["chance_hit_rate"] <= 0.3
    assert before["hit_rate"] <= before["chance_hit_rate"] + 0.15
    assert after["hit_rate"] >= 0.8
    assert after["mean_iou"] >= 0.8 and after["dice"] >= 0.8
    meta = read_clip_metadata(out)
    assert meta["metrics"]["val_accuracy"] > meta["metrics"]["baseline_val_accuracy"]


def test_checkpoint_records_what_it_learned_and_appears_in_the_folder(domain, isolated_cache):
    train, _, base = domain
    target = isolated_cache / "checkpoints" / "shapes.safetensors"
    params = FinetuneParams(epochs=2, lr=1e-3, train="proj", template="a drawing of a {}.")
    finetune(train, str(base), target, params, device="cpu")
    meta = read_clip_metadata(target)
    assert meta["class_names"] == sorted(SYNTHETIC_CLASSES)
    assert meta["prompt_template"] == "a drawing of a {}."
    assert meta["base_model"] == "tiny-random"  # the base checkpoint's own base
    assert meta["training"]["train"] == "proj" and meta["training"]["epochs"] == 2
    assert meta["training"]["n_train"] > 0 and meta["training"]["n_val"] > 0
    assert len(meta["metrics"]["history"]) == 2 and meta["date"].startswith("20")
    [(path, found_meta)] = find_clip_checkpoints()
    assert path == target and "circle" in describe_checkpoint(found_meta)
    # Only the projections moved; the rest is the base model's.
    tuned, original = load_clip_checkpoint(target), load_clip_checkpoint(base)
    t_state, o_state = tuned.model.state_dict(), original.model.state_dict()
    moved = {k for k in t_state if not torch.equal(t_state[k], o_state[k])}
    assert moved and moved <= {"visual.proj", "text_projection", "logit_scale"}


def test_trained_parts_nest():
    model = build_clip(SMALL_CLIP)
    proj = set(trainable_names(model, "proj"))
    last = set(trainable_names(model, "last", last_blocks=1))
    everything = set(trainable_names(model, "all"))
    assert proj == {"visual.proj", "text_projection", "logit_scale"}
    assert proj < last < everything
    assert any(".resblocks.1." in n for n in last) and not any(".resblocks.0." in n for n in last)


def test_same_class_objects_are_not_negatives():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    scale = torch.tensor(50.0)
    grouped = contrastive_loss(emb, texts, torch.tensor([0, 0, 1]), scale)
    assert grouped < 0.01  # a perfect fit costs nothing
    # Treating the two class-0 images as different texts (the naive CLIP loss) would
    # punish the perfect embedding.
    naive = contrastive_loss(emb, torch.cat([texts[:1], texts]), torch.tensor([0, 1, 2]), scale)
    assert naive > 0.3


def test_split_keeps_each_image_on_one_side(domain):
    train, _, _ = domain
    pairs = load_pairs(train)
    tr, va = split_pairs(pairs, 0.25, seed=3)
    assert len(tr) + len(va) == len(pairs) and len(va) > 0
    assert not set(tr.groups) & set(va.groups)


def test_captions_csv_trains_too(tmp_path):
    rows = []
    for i in range(8):
        colour = (220, 40, 40) if i % 2 else (40, 40, 220)
        Image.fromarray(np.full((20, 30, 3), colour, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append((f"{i}.png", "a red card" if i % 2 else "a blue card"))
    with open(tmp_path / "captions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("image", "caption"), *rows])
    pairs = load_pairs(tmp_path / "captions.csv")
    assert len(pairs) == 8 and pairs.crops[0].shape == (30, 30, 3)
    base = write_tiny_clip(tmp_path / "base.safetensors")
    out = finetune(
        tmp_path / "captions.csv",
        str(base),
        tmp_path / "c.safetensors",
        FinetuneParams(epochs=2, lr=1e-3, val_fraction=0.25),
        device="cpu",
    )
    assert read_clip_metadata(out)["class_names"] == ["a blue card", "a red card"]


def test_grid_tries_combinations_and_keeps_the_best(domain, tmp_path):
    train, _, base = domain
    params = FinetuneParams(epochs=1, lr=1e-3)
    out = finetune(train, str(base), tmp_path / "g.safetensors", params, grid=True, device="cpu")
    meta = read_clip_metadata(out)
    tried = meta["training"]["grid"]
    assert len(tried) == 6 and {t["train"] for t in tried} == {"proj", "last"}
    assert meta["metrics"]["val_accuracy"] == max(t["best_val"] for t in tried)


def test_cancel_leaves_no_checkpoint(domain, tmp_path):
    train, _, base = domain
    out = tmp_path / "never.safetensors"
    gen = iter_finetune_to_file(train, str(base), out, FAST, device="cpu")
    last = None
    for event in gen:
        if event.stage == "training" and event.done >= 3:
            last = event
            gen.close()  # what the GUI's Cancel does between batches
            break
    assert last is not None and last.done < last.total  # stopped before the end
    assert not out.exists() and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"train": "some"}, "train must be"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"template": "no slot"}, "template"),
    ],
)
def test_bad_training_options(params, match):
    with pytest.raises(InputError, match=match):
        FinetuneParams(**params)


def test_one_class_is_refused_clearly(tmp_path):
    base = write_tiny_clip(tmp_path / "b.safetensors")
    pairs = Pairs([np.zeros((8, 8, 3), np.uint8)] * 4, ["cell"] * 4, ["a", "a", "b", "b"])
    with pytest.raises(InputError, match="at least two different classes"):
        finetune(pairs, str(base), tmp_path / "o.safetensors", device="cpu")


def test_bad_dataset_folders_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="not a dataset folder"):
        read_dataset_folder(tmp_path)
    make_synthetic_dataset(tmp_path / "d", n_images=1)
    (tmp_path / "d" / "classes.csv").write_text("image,label,class\nimg_000.png,x,circle\n")
    with pytest.raises(InputError, match="line 2: label 'x'"):
        read_dataset_folder(tmp_path / "d")


def test_cli_finetune_then_evaluate_writes_json(domain, tmp_path, capsys):
    train, test, base = domain
    out = tmp_path / "cli.safetensors"
    assert (
        main(
            [
                "finetune",
                str(train),
                "--base",
                str(base),
                "-o",
                str(out),
                "--epochs",
                "2",
                "--lr",
                "1e-3",
                "--train",
                "proj",
                "--device",
                "cpu",
                "-q",
            ]
        )
        == 0
    )
    assert out.is_file()
    assert (
        main(
            [
                "evaluate",
                str(test),
                "--clip",
                str(base),
                "--clip",
                str(out),
                "--json",
                str(tmp_path / "r.json"),
                "--mode",
                "distractors",
                "-q",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) == {str(base), str(out)}
    for metrics in report.values():
        assert metrics["queries"] > 12  # every image has at least two classes
        assert {"hit_rate", "mean_iou", "dice", "precision", "recall"} <= set(metrics)
        assert metrics["mode"] == "distractors"
    assert "hit_rate" in table and str(out) in table
    assert main(["finetune", str(train), "-o", str(tmp_path / "x.pt"), "--base", str(base)]) == 2


def test_a_single_image_is_split_by_object():
    pairs = Pairs([np.zeros((4, 4, 3), np.uint8)] * 10, ["a", "b"] * 5, ["one"] * 10)
    tr, va = split_pairs(pairs, 0.2)
    assert len(va) == 2 and len(tr) == 8


def test_evaluate_with_sam_proposals_runs_the_whole_pipeline(domain, trained_sam_path):
    from napari_slip.core.params import SamProposalParams
    from napari_slip.testing.trained_sam import FIXTURE_AMG

    _, test, base = domain
    report = evaluate(
        test,
        [str(base)],
        proposals="sam",
        sam=str(trained_sam_path),
        sam_params=SamProposalParams(**FIXTURE_AMG),
        device="cpu",
        mode="topk",
        top_k=100,  # keep every proposal: measures what SAM found, whatever CLIP says
    )
    metrics = report[str(base)]
    assert metrics["proposals"] == "sam" and metrics["queries"] > 12
    assert metrics["selected"] > 0 and metrics["chance_hit_rate"] is None
    # The trained SAM proposes most labelled objects (random weights would give 0).
    assert metrics["recall"] >= 0.5
