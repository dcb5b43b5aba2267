"""Proposals from label images and from SAM's automatic masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_slip.core.errors import InputError
from napari_slip.core.models.promptable import PromptableSam
from napari_slip.core.models.sam import load_sam
from napari_slip.core.params import SamProposalParams
from napari_slip.core.pipeline.proposals import proposals_from_labels, sam_proposals
from napari_slip.core.runtime.generators import drain
from napari_slip.testing import blobs_image


def test_each_label_is_one_proposal_with_its_exact_mask():
    _, labels = blobs_image()
    labels[labels == 2] = 7  # ids need not be consecutive
    props = proposals_from_labels(labels)
    assert props.source_ids.tolist() == [1, 3, 4, 7]
    for i, value in enumerate(props.source_ids):
        assert np.array_equal(props.full_mask(i), labels == value)
    assert props.areas.tolist() == [int((labels == v).sum()) for v in props.source_ids]


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros((2, 8, 8), int), "2D"),
        (np.full((8, 8), 0.5), "integers"),
        (np.full((8, 8), -1), "negative"),
        (np.zeros((9, 9), int), "shape"),
    ],
)
def test_bad_label_images_are_refused(labels, match):
    with pytest.raises(InputError, match=match):
        proposals_from_labels(labels, image_shape=(8, 8))


def test_sam_proposals_are_cropped_binary_masks(tiny_sam_path, fast_sam_params):
    sam, _ = load_sam(tiny_sam_path)
    image, _ = blobs_image()
    rgb = np.repeat((image // 16).astype(np.uint8)[..., None], 3, axis=-1)
    events = []
    props = drain(
        sam_proposals(PromptableSam(sam), PromptableSam(sam).embed(rgb), fast_sam_params),
        events.append,
    )
    assert events[-1].done == events[-1].total == 16  # a 4 x 4 grid of points
    assert len(props) >= 1 and props.shape == (96, 96)
    for box, mask in zip(props.boxes, props.masks, strict=True):
        y0, x0, y1, x1 = box
        assert mask.dtype == bool and mask.shape == (y1 - y0, x1 - x0)
        # The box is tight: every edge row/column of the crop holds mask pixels.
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
        assert mask.sum() > fast_sam_params.min_area


def test_sam_quality_filters_apply(tiny_sam_path):
    sam, _ = load_sam(tiny_sam_path)
    rgb = np.zeros((64, 64, 3), np.uint8)
    strict = SamProposalParams(points_per_side=2, pred_iou_thresh=1.0, stability_score_thresh=1.0)
    assert (
        len(drain(sam_proposals(PromptableSam(sam), PromptableSam(sam).embed(rgb), strict))) == 0
    )
    with pytest.raises(InputError, match="pred_iou_thresh"):
        SamProposalParams(pred_iou_thresh=1.5)


def test_no_candidates_says_which_filter_dropped_how_many(tiny_sam_path, tiny_clip_path):
    """Nothing found because SAM's filters dropped every mask: the message counts each
    filter's drops and says what to try (issue: 'Nothing found' ended the conversation)."""
    from napari_slip import Segmenter

    image, _ = blobs_image()
    sam, _ = load_sam(tiny_sam_path)
    promptable = PromptableSam(sam)
    strict = SamProposalParams(
        points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=1.0, min_area=10
    )
    rgb = np.dstack([(image / image.max() * 255).astype(np.uint8)] * 3)
    props = drain(sam_proposals(promptable, promptable.embed(rgb), strict))
    funnel = props.funnel
    assert funnel["points"] == 9 and funnel["masks"] == 27
    dropped = funnel["below_iou"] + funnel["unstable"] + funnel["too_small"]
    assert dropped + funnel["overlapping"] + funnel["kept"] == funnel["masks"]
    seg = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=SamProposalParams(points_per_side=3),
    )  # SAM's own filters
    result = seg.segment(image, "cell")
    assert not result.found
    assert "27 masks" in result.message and "below pred_iou_thresh 0.88" in result.message
    assert "Lower pred_iou_thresh or stability_score_thresh (sam_params)" in result.message
    # Each surface names the filters as its user sets them.
    cli, widget = result.message_for("cli"), result.message_for("widget")
    assert "Lower --pred-iou-thresh or --stability-score-thresh, try" in cli
    assert "below --pred-iou-thresh 0.88" in cli and "Advanced" not in cli
    assert "Lower Min IoU or Min stability (Advanced settings)" in widget
    stack = seg.segment(image[None], "cell", axes="ZYX")
    assert "--stability-score-thresh" in stack.message_for("cli")


def test_the_command_lines_nothing_found_names_its_flags(
    tmp_path, tiny_sam_path, tiny_clip_path, capsys
):
    import tifffile

    from napari_slip.cli import main

    image, _ = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    args = ["segment", str(tmp_path / "img.tif"), "--prompt", "cell", "-o"]
    args += [str(tmp_path / "out.tif"), "--sam", str(tiny_sam_path), "--clip"]
    args += [str(tiny_clip_path), "--device", "cpu", "--points-per-side", "3"]
    main(args)
    err = capsys.readouterr().err
    assert "--pred-iou-thresh" in err and "--stability-score-thresh" in err
    assert "Advanced settings" not in err and "Min IoU" not in err


