"""One configuration per run, passed down whole: a run uses its config's models and
options and writes nothing onto the segmenter; what a result is re-selected or edited
with is the config that made it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.config import RunConfig
from napari_slip.core.errors import InputError
from napari_slip.core.models.hub import ModelHub
from napari_slip.core.params import CropParams, SelectionParams
from napari_slip.core.pipeline.dispatch import ImageInputs, iter_segment_image
from napari_slip.core.pipeline.plane import plane_of
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.pipeline.stack import reselect_stack
from napari_slip.core.runtime.generators import drain
from napari_slip.testing import blobs_image


@pytest.fixture
def segmenter(tiny_sam_path, tiny_clip_path, fast_sam_params):
    return Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        precision="bf16",
        sam_params=fast_sam_params,
        hub=ModelHub(),
    )


def _config(segmenter, **options) -> RunConfig:
    """A run whose precision, crops and templates are not the segmenter's defaults."""
    options = {
        "precision": "fp32",
        "crop_params": CropParams(margin=0.5),
        "templates": ("a micrograph of {}.",),
        "mode": "topk",
        "top_k": 3,
        **options,
    }
    return segmenter.run_config("nucleus", **options)


def test_a_run_takes_its_config_whole_and_sets_nothing_on_the_segmenter(segmenter):
    image, _ = blobs_image()
    before = segmenter.defaults()
    config = _config(segmenter)
    result = drain(iter_segment_image(segmenter, image, config))
    assert result.config is config
    record = result.provenance
    assert record["precision"] == "fp32"
    assert record["crops"]["margin"] == 0.5
    assert record["templates"] == ["a micrograph of {}."]
    # The engine's own settings are what its caller gave, untouched by the run.
    assert segmenter.defaults() == before
    assert segmenter.precision_spec == "bf16"
    assert segmenter.crop_params == CropParams()
    assert segmenter.texts.given is None
    # Its own calls still use its own settings.
    own = segmenter.segment(image, "nucleus", mode="topk", top_k=3)
    assert own.provenance["precision"] == "bf16"
    assert own.provenance["crops"]["margin"] == CropParams().margin
    assert own.provenance["templates"] != ["a micrograph of {}."]


def test_reselection_and_edits_work_with_the_config_that_made_the_result(segmenter):
    image, _ = blobs_image()
    stack = np.stack([image, image[:, ::-1]])
    config = _config(segmenter, link=False)
    result = drain(iter_segment_image(segmenter, stack, config, ImageInputs(axes="ZYX")))
    segmenter.set_models(precision="bf16")  # the engine's defaults differ from the run's
    # Re-selection scores with the run's CLIP (fp32) and templates: before, it took the
    # segmenter's and refused ("embedded with another CLIP").
    again = reselect_stack(segmenter, result, SelectionParams(mode="topk", top_k=1))
    assert again.provenance["precision"] == "fp32"
    assert again.provenance["templates"] == ["a micrograph of {}."]
    assert again.config.selection.top_k == 1 and again.config.models == config.models
    assert len(again.table) == 2  # one object in each of the two planes
    # An edit decodes and embeds with the run's models and crops.
    handle = plane_of(segmenter, result, (0,))
    assert handle.context.precision == "fp32"
    assert handle.crop_params.margin == 0.5


def test_a_runs_scope_is_its_configs(segmenter):
    config = _config(segmenter)
    scope = segmenter.scope(config)
    assert scope.models.precision_spec == "fp32"
    assert scope.crop_params == config.crop_params
    assert scope.texts.templates() == ("a micrograph of {}.",)
    assert segmenter.scope(config).models is scope.models  # kept: once per models
    own = segmenter.scope()
    assert own.models is segmenter.model_set and own.texts is segmenter.texts
    # Text embeddings are shared between scopes (one cache), keyed by what made them.
    assert scope.texts.cache is own.texts.cache


