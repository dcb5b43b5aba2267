"""The fast path gives SAM's answer: fidelity to SAM's own generator, bf16 vs fp32,
fewer decoded points, and embeddings reused from disk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_slip.core.models.promptable import PromptableSam
from napari_slip.core.models.sam import load_sam
from napari_slip.core.params import SamProposalParams
from napari_slip.core.pipeline.proposals import sam_proposals
from napari_slip.core.pipeline.segmenter import Segmenter
from napari_slip.core.runtime.generators import drain
from napari_slip.core.runtime.perf import resolve_precision
from napari_slip.testing import blobs_image

from ..floats import assert_close


def _rgb():
    image, _ = blobs_image(128, seed=3)
    return np.repeat((image // 16).astype(np.uint8)[..., None], 3, axis=-1)


def _generate(sam, rgb, params, precision="fp32"):
    """SAM's automatic masks through the promptable interface."""
    promptable = PromptableSam(sam)
    return drain(sam_proposals(promptable, promptable.embed(rgb, precision), params, precision))


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


def test_fp32_generator_matches_segment_anything_exactly(tiny_sam_path):
    from segment_anything import SamAutomaticMaskGenerator

    sam, _ = load_sam(tiny_sam_path)
    rgb = _rgb()
    options = {
        "points_per_side": 4,
        "points_per_batch": 8,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "box_nms_thresh": 0.7,
    }
    reference = SamAutomaticMaskGenerator(sam, **options).generate(rgb)
    ours = _generate(sam, rgb, SamProposalParams.exact(**options))
    assert len(reference) >= 1 and len(ours) == len(reference)
    theirs = sorted((r["segmentation"] for r in reference), key=lambda m: -m.sum())
    mine = sorted((ours.full_mask(i) for i in range(len(ours))), key=lambda m: -m.sum())
    for a, b in zip(theirs, mine, strict=True):
        assert np.array_equal(a, b)


def test_bf16_masks_and_selection_match_fp32(tiny_sam_path, tiny_clip_path, fast_sam_params):
    sam, _ = load_sam(tiny_sam_path)
    rgb = _rgb()
    params = SamProposalParams.exact(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    exact = _generate(sam, rgb, params, "fp32")
    fast = _generate(sam, rgb, params, "bf16")
    # 16 points x 3 masks, nothing filtered but empty masks.
    assert len(exact) >= 10 and abs(len(exact) - len(fast)) <= 2
    ious = [
        max(_iou(exact.full_mask(i), fast.full_mask(j)) for j in range(len(fast)))
        for i in range(len(exact))
    ]
    assert np.mean(ious) >= 0.95

    image, labels = blobs_image()
    results = {}
    for precision in ("fp32", "bf16"):
        seg = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", precision=precision)
        results[precision] = seg.segment(image, "cell", labels=labels, mode="topk", top_k=4)
    a, b = results["fp32"].table, results["bf16"].table
    assert a["source_id"].iloc[0] == b["source_id"].iloc[0]  # the same best object
    np.testing.assert_allclose(a["similarity"], b["similarity"], atol=0.02)
    assert results["bf16"].provenance["precision"] == "bf16"


def test_skipping_covered_points_decodes_fewer(tiny_sam_path):
    sam, _ = load_sam(tiny_sam_path)
    rgb = _rgb()
    common = {
        "points_per_side": 8,
        "points_per_batch": 16,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "min_area": 20,
    }
    full = _generate(sam, rgb, SamProposalParams.exact(**common))
    fast = _generate(sam, rgb, SamProposalParams(skip_covered=True, **common))
    assert full.decoded_points == 64
    assert fast.decoded_points < full.decoded_points
    assert len(fast) >= 1


def test_embeddings_are_reused_from_disk(
    tiny_sam_path, tiny_clip_path, fast_sam_params, isolated_cache
):
    image, _ = blobs_image()
    first = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", sam_params=fast_sam_params)
    a = first.segment(image, "cell", mode="topk", top_k=3)
    assert len(list((isolated_cache / "embeddings").glob("*.safetensors"))) == 1
    fresh = Segmenter(str(tiny_sam_path), str(tiny_clip_path), "cpu", sam_params=fast_sam_params)
    calls = []
    fresh.sam.model.image_encoder.register_forward_hook(lambda *x: calls.append(1))
    b = fresh.segment(image, "cell", mode="topk", top_k=3)
    assert calls == [] and fresh.stats["sam_embeddings_from_disk"] == 1
    assert np.array_equal(a.labels, b.labels)
    off = Segmenter(
        str(tiny_sam_path),
        str(tiny_clip_path),
        "cpu",
        sam_params=fast_sam_params,
        disk_cache=False,
    )
    off.segment(image[::-1].copy(), "cell")
    assert len(list((isolated_cache / "embeddings").glob("*.safetensors"))) == 1


def test_disk_cache_is_pruned_to_its_limit(tmp_path):
    from napari_slip.core.pipeline.embedding_cache import prune

    for i in range(5):
        (tmp_path / f"{i}.safetensors").write_bytes(b"x" * 1000)
    prune(tmp_path, limit_bytes=2500)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) in ("bf16", "fp32")
    assert resolve_precision("int8", cpu) == "int8"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int4", cpu)
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_the_machine_line_says_what_auto_gives_and_why():
    """``auto``'s CPU precision follows the CPU's flags as /proc/cpuinfo lists them,
    and the line printed by ``napari-slip models`` says which and why."""
    from pathlib import Path

    from napari_slip.core.runtime import perf

    info = perf.cpu_info()
    listed = set(Path("/proc/cpuinfo").read_text().split())
    assert info["flags"] == [f for f in perf.CPU_FLAGS if f in listed] and info["known"]
    native = "avx512_bf16" in listed or "amx_bf16" in listed
    assert perf.resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    line = perf.describe_machine()
    assert info["model"] in line
    assert f"gives {'bf16' if native else 'fp32'} (" in line