def test_min_area_drops_only_masks_smaller_than_it(trained_sam_path):
    """A mask of exactly ``min_area`` pixels stays ("smaller than this" is dropped)."""
    from napari_slip.core.models.promptable import PromptableSam
    from napari_slip.core.models.sam import load_sam
    from napari_slip.core.params import SamProposalParams
    from napari_slip.core.pipeline.proposals import sam_proposals
    from napari_slip.core.runtime.generators import drain
    from napari_slip.testing.scenes import scenes
    from napari_slip.testing.trained_sam import FIXTURE_AMG

    sam = PromptableSam(load_sam(trained_sam_path)[0])
    rgb = scenes(1, seed=21)[0][0]
    embedding = sam.embed(rgb)
    every = drain(sam_proposals(sam, embedding, SamProposalParams(**FIXTURE_AMG)))
    areas = sorted(int(m.sum()) for m in every.masks)
    smallest = areas[0]
    at = drain(sam_proposals(sam, embedding, SamProposalParams(**FIXTURE_AMG, min_area=smallest)))
    assert sorted(int(m.sum()) for m in at.masks) == areas
    above = SamProposalParams(**FIXTURE_AMG, min_area=smallest + 1)
    assert smallest not in [
        int(m.sum()) for m in drain(sam_proposals(sam, embedding, above)).masks
    ]


def test_max_area_share_drops_masks_over_that_share_of_the_image(
    trained_sam_path, tmp_path, tiny_sam_path, tiny_clip_path
):
    """A new option, end to end: its field (``SamProposalParams.max_area_share``), its
    use (SAM's filters), and what follows from the field alone: the command line's
    flag, the provenance, the batch hash (see test_batch, test_widget)."""
    import json

    import tifffile

    from napari_slip.cli import main
    from napari_slip.testing.scenes import scenes
    from napari_slip.testing.trained_sam import FIXTURE_AMG

    sam = PromptableSam(load_sam(trained_sam_path)[0])
    rgb = scenes(1, seed=21)[0][0]
    embedding = sam.embed(rgb)
    every = drain(sam_proposals(sam, embedding, SamProposalParams(**FIXTURE_AMG)))
    assert every.funnel["too_large"] == 0  # the default keeps every size
    pixels = rgb.shape[0] * rgb.shape[1]
    largest = max(int(m.sum()) for m in every.masks)
    share = (largest - 1) / pixels
    capped = drain(
        sam_proposals(sam, embedding, SamProposalParams(**FIXTURE_AMG, max_area_share=share))
    )
    assert len(capped) and max(int(m.sum()) for m in capped.masks) <= share * pixels
    funnel = capped.funnel
    assert funnel["too_large"] >= 1 and funnel["max_area_share"] == share
    dropped = funnel["below_iou"] + funnel["unstable"] + funnel["too_small"]
    dropped += funnel["too_large"]
    assert dropped + funnel["overlapping"] + funnel["kept"] == funnel["masks"]
    with pytest.raises(InputError, match="max_area_share"):
        SamProposalParams(max_area_share=0)
    # The command line's flag reaches SAM's grid, and the provenance records it.
    image, _ = blobs_image()
    tifffile.imwrite(tmp_path / "img.tif", image)
    args = ["segment", str(tmp_path / "img.tif"), "--prompt", "cell", "-o"]
    args += [str(tmp_path / "out.tif"), "--sam", str(tiny_sam_path), "--clip"]
    args += [str(tiny_clip_path), "--device", "cpu", "--points-per-side", "3", "-q"]
    args += ["--max-area-share", "0.25", "--provenance", str(tmp_path / "p.json")]
    main(args)
    record = json.loads((tmp_path / "p.json").read_text())
    assert record["proposals"]["max_area_share"] == 0.25


def test_every_named_kind_of_proposals_is_one_row_and_one_factory(
    tiny_sam_path, tiny_clip_path, monkeypatch
):
    """Choices, checks, help and provenance flags derive from ``PROPOSAL_KINDS``; each
    kind has its factory in ``collect.SOURCES``, whose source says what the row says."""
    import argparse

    from napari_slip.cli._options import _segment_options
    from napari_slip.core.config import RunConfig
    from napari_slip.core.pipeline.collect import SOURCES, make_source
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.proposal_kinds import PROPOSAL_KINDS, ProposalKind, kinds_where

    assert set(SOURCES) == set(PROPOSAL_KINDS)
    seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu")
    scope = seg.scope()
    labels = np.zeros((8, 8), np.int32)
    labels[2:5, 2:5] = 1
    for name, kind in PROPOSAL_KINDS.items():
        source = make_source(
            name,
            None,
            scope.sam_params,
            scope.tile_params,
            prompt="cell",
            labels=labels,
            context=scope.context,
        )
        assert source.needs_sam == kind.needs_sam, name
        assert bool(getattr(source, "uses_map", False)) == kind.uses_map, name
        config = RunConfig("cell", proposals=name)
        assert config.needs_sam == kind.needs_sam
    assert kinds_where(per_image=False) == ("sam", "relevance", "guided")
    # A new row is a new choice of the command line and a known name of the config.
    extra = ProposalKind("peaks", "local maxima of the image (no SAM)", needs_sam=False)
    monkeypatch.setitem(PROPOSAL_KINDS, "peaks", extra)
    parser = argparse.ArgumentParser()
    _segment_options(parser)
    assert "peaks" in parser._option_string_actions["--proposals"].choices
    assert RunConfig("cell", proposals="peaks").needs_sam is False
    with pytest.raises(InputError, match="proposals must be one of sam, labels"):
        RunConfig("cell", proposals="nothing")
