"""The fp32 path, change by change, against the matrix-multiplication floor (by hand).

    python benchmarks/bench_fp32.py [--json benchmarks/results/NAME.json]

SAM vit_b at 1,024 px with random weights (the cost does not depend on the values),
fp32, this machine's threads, everything in one process and one run, so the ratios
compare like with like. Printed first: the CPU's features and the precision that
``precision="auto"`` picks on it, so no figure is read without its machine.

- floor: the encoder's multiply-adds (counted by torch's FLOP counter on SAM's own
  modules) at the best rate of plain fp32 matrix products of the encoder's shapes,
  measured in the same run.
- encoder: SAM's own attention against the fused path with the bias as a mask, then
  with global attention blocked head by head, then with windowed blocks projecting
  only the image's tokens, then with the blocks' residual stream contiguous
  (napari-slip's default: all four), int8, and MobileSAM's
  light TinyViT encoder and EfficientViT-SAM-L0's (random weights at their published
  sizes; the latter sees 512 px).
- decoder, per point (batches of 16 points on one embedding): SAM's attention; the
  fused path with the image side's projections computed, then folded into the
  prompt's tokens (the default); and the fused path with the mask head skipped for
  masks below SAM's default IoU filter, with the image maps NCHW, then channels last,
  then with the projections folded (the default).
  With random weights *no* mask passes that filter (the lower bound of the mask
  stage's cost); with every mask passing, the cost is the fused path's (the upper
  bound).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def cpu_features() -> dict:
    """The CPU's model and speed-relevant features (the library's own reading)."""
    from napari_slip.core.runtime.perf import cpu_info

    return dict(cpu_info())


def best_time(fn, repeats: int = 2) -> float:
    fn()  # warm up (allocator, kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_slip.core.models import fast, promptable
    from napari_slip.core.models.fast import use_fast_attention
    from napari_slip.core.models.promptable import ImageEmbedding, PromptableSam
    from napari_slip.core.models.sam import SamConfig, build_sam
    from napari_slip.core.runtime.perf import resolve_precision, tune_allocator

    tune_allocator()
    torch.manual_seed(0)
    machine = {
        **cpu_features(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "auto_precision": resolve_precision("auto", torch.device("cpu")),
    }
    print(json.dumps(machine))
    model = build_sam(SamConfig())
    encoder = model.image_encoder
    x = torch.randn(1, 3, 1024, 1024)
    rows = []
    with torch.no_grad():
        use_fast_attention(model, enabled=False)
        with FlopCounterMode(display=False) as counter:
            encoder(x)
        flops = counter.get_total_flops()
        rates = []
        for m, k, n in ((4096, 768, 2304), (4096, 768, 3072), (4096, 3072, 768)):
            a, b = torch.randn(m, k), torch.randn(k, n)
            rates.append(2 * m * k * n / best_time(lambda a=a, b=b: a @ b, 5))
        rate = max(rates)
        floor = flops / rate
        rows.append(
            {
                "what": "encoder floor (its FLOPs at the best matmul rate)",
                "seconds": floor,
                "gflop": flops / 1e9,
                "gflops_per_s": rate / 1e9,
            }
        )
        sam_enc = best_time(lambda: encoder(x))
        rows.append({"what": "encoder, SAM's attention", "seconds": sam_enc})
        use_fast_attention(model)
        from napari_slip.core.models import fast

        blocks = [m for m in model.modules() if isinstance(m, fast.FastBlock)]
        default_min_keys = fast.BLOCKED_MIN_KEYS
        # Ablation, one change at a time: SAM's blocks, fused attention with the bias as
        # a mask everywhere; then global attention blocked head by head; then windowed
        # blocks projecting the image's tokens only; then a contiguous residual stream
        # (the default: all four).
        for block in blocks:
            block.__class__ = fast.Block
        fast.BLOCKED_MIN_KEYS = 1 << 30
        fused_enc = best_time(lambda: encoder(x))
        fast.BLOCKED_MIN_KEYS = default_min_keys
        blocked_enc = best_time(lambda: encoder(x))
        for block in blocks:
            block.__class__ = fast.FastBlock
        fast.CONTIGUOUS_STREAM = False
        unpadded_enc = best_time(lambda: encoder(x))
        fast.CONTIGUOUS_STREAM = True
        fast_enc = best_time(lambda: encoder(x))
        rows += [
            {"what": "encoder, fused attention + bias mask everywhere", "seconds": fused_enc},
            {"what": "encoder, + global attention blocked by head", "seconds": blocked_enc},
            {"what": "encoder, + windowed projections without padding", "seconds": unpadded_enc},
            {"what": "encoder, + contiguous residual stream (default)", "seconds": fast_enc},
        ]

        from napari_slip.core.models.tinyvit import TinyViTEncoder

        light = TinyViTEncoder().eval()  # MobileSAM's published encoder size
        with FlopCounterMode(display=False) as counter:
            light(x)
        light_flops = counter.get_total_flops()
        light_enc = best_time(lambda: light(x))
        rows.append(
            {
                "what": f"light encoder: MobileSAM's TinyViT ({light_flops / 1e9:.0f} GFLOP)",
                "seconds": light_enc,
            }
        )
        from napari_slip.core.models.efficientvit import PUBLISHED, EfficientViTSamEncoder

        evit = EfficientViTSamEncoder(PUBLISHED["l0"]).eval()  # EfficientViT-SAM-L0's size
        x512 = torch.randn(1, 3, 512, 512)  # L models see the image at 512 px
        with FlopCounterMode(display=False) as counter:
            evit(x512)
        evit_flops = counter.get_total_flops()
        evit_enc = best_time(lambda: evit(x512))
        rows.append(
            {
                "what": f"light encoder: EfficientViT-SAM-L0 ({evit_flops / 1e9:.0f} GFLOP, "
                "512 px)",
                "seconds": evit_enc,
            }
        )
        sam = PromptableSam(model)
        emb = ImageEmbedding(torch.randn(1, 256, 64, 64), (1024, 1024), (1024, 1024))
        points = np.random.default_rng(0).uniform(0, 1024, size=(16, 2))
        use_fast_attention(model, enabled=False)
        dec_sam = best_time(lambda: sam.decode_points(emb, points), 3) / 16
        use_fast_attention(model)
        dec_fast = best_time(lambda: sam.decode_points(emb, points), 3) / 16
        _, iou = sam.decode_points(emb, points)
        above = sam.decode_points_above(emb, points, 0.88)[0].shape[0]
        dec_none = best_time(lambda: sam.decode_points_above(emb, points, 0.88), 3) / 16
        promptable.CHANNELS_LAST_MAPS = False
        dec_nchw = best_time(lambda: sam.decode_points_above(emb, points, 0.88), 3) / 16
        promptable.CHANNELS_LAST_MAPS = True
        fast.FOLD_PROJECTIONS = False
        dec_unfolded = best_time(lambda: sam.decode_points(emb, points), 3) / 16
        dec_unfolded_none = best_time(lambda: sam.decode_points_above(emb, points, 0.88), 3) / 16
        fast.FOLD_PROJECTIONS = True
        int8 = sam._model("int8")
        int8_enc = best_time(lambda: int8.image_encoder(x))
        dec_int8 = best_time(lambda: sam.decode_points(emb, points, "int8"), 3) / 16
        dec_int8_none = (
            best_time(lambda: sam.decode_points_above(emb, points, 0.88, "int8"), 3) / 16
        )
        # Fidelity of int8 at real size (random weights: no mask survives SAM's filters,
        # so compare the embedding, and the decoder's masks thresholded at 0 directly).
        a, b = encoder(x).flatten(), int8.image_encoder(x).flatten()
        cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        m32 = sam.decode_points(emb, points)[0] > 0
        m8 = sam.decode_points(emb, points, "int8")[0] > 0
        inter = (m32 & m8).flatten(2).sum(-1).float()
        union = (m32 | m8).flatten(2).sum(-1).clamp(min=1).float()
        mask_iou = (inter / union).flatten()
        fidelity = {
            "embedding_cosine": cosine,
            "mask_iou_mean": float(mask_iou.mean()),
            "mask_iou_min": float(mask_iou.min()),
        }
        rows += [
            {"what": "encoder, int8 linear layers (+ fused attention)", "seconds": int8_enc},
            {"what": "decoder per point, SAM's attention", "seconds": dec_sam},
            {
                "what": "decoder per point, fused, image side projected (all masks pass)",
                "seconds": dec_unfolded,
            },
            {
                "what": "decoder per point, as that with projections folded (all pass)",
                "seconds": dec_fast,
            },
            {
                "what": "decoder per point, as below but the maps NCHW",
                "seconds": dec_nchw,
            },
            {
                "what": "decoder per point, as below but not folded (before)",
                "seconds": dec_unfolded_none,
            },
            {
                "what": f"decoder per point, mask head only above IoU 0.88 ({above} of "
                f"{iou.numel()} masks pass: lower bound)",
                "seconds": dec_none,
            },
        ]
    rows += [
        {"what": "decoder per point, int8 (all masks pass)", "seconds": dec_int8},
        {
            "what": "decoder per point, int8, mask head only above IoU 0.88",
            "seconds": dec_int8_none,
        },
    ]
    print(f"\n{'':62} seconds")
    for row in rows:
        print(f"{row['what']:62} {row['seconds']:8.3f}")
    print(
        f"\nencoder: {sam_enc / fast_enc:.2f}x faster; {fast_enc / floor:.2f}x its matmul floor "
        f"(SAM's: {sam_enc / floor:.2f}x)"
    )
    print(
        f"decoder per point: {dec_sam / dec_fast:.2f}x faster (every mask passes), "
        f"{dec_sam / dec_none:.2f}x (none passes)"
    )
    for name, seconds in (("TinyViT", light_enc), ("EfficientViT-SAM-L0", evit_enc)):
        print(
            f"light encoder {name}: {fast_enc / seconds:.1f}x below vit_b's (fused), "
            f"{sam_enc / seconds:.1f}x below SAM's own vit_b"
        )
    print(
        f"int8 fidelity at real size: embedding cosine {fidelity['embedding_cosine']:.4f}; "
        f"decoder masks IoU mean {fidelity['mask_iou_mean']:.3f}, min "
        f"{fidelity['mask_iou_min']:.3f} (48 masks)"
    )
    print(
        f"int8 against fp32 (fused): encoder {fast_enc / int8_enc:.2f}x, decoder "
        f"{dec_fast / dec_int8:.2f}x (all pass), {dec_none / dec_int8_none:.2f}x (none pass)"
    )
    first = {
        "sam": sam_enc + 1024 * dec_sam,
        "fast_lower": fast_enc + 1024 * dec_none,
        "fast_upper": fast_enc + 1024 * dec_fast,
    }
    print(
        "encoder + 32x32 grid of points (no CLIP, no upsampling): "
        f"SAM's {first['sam']:.1f} s, fast {first['fast_lower']:.1f}-{first['fast_upper']:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine,
                    "rows": rows,
                    "first_prompt_sam_stages": first,
                    "int8_fidelity": fidelity,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