def test_a_selection_names_the_sam_that_made_the_candidates_and_loads_none(
    tiny_sam_path, tiny_clip_path, trained_sam_path, fast_sam_params
):
    """Provenance records the SAM that decoded the candidates, as recorded when they
    were made: a selection after the segmenter switched to another SAM neither names
    nor loads that one (before, it loaded the new SAM, with no progress event, and
    recorded it)."""
    hub = ModelHub()
    seg = Segmenter(
        str(tiny_sam_path), str(tiny_clip_path), "cpu", sam_params=fast_sam_params, hub=hub
    )
    image, _ = blobs_image()
    first = seg.segment(image, "nucleus", mode="topk", top_k=2)
    made_by = first.provenance["sam"]
    assert made_by is not None and made_by["path"].endswith(tiny_sam_path.name)
    seg.set_models(sam=str(trained_sam_path))
    loads = dict(hub.loads)
    again = seg.select(first.candidates, "nucleus", mode="topk", top_k=1)
    assert again.provenance["sam"] == made_by
    assert hub.loads["sam"] == loads["sam"]  # the other SAM was never loaded


def test_one_finishing_step_gives_every_path_the_runs_columns(segmenter):
    """A run, a re-selection, a stack run, a stack re-selection and an edit all end in
    :func:`~napari_slip.core.pipeline.finish.finished`: each table carries the run's
    measurements (intensity and physical size included), and the same object keeps
    the same measured values whichever path measured it."""
    import napari_slip
    from napari_slip.core.pipeline.finish import table_of

    image, _ = blobs_image()
    sizes = {"Y": 0.5, "X": 0.5}
    plane = segmenter.segment(image, "nucleus", mode="topk", top_k=3, pixel_size=sizes)
    columns = set(plane.table.columns)
    physical = {c for c in columns if "um" in c}
    assert physical and any("mean" in c for c in columns)
    again = segmenter.select(
        plane.candidates, "nucleus", mode="topk", top_k=2, config=plane.config
    )
    assert set(again.table.columns) == columns
    stack = segmenter.segment(
        np.stack([image, image]),
        "nucleus",
        mode="topk",
        top_k=3,
        axes="ZYX",
        pixel_size={"Z": 2.0, **sizes},
        link=False,
    )
    stack_columns = set(stack.table.columns)
    assert {"volume_um3"} <= stack_columns and any("mean" in c for c in stack_columns)
    fewer = reselect_stack(segmenter, stack, SelectionParams(mode="topk", top_k=1))
    assert set(fewer.table.columns) == stack_columns
    # An edit of one plane of the stack: measured as a run of that plane measures it
    # (before: no intensity or physical columns unless the caller passed them again).
    editor = napari_slip.edit(stack, segmenter, plane=(0,))
    edited = editor.table().sort_values("id").reset_index(drop=True)
    assert columns - {"prompt"} <= set(edited.columns)
    same = plane.table.sort_values("id").reset_index(drop=True)
    assert list(edited["id"]) == list(same["id"])  # plane 0 is the 2D image
    for column in sorted(physical | {c for c in columns if "mean" in c}):
        assert np.allclose(edited[column], same[column]), column
    assert table_of(stack).equals(stack.table)  # finishing twice changes nothing


def test_one_list_of_options_serves_every_entry_point(segmenter):
    """``config.OPTIONS`` (derived from the dataclasses) is what ``segment()``,
    ``Segmenter.segment``, ``batch()`` and stacks accept; a segmenter's own settings are
    the defaults of a call's."""
    from dataclasses import fields

    from napari_slip.core.batches import BATCH_OPTIONS
    from napari_slip.core.config import IMAGE_OPTIONS, OPTIONS, Models
    from napari_slip.core.params import NormalisationParams

    for name in (*SelectionParams.names(), *NormalisationParams.names()):
        assert name in OPTIONS
    assert {f.name for f in fields(Models)} <= set(OPTIONS)
    from napari_slip.core.pipeline.dispatch import SEGMENT_OPTIONS

    assert set(SEGMENT_OPTIONS) == set(OPTIONS) | set(IMAGE_OPTIONS)
    assert set(BATCH_OPTIONS) == set(OPTIONS) - {"sam", "clip", "device", "relevance"} | {
        "axes",
        "pixel_size",
        "threads",
    }
    image, _ = blobs_image()
    before = segmenter.defaults()
    result = segmenter.segment(
        image, "nucleus", mode="topk", top_k=2, precision="fp32", crop_params=CropParams(margin=0)
    )
    assert result.provenance["precision"] == "fp32" and result.provenance["crops"]["margin"] == 0
    assert segmenter.defaults() == before
    with pytest.raises(InputError, match="unknown_option"):
        segmenter.segment(image, "nucleus", unknown_option=1)