def test_an_unknown_cpu_gets_fp32(monkeypatch):
    """Without /proc/cpuinfo (macOS, Windows) the CPU's features are unknown: fp32."""
    from napari_slip.core.runtime import perf

    def no_cpuinfo(*args, **kwargs):
        raise OSError("no /proc/cpuinfo on this system")

    perf.cpu_info.cache_clear()
    perf.cpuinfo_text.cache_clear()
    monkeypatch.setattr(perf, "open", no_cpuinfo, raising=False)
    try:
        assert perf.cpu_info()["flags"] == [] and not perf.cpu_info()["known"]
        assert "features: unknown" in perf.describe_machine()
        assert perf.resolve_precision("auto", torch.device("cpu")) == "fp32"
        assert "gives fp32" in perf.describe_machine()
    finally:
        monkeypatch.undo()
        perf.cpu_info.cache_clear()
        perf.cpuinfo_text.cache_clear()


def test_allocator_tuning_is_opt_in_and_can_be_refused(monkeypatch):
    import subprocess
    import sys

    code = (
        "import napari_slip.core.runtime.perf as p, napari_slip;"
        "from napari_slip.testing import blobs_image;"
        "s = napari_slip.Segmenter('a.pth', 'b.safetensors', 'cpu');"
        "print(p._TUNED, p.tune_allocator(), p._TUNED)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]  # building a Segmenter: no tuning
    env = {**__import__("os").environ, "NAPARI_SLIP_MALLOC": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.fixture(scope="module")
def sams_width_sam_path(tmp_path_factory):
    """A tiny SAM whose prompt encoder and mask decoder have SAM's real width (256), so
    the decoder folds the image-side projections as it does for vit_b/vit_l/vit_h."""
    from napari_slip.core.models.sam import build_sam
    from napari_slip.testing.tiny import TINY_SAM_FULL_WIDTH

    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("sam256") / "sam256.pth"
    torch.save(build_sam(TINY_SAM_FULL_WIDTH).state_dict(), path)
    return path


@pytest.mark.parametrize("width", [32, 256])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shared_first_layer_decoder_equals_sams_decoder(
    tiny_sam_path, sams_width_sam_path, width, layout
):
    """Our decoder (shared first-layer projections, maps taken channels last, at SAM's
    width the image-side projections folded into the prompt's tokens) gives the masks
    and IoUs of SAM's own decoder modules, whichever layout the embedding comes in (the
    disk cache gives NCHW, SAM's encoder channels last)."""
    import copy

    from napari_slip.core.models import fast
    from napari_slip.core.models.promptable import decode_points

    sam, _ = load_sam(sams_width_sam_path if width == 256 else tiny_sam_path)
    assert sam.prompt_encoder.embed_dim == width
    own = copy.deepcopy(sam)
    fast.use_fast_attention(own, enabled=False)
    features = PromptableSam(sam).embed(_rgb()).features.contiguous(memory_format=layout)
    pts = torch.tensor([[[10.0, 20.0]], [[100.0, 50.0]], [[200.0, 240.0]]])
    labels = torch.ones(3, 1, dtype=torch.int64)
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=(pts, labels), boxes=None, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        theirs = own.mask_decoder(
            image_embeddings=features,
            image_pe=pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        ours = decode_points(sam, features, pe, sparse, dense)
    assert theirs[0].abs().max() > 0.1  # masks with something in them
    # The decoder's two-way transformer attends over the image's tokens.
    tokens = features.shape[-2] * features.shape[-1]
    assert_close(ours[0], theirs[0], terms=tokens, depth=4)
    assert_close(ours[1], theirs[1], terms=tokens, depth=4)


def test_big_images_run_sam_on_a_smaller_copy(tiny_sam_path, tiny_clip_path):
    from napari_slip.core.pipeline.proposals import Proposals, upscale_proposals

    image, _ = blobs_image(96)
    big = np.kron(image, np.ones((5, 5), dtype=image.dtype))  # 480 x 480
    params = SamProposalParams(
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        min_area=20,
        max_side=120,
    )
    seg = Segmenter(
        str(tiny_sam_path), str(tiny_clip_path), "cpu", sam_params=params, precision="fp32"
    )
    result = seg.segment(big, "cell", mode="topk", top_k=2)
    [session] = seg.workspace.sessions.values()
    [embedding] = session.embeddings.values()
    assert embedding.original_size == (120, 120)  # SAM saw the small copy
    assert result.labels.shape == (480, 480) and result.n_objects >= 1
    for row in result.table.itertuples():
        assert row.area == int((result.labels == row.id).sum())
        assert row.bbox_y1 <= 480 and row.bbox_x1 <= 480

    small = np.zeros((4, 6), bool)
    small[1:3, 2:5] = True
    props = Proposals(
        (4, 6), np.array([[1, 2, 3, 5]]), [small[1:3, 2:5]], np.ones(1), np.zeros(1, int)
    )
    up = upscale_proposals(props, (8, 12))
    assert np.array_equal(up.full_mask(0), np.kron(small, np.ones((2, 2), bool)))


def _in_fresh_process(code: str, **env) -> list[str]:
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
        timeout=300,
    )
    return out.stdout.split()


SCOPE_CODE = """
import numpy as np, napari_slip
from napari_slip.core.runtime import perf
from napari_slip.testing import blobs_image
print(perf._TUNED, perf.allocator_scoped())
seen = []
image, labels = blobs_image()
napari_slip.segment(image, "a blob", sam={sam!r}, clip={clip!r}, labels=labels,
                    progress=lambda e: seen.append(perf.allocator_scoped()))
print(bool(seen) and all(seen), perf.allocator_scoped(), perf._TUNED)
"""


def test_the_plain_api_tunes_the_allocator_for_its_run_only(tiny_sam_path, tiny_clip_path):
    """segment() as a notebook calls it: the allocator is tuned while the run works
    (no fresh mmap per large tensor) and given back after; nothing at import."""
    code = SCOPE_CODE.format(sam=str(tiny_sam_path), clip=str(tiny_clip_path))
    assert _in_fresh_process(code) == ["False", "False", "True", "False", "False"]
    # Opted out: never tuned.
    off = _in_fresh_process(code, NAPARI_SLIP_MALLOC="0")
    assert off == ["False", "False", "False", "False", "False"]


def test_nested_and_concurrent_runs_share_one_scope(monkeypatch):
    import sys
    import threading

    from napari_slip.core.runtime import perf

    if not sys.platform.startswith("linux"):
        pytest.skip("the allocator is glibc's: Linux only")
    monkeypatch.setattr(perf, "_TUNED", False)  # as in a notebook (CLI tests tune)
    inside = threading.Event()
    leave = threading.Event()

    def other_run():
        with perf.heavy_work_allocator():
            inside.set()
            leave.wait(10)

    with perf.heavy_work_allocator():
        assert perf.allocator_scoped()
        thread = threading.Thread(target=other_run)
        thread.start()
        assert inside.wait(10)
    assert perf.allocator_scoped()  # the other run still works
    leave.set()
    thread.join(10)
    assert not perf.allocator_scoped()
