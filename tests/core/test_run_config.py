"""One run, one configuration: every check of a run, the combinations included, is made
when its RunConfig is built, so each entry point (segment(), Segmenter.segment, batch(),
the CLI's segment and batch) refuses a bad run with one line before any model loads.

The models named are real checkpoint files (or registry names, which would download):
a check made after loading would count a load in the hub, or reach for the network."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import napari_slip
from napari_slip.cli import main
from napari_slip.core.config import Models, RunConfig
from napari_slip.core.errors import InputError
from napari_slip.core.models.hub import default_hub
from napari_slip.core.params import SelectionParams, TileParams
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.testing import blobs_image

IMAGE = blobs_image()[0]

#: name -> (keyword options, CLI flags, message); models are added per test.
CHECKS = {
    "distractor-is-prompt": (
        {"mode": "distractors", "distractors": ["debris", "Cell"]},
        ["--mode", "distractors", "--distractors", "debris,Cell"],
        "distractor 'Cell' is the prompt itself",
    ),
    "background-is-prompt": (
        {"mode": "distractors", "background": "cell"},
        ["--mode", "distractors", "--background", "cell"],
        "background phrase 'cell' is the prompt itself",
    ),
    "overlap-against-sam-input": (
        {"tiles": "on", "overlap": 600, "sam": "vit_b"},
        ["--tiles", "on", "--overlap", "600", "--sam", "vit_b"],
        r"overlap \(600 px\) must be less than half the tile \(1024 px, SAM's input size\)",
    ),
    "overlap-against-tile": (
        {"tiles": "on", "overlap": 300, "tile_size": 512},
        ["--tiles", "on", "--overlap", "300", "--tile-size", "512"],
        r"overlap \(300\) must be less than half the tile size \(512\)",
    ),
    "template-braces": (
        {"templates": ["a photo of {} {x}"]},
        ["--template", "a photo of {} {x}"],
        "may hold only one '{}' and no other braces",
    ),
    "missing-sam": (
        {"sam": "/no/such/sam.pth"},
        ["--sam", "/no/such/sam.pth"],
        "SAM model '/no/such/sam.pth' is neither a known name",
    ),
    "missing-decoder": (
        {"decoder": "/no/such/decoder.safetensors", "proposals": "guided"},
        ["--decoder", "/no/such/decoder.safetensors", "--proposals", "guided"],
        "decoder file /no/such/decoder.safetensors does not exist",
    ),
    "bad-threshold": (
        {"mode": "threshold", "threshold": 7},
        ["--mode", "threshold", "--threshold", "7"],
        "threshold must be between -1 and 1",
    ),
}

#: Keyword options that are not Segmenter.segment's own (they belong to the segmenter).
SEGMENTER_OWN = {"sam", "clip", "decoder", "templates", "tiles", "overlap", "tile_size"}


def _split(options: dict) -> tuple[dict, dict]:
    tiles = {k: options[k] for k in ("tiles", "overlap", "tile_size") if k in options}
    rest = {k: v for k, v in options.items() if k not in ("tiles", "overlap", "tile_size")}
    if tiles:
        mode = tiles.pop("tiles")
        rest["tile_params"] = TileParams(tiles=mode, **tiles)
    return rest, tiles


def _models(tiny_sam_path, tiny_clip_path) -> dict:
    return {"sam": str(tiny_sam_path), "clip": str(tiny_clip_path), "device": "cpu"}


def _nothing_loaded(isolated_cache) -> None:
    assert default_hub().loads == {"sam": 0, "clip": 0}
    assert not any(isolated_cache.rglob("*.pth"))  # nothing downloaded or attempted


@pytest.mark.parametrize("name", list(CHECKS))
def test_segment_refuses_before_any_model_loads(
    name, tiny_sam_path, tiny_clip_path, isolated_cache
):
    options, _, message = CHECKS[name]
    with pytest.raises(InputError, match=message):  # TileParams may refuse on its own
        options, _ = _split({**_models(tiny_sam_path, tiny_clip_path), **options})
        napari_slip.segment(IMAGE, "cell", **options)
    _nothing_loaded(isolated_cache)


@pytest.mark.parametrize("name", list(CHECKS))
def test_segmenter_segment_refuses_before_any_model_loads(
    name, tiny_sam_path, tiny_clip_path, isolated_cache
):
    options, _, message = CHECKS[name]
    with pytest.raises(InputError, match=message):
        options, _ = _split({**_models(tiny_sam_path, tiny_clip_path), **options})
        own = {k: options.pop(k) for k in list(options) if k in {*SEGMENTER_OWN, "tile_params"}}
        seg = Segmenter(
            own.pop("sam"),
            own.pop("clip"),
            options.pop("device"),
            **own,
        )
        seg.segment(IMAGE, "cell", **options)
    _nothing_loaded(isolated_cache)


@pytest.mark.parametrize("name", list(CHECKS))
def test_batch_refuses_before_any_image(
    name, tiny_sam_path, tiny_clip_path, isolated_cache, tmp_path
):
    options, _, message = CHECKS[name]
    tifffile.imwrite(tmp_path / "a.tif", IMAGE)
    with pytest.raises(InputError, match=message):
        options, _ = _split({**_models(tiny_sam_path, tiny_clip_path), **options})
        napari_slip.batch(tmp_path / "a.tif", tmp_path / "out", "cell", **options)
    _nothing_loaded(isolated_cache)
    assert not (tmp_path / "out").exists()  # refused once, not once per image


@pytest.mark.parametrize("command", ["segment", "batch"])
@pytest.mark.parametrize("name", list(CHECKS))
def test_cli_refuses_before_any_model_loads(
    name, command, tiny_sam_path, tiny_clip_path, isolated_cache, tmp_path, capsys
):
    _, flags, message = CHECKS[name]
    tifffile.imwrite(tmp_path / "a.tif", IMAGE)
    out = tmp_path / ("o.tif" if command == "segment" else "out")
    models = ["--sam", str(tiny_sam_path), "--clip", str(tiny_clip_path), "--device", "cpu"]
    code = main(
        [command, str(tmp_path / "a.tif"), "-p", "cell", "-o", str(out), *models, *flags, "-q"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    import re

    assert re.search(message, err[0]), err[0]
    _nothing_loaded(isolated_cache)
    assert not out.exists()


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda: napari_slip.segment(IMAGE, "cell", colour="red"), "segment()"),
        (lambda: Segmenter().segment(IMAGE, "cell", colour="red"), "segment()"),
        (lambda: napari_slip.batch("x.tif", "out", "cell", colour="red"), "batch()"),
        (lambda: RunConfig.build("cell", "here", colour="red"), "here"),
    ],
    ids=["segment", "Segmenter.segment", "batch", "RunConfig.build"],
)
def test_an_unknown_option_is_one_line_naming_it(call, where, isolated_cache):
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert message.startswith(f"{where} got an unknown option 'colour'; known options:")
    assert "\n" not in message
    _nothing_loaded(isolated_cache)


def test_a_sam_file_whose_input_size_is_known_only_when_loaded_is_checked_then(
    tiny_sam_path, tiny_clip_path, fast_sam_params
):
    # The tiny SAM works at 256 px: an overlap of 130 is over half its tile, known once
    # loaded (the default 128 becomes a quarter of it: see test_tiles).
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        tile_params=TileParams(tiles="on", overlap=130),
    )
    big = np.tile(IMAGE, (4, 4, 1)) if IMAGE.ndim == 3 else np.tile(IMAGE, (4, 4))
    with pytest.raises(
        InputError,
        match=r"overlap \(130 px\) must be less than half the tile "
        r"\(256 px, SAM's input size\)",
    ):
        seg.segment(big, "cell")
    ok = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        tile_params=TileParams(tiles="on", overlap=32),
    )
    assert ok.segment(big, "cell", mode="topk").provenance["proposals"]["source"] == "sam-tiles"


def test_labels_need_no_sam_and_a_config_is_frozen(tiny_clip_path):
    config = RunConfig(
        "cell", Models(sam="/no/such/sam.pth", clip=str(tiny_clip_path)), proposals="labels"
    )
    assert not config.needs_sam  # a missing SAM is no matter when the labels propose
    with pytest.raises(AttributeError):
        config.prompt = "other"  # type: ignore[misc]
    assert config.with_prompt("nucleus").prompt == "nucleus"
    with pytest.raises(InputError, match="prompt is empty"):
        config.with_prompt(" ")
    described = config.describe()
    assert described["models"]["sam"] == "/no/such/sam.pth"
    assert described["selection"] == SelectionParams().as_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": "vit_b"}, "models must be a Models"),
        ({"proposals": "everything"}, "proposals must be one of sam, labels, relevance, guided"),
        ({"selection": {"mode": "best"}}, "selection must be a SelectionParams"),
        ({"device": "gpu"}, "device must be one of auto, cpu, cuda, mps"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"clip": "ViT-B-32"}, "give MODEL:TAG"),
        ({"clip": "/no/clip.safetensors"}, "does not exist"),
    ],
)
def test_config_fields_are_checked(kwargs, message):
    with pytest.raises(InputError, match=message):
        if set(kwargs) <= {"models", "proposals", "selection"}:
            RunConfig("cell", **kwargs)
        else:
            Models(**kwargs)


def test_a_run_reports_the_stages_it_promises(tiny_sam_path, tiny_clip_path, fast_sam_params):
    from napari_slip.core.runtime.progress import STAGES

    image, labels = blobs_image()
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        disk_cache=False,
    )
    events = []
    seg.segment(image, "cell", mode="topk", relevance=True, progress=events.append)
    seg.segment(image, "cell", labels=labels, progress=events.append)
    stages = [e.stage for e in events]
    assert set(stages) <= set(STAGES), set(stages) - set(STAGES)
    assert {"loading models", "embedding", "proposals", "scoring", "selection"} <= set(stages)
    firsts = sorted({s: stages.index(s) for s in set(stages)}.items(), key=lambda x: x[1])
    order = [s for s, _ in firsts]
    assert order == [s for s in STAGES if s in order]  # in the order STAGES gives


def test_exact_is_sams_own_generator():
    from napari_slip.core.params import SamProposalParams

    exact = SamProposalParams.exact()
    assert exact.max_side is None and not exact.skip_covered
    assert exact != SamProposalParams()  # the promise has content: nothing is shrunk
    assert SamProposalParams.exact(points_per_side=8).points_per_side == 8


def test_what_to_find_is_one_object_and_selection_follows_it():
    from napari_slip.core.config import Target

    config = RunConfig.build("cell", distractors="dust, debris", background="", templates=["a {}"])
    assert config.target == Target("cell", ("dust", "debris"), "", ("a {}",))
    assert config.selection.distractors == ("dust", "debris") and config.selection.background == ""
    assert config.prompt == "cell" and config.templates == ("a {}",)
    made = RunConfig(Target("cell", "dust"), selection=SelectionParams(mode="distractors"))
    assert made.selection.distractors == ("dust",)  # taken from the target
    with pytest.raises(InputError, match="once, in the target"):
        RunConfig(Target("cell"), selection=SelectionParams(distractors=("dust",)))
    with pytest.raises(InputError, match="no other braces"):
        Target("cell", templates=("a {} {x}",))
    assert config.with_prompt("nucleus").target.distractors == ("dust", "debris")


def test_reading_a_model_attribute_never_loads_it(tiny_sam_path, tiny_clip_path):
    from napari_slip.core.models.hub import ModelHub

    seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", hub=ModelHub())
    for name in ("sam", "clip"):
        with pytest.raises(InputError, match=f"The {name} model is not loaded yet: call load"):
            getattr(seg, name)
    assert seg.templates == ("a photo of {}.",)  # read from the checkpoint's header
    assert seg.hub.loads == {"sam": 0, "clip": 0}
    events = []
    assert seg.load(progress=events.append) is seg
    assert seg.hub.loads == {"sam": 1, "clip": 1}
    assert [e.message for e in events] == [f"SAM {tiny_sam_path}", f"CLIP {tiny_clip_path}"]
    assert seg.sam.sha256 and seg.clip.sha256  # loaded now: the attributes answer
    seg.load()  # loading again announces and loads nothing
    assert seg.hub.loads == {"sam": 1, "clip": 1}
