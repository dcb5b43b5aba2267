"""Bad inputs in napari: the console call raises one clear line, the widget shows one
line (and logs the traceback); neither adds, removes or changes a layer."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import napari_slip
from napari_slip.core.errors import SlipError
from napari_slip.testing import blobs_image

pytestmark = pytest.mark.gui


@pytest.fixture
def scene(slip):
    viewer, widget, run = slip
    image, labels = blobs_image()
    viewer.add_image(image, name="blobs")
    viewer.add_labels(labels, name="truth")
    viewer.add_image(np.zeros((3, 20, 20)), name="small stack")
    viewer.add_points([[1, 1]], name="points")
    return viewer, widget, run


def _state(viewer):
    return [(x.name, type(x).__name__, np.asarray(x.data).tobytes()) for x in viewer.layers]


CONSOLE_CASES = {
    "no such image": ({"image": "nope"}, "No layer named 'nope'"),
    "points as image": ({"image": "points"}, "must be a Image layer"),
    "no such proposals": ({"image": "blobs", "proposals": "nope"}, "No layer named 'nope'"),
    "image as proposals": ({"image": "blobs", "proposals": "blobs"}, "must be a Labels layer"),
    "proposals wrong shape": (
        {"image": "small stack", "proposals": "truth"},
        "the image needs",
    ),
    "empty prompt": ({"image": "blobs", "prompt": " "}, "Type what to segment"),
    "threshold 7": ({"image": "blobs", "threshold": 7.0}, "between -1 and 1"),
    "distractor is prompt": (
        {"image": "blobs", "proposals": "truth", "mode": "distractors", "distractors": "cell"},
        "is the prompt itself",
    ),
    "channel axis 5": ({"image": "small stack", "channel_axis": 5}, "Channel axis 5"),
    "output not labels": ({"image": "blobs", "output": "blobs"}, "must be a Labels layer"),
    "ambiguous image": ({}, "Select an Image layer or pass image="),
    "unknown option": (
        {"image": "blobs", "colour": "red"},
        "segment_in_viewer\\(\\) got an unknown option 'colour'; known options:",
    ),
    "background is prompt": (
        {"image": "blobs", "mode": "distractors", "distractors": "dust"},
        "background phrase 'background' is the prompt itself",
        "background",
    ),
    "overlap against SAM's input": (
        {"image": "blobs", "sam": "vit_b", "tiles": "on", "tile_params": None, "overlap": 600},
        r"overlap \(600 px\) must be less than half the tile \(1024 px",
    ),
    "template braces": ({"image": "blobs", "templates": ["a {} {x}"]}, "no other braces"),
    "missing decoder": (
        {"image": "blobs", "decoder": "/no/such.safetensors", "proposals": "guided"},
        "decoder file /no/such.safetensors does not exist",
    ),
    "missing SAM": ({"image": "blobs", "sam": "/no/sam.pth"}, "neither a known name"),
}


@pytest.mark.parametrize("name", sorted(CONSOLE_CASES))
def test_console_call_bad_input(scene, tiny_sam_path, tiny_clip_path, name):
    viewer, _, _ = scene
    from napari_slip.core.models.hub import default_hub
    from napari_slip.core.params import TileParams

    options, pattern, *prompt = CONSOLE_CASES[name]
    options = {"sam": str(tiny_sam_path), **options}
    prompt = prompt[0] if prompt else options.pop("prompt", "cell")
    if "overlap" in options:
        options["tile_params"] = TileParams(overlap=options.pop("overlap"))
    viewer.layers.selection.clear()
    before = _state(viewer)
    with pytest.raises(SlipError) as info:
        napari_slip.segment_in_viewer(
            viewer, prompt, clip=str(tiny_clip_path), device="cpu", **options
        )
    assert "\n" not in str(info.value) and re.search(pattern, str(info.value)), str(info.value)
    assert _state(viewer) == before
    assert default_hub().loads == {"sam": 0, "clip": 0}  # refused before any model loads


WIDGET_CASES = {
    "empty prompt": ({"prompt": ""}, "Type what to segment"),
    "channels text": ({"channel_axis": 0, "channels": "a,b"}, "comma-separated numbers"),
    "proposals wrong shape": ({"image": "small stack", "proposals": "truth"}, "the image needs"),
    "distractor is prompt": (
        {"proposals": "truth", "mode": "distractors", "distractors": "Cell"},
        "is the prompt itself",
    ),
}


@pytest.mark.parametrize("name", sorted(WIDGET_CASES))
def test_widget_bad_input_is_one_line_and_logged(scene, qtbot, caplog, name):
    viewer, widget, run = scene
    settings, pattern = WIDGET_CASES[name]
    widget.image.value = viewer.layers[settings.get("image", "blobs")]
    widget.prompt.value = settings.get("prompt", "cell")
    if "proposals" in settings:
        widget.proposals.value = viewer.layers[settings["proposals"]]
    if "channel_axis" in settings:
        widget.image.value = viewer.layers["small stack"]
        widget.channel_axis.value = settings["channel_axis"]
        widget.channels.value = settings["channels"]
    if "mode" in settings:
        widget.mode.value = settings["mode"]
        widget.distractors.value = settings["distractors"]
    before = _state(viewer)
    with caplog.at_level(logging.ERROR, logger="napari_slip"):
        run()
    status = widget.status.value
    assert status.startswith("Error: ") and "\n" not in status
    assert re.search(pattern, status), status
    assert _state(viewer) == before
    records = [r for r in caplog.records if r.name == "napari_slip"]
    assert records and records[-1].exc_info is not None  # the traceback, for a bug report
