"""bf16 on a CPU decodes with a bf16 copy of SAM's mask decoder (no casts under
autocast): the same masks as fp32 on the trained fixture, within bf16's rounding, and
the fp32 model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_slip.core.models import promptable
from napari_slip.core.models.promptable import Bf16Decoder, PromptableSam
from napari_slip.core.models.sam import load_sam
from napari_slip.core.params import SamProposalParams
from napari_slip.core.pipeline.proposals import sam_proposals
from napari_slip.core.runtime.generators import drain
from napari_slip.testing.scenes import scenes
from napari_slip.testing.trained_sam import FIXTURE_AMG

#: bf16's machine epsilon (7 stored mantissa bits); numpy has no bf16 dtype.
BF16_EPS = 2.0**-7


@pytest.fixture(scope="module")
def fixture_sam(trained_sam_path):
    model, _ = load_sam(trained_sam_path)
    return PromptableSam(model)


def _iou(a, b) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_the_bf16_copy_is_made_once_and_leaves_fp32_alone(fixture_sam):
    model, dtype = fixture_sam._decoder("bf16")
    assert isinstance(model, Bf16Decoder) and dtype is torch.bfloat16
    assert fixture_sam._decoder("bf16")[0] is model  # made once
    weights = list(model.mask_decoder.parameters())
    assert weights and all(w.dtype == torch.bfloat16 for w in weights)
    assert all(p.dtype == torch.float32 for p in fixture_sam.model.parameters())
    assert fixture_sam._decoder("fp32") == (fixture_sam.model, None)


def test_bf16_decode_matches_fp32_and_autocast(fixture_sam, monkeypatch):
    """A grid of points on a fixture scene: predicted IoUs within a few bf16 steps of
    fp32's (they are compared with SAM's 0.88 filter), masks nearly the same pixels;
    at least as close to fp32 as autocast's bf16 was."""
    rgb = scenes(1, seed=13)[0][0]
    emb = fixture_sam.embed(rgb, "fp32")  # one embedding: the decoder alone compared
    points = np.random.default_rng(2).uniform(0, rgb.shape[1], size=(48, 2))
    exact_masks, exact_iou = fixture_sam.decode_points(emb, points, "fp32")
    native_masks, native_iou = fixture_sam.decode_points(emb, points, "bf16")
    monkeypatch.setattr(promptable, "NATIVE_BF16_DECODER", False)
    auto_masks, auto_iou = PromptableSam(fixture_sam.model).decode_points(emb, points, "bf16")
    assert native_masks.dtype == native_iou.dtype == torch.float32
    assert not torch.equal(native_iou, auto_iou)  # the two paths differ in rounding...
    for iou in (native_iou, auto_iou):  # ...both a few bf16 steps from fp32 (measured: 2, 4)
        assert float((iou - exact_iou).abs().max()) <= 6 * BF16_EPS
    exact = (exact_masks > 0).numpy()
    ious = {
        name: np.mean(
            [_iou(exact[i, k], (m[i, k] > 0).numpy()) for i in range(48) for k in range(3)]
        )
        for name, m in (("native", native_masks), ("autocast", auto_masks))
    }
    assert ious["native"] >= 0.97
    assert ious["native"] >= ious["autocast"] - 0.01


def test_bf16_proposals_match_fp32s_on_the_fixture(fixture_sam):
    """The grid's proposals through SAM's filters: nearly every fp32 object found in
    bf16 with IoU >= 0.95 (a mask near the filters' thresholds may flip either way)."""
    params = SamProposalParams(**FIXTURE_AMG)
    matched = total = 0
    for rgb in scenes(3, seed=41)[0]:
        emb = fixture_sam.embed(rgb, "fp32")
        exact = drain(sam_proposals(fixture_sam, emb, params, "fp32"))
        fast = drain(sam_proposals(fixture_sam, emb, params, "bf16"))
        assert abs(len(exact) - len(fast)) <= max(1, len(exact) // 10)
        for i in range(len(exact)):
            best = max(
                (_iou(exact.full_mask(i), fast.full_mask(j)) for j in range(len(fast))),
                default=0.0,
            )
            matched += best >= 0.95
        total += len(exact)
    assert total >= 20 and matched >= 0.9 * total
