"""Speed and memory of napari-slip against the naive SLIP loop (run by hand, not a test).

    python benchmarks/bench_pipeline.py [--size 1024] [--points 32] [--crops 100] [--json out.json]

Both pipelines run at real sizes (SAM vit_b, CLIP ViT-B/32) with random weights (the
cost does not depend on weight values), each in its own process for a clean peak
memory and allocator state, in one run so the ratios compare like with like.

- naive: SLIP's loop. fp32; segment_anything's SamAutomaticMaskGenerator with its
  defaults, on SAM's own attention modules; each crop a masked box crop through
  open_clip's PIL preprocessing, one at a time; everything recomputed for each prompt.
- fast: napari-slip's defaults (bf16 autocast where the CPU has it, fused attention,
  the mask head and upsampling only for masks above the IoU filter, binary cropped
  masks, batched CLIP, allocator tuning, cached embeddings for the next prompt).

The mask stage is reported between two bounds. With random weights SAM's default
filters keep no mask at all (bound 1: post-processing costs nothing), so the CLIP stage
of both pipelines is measured on the same ``--crops`` objects of a label image. Bound
2 keeps every decoded mask (``pred_iou_thresh=0``, ``stability_score_thresh=0``): on
an 8x8 grid for both pipelines, and on the full grid for the fast one. The re-prompt
is compared with its floor (one text encoding and selection), and the trained fixture
SAM (input 256) is timed on synthetic scenes where real masks survive, with and
without point skipping.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: Grid of the "every mask survives" comparison: small, because segment_anything's
#: run-length encodings of noisy random-weight masks explode in size.
WORST_GRID = 8


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scene(size: int, n_crops: int):
    """An RGB image with ``n_crops`` labelled objects."""
    from napari_slip.core.training.synthetic import synthetic_image

    rng = np.random.default_rng(0)
    tiles, labels = [], []
    side = int(np.ceil(np.sqrt(n_crops / 5)))
    tile = size // side
    image = np.zeros((size, size, 3), np.uint8)
    lab = np.zeros((size, size), np.int32)
    count = 0
    for ty in range(side):
        for tx in range(side):
            rgb, tl, _ = synthetic_image(rng, tile, n_objects=(5, 5))
            ys, xs = slice(ty * tile, (ty + 1) * tile), slice(tx * tile, (tx + 1) * tile)
            image[ys, xs] = rgb
            keep = tl > 0
            lab[ys, xs][keep] = tl[keep] + count
            count += int(tl.max())
    lab[lab > n_crops] = 0
    del tiles, labels
    return image, lab


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def worker(kind: str, sam_path: str, clip_path: str, size: int, points: int, n_crops: int) -> dict:
    import torch

    from napari_slip.core.pipeline.proposals import proposals_from_labels

    torch.manual_seed(0)
    image, labels = _scene(size, n_crops)
    out: dict = {"kind": kind}
    if kind == "naive":
        import open_clip
        from PIL import Image
        from segment_anything import SamAutomaticMaskGenerator

        from napari_slip.core.models.clip import load_clip_checkpoint
        from napari_slip.core.models.fast import use_fast_attention
        from napari_slip.core.models.sam import load_sam

        sam, _ = load_sam(sam_path)
        use_fast_attention(sam, enabled=False)  # the naive loop runs SAM's own modules
        clip = load_clip_checkpoint(clip_path)
        preprocess = open_clip.image_transform(clip.image_size, is_train=False)
        tokenizer = clip.tokenizer
        enc = []
        sam.image_encoder.register_forward_pre_hook(lambda *a: enc.append(time.perf_counter()))
        sam.image_encoder.register_forward_hook(lambda *a: enc.append(time.perf_counter()))

        def prompt_once(text: str, pred_iou: float = 0.88) -> float:
            enc.clear()
            gen = SamAutomaticMaskGenerator(sam, points_per_side=points, pred_iou_thresh=pred_iou)
            t0 = time.perf_counter()
            with torch.no_grad():
                masks = gen.generate(image)
            t_sam = time.perf_counter() - t0
            out.setdefault("sam_masks", len(masks))
            # CLIP: masked box crops, one at a time, PIL preprocessing (SLIP's loop).
            props = proposals_from_labels(labels)
            t1 = time.perf_counter()
            crops = []
            for i in range(len(props)):
                y0, x0, y1, x1 = props.boxes[i]
                crop = image[y0:y1, x0:x1] * props.masks[i][..., None]
                crops.append(Image.fromarray(crop.astype(np.uint8)))
            t_crops = time.perf_counter() - t1
            t2 = time.perf_counter()
            with torch.no_grad():
                text_emb = clip.model.encode_text(tokenizer([f"a photo of {text}."]))
                text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True)
                sims = []
                for crop in crops:
                    emb = clip.model.encode_image(preprocess(crop)[None])
                    sims.append(float((emb / emb.norm()) @ text_emb.T))
            t_clip = time.perf_counter() - t2
            t3 = time.perf_counter()
            best = int(np.argmax(sims))
            selected = props.full_mask(best)
            t_sel = time.perf_counter() - t3
            assert selected.any()
            stages = {
                "encoder": enc[1] - enc[0],
                "masks": t_sam - (enc[1] - enc[0]),
                "crops": t_crops,
                "clip": t_clip,
                "selection": t_sel,
            }
            out.setdefault("stages", stages)
            return t_sam + t_crops + t_clip + t_sel

        out["first_prompt"] = prompt_once("circle")
        if os.environ.get("BENCH_FIRST_PROMPT_ONLY") == "1":  # bench_api_allocator --naive
            return out
        out["reprompt"] = prompt_once("square")  # the naive loop recomputes everything
        out["peak_mb_first"] = _peak_mb()
        enc.clear()
        gen = SamAutomaticMaskGenerator(
            sam, points_per_side=WORST_GRID, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
        t0 = time.perf_counter()
        with torch.no_grad():
            gen.predictor.set_image(image)
            enc_t = time.perf_counter() - t0
            t1 = time.perf_counter()
            n = len(gen.generate(image))
        out["masks_all_survive"] = time.perf_counter() - t1 - enc_t
        out["masks_all_survive_n"] = n
    else:
        from napari_slip.core.params import SamProposalParams
        from napari_slip.core.pipeline.crops import make_crops
        from napari_slip.core.pipeline.proposals import sam_proposals
        from napari_slip.core.pipeline.segmenter import Segmenter
        from napari_slip.core.runtime.generators import drain
        from napari_slip.core.runtime.perf import cpu_has_fast_bf16, tune_allocator

        tune_allocator()  # the explicit opt-in the CLI and the widget make too

        seg = Segmenter(
            sam_path,
            clip_path,
            "cpu",
            disk_cache=False,
            sam_params=SamProposalParams(points_per_side=points),
        )
        seg.load("sam", "clip")  # load before timing
        out["precision"] = seg.precision
        out["cpu_bf16"] = cpu_has_fast_bf16()
        stages: dict = {}
        times: dict = {}

        def track(event):
            now = time.perf_counter()
            times.setdefault(event.stage, [now, now])[1] = now

        # The first prompt: SAM's proposals for the image (encoder + masks), then CLIP on
        # the label objects and the selection, through the Segmenter as a user runs it.
        t0 = time.perf_counter()
        seg.set_image(image)
        drain(seg.iter_proposals(), track)
        seg.segment(None, "circle", labels=labels, progress=track)
        out["first_prompt"] = time.perf_counter() - t0
        stages["encoder"] = times["embedding"][1] - times["embedding"][0]
        stages["masks"] = times["proposals"][1] - times["proposals"][0]
        props = proposals_from_labels(labels)
        _, stages["crops"] = _timed(lambda: make_crops(seg.image.rgb, props, seg.crop_params))
        stages["clip"] = times["scoring"][1] - times["scoring"][0] - stages["crops"]
        stages["selection"] = times["selection"][1] - times["selection"][0]
        out["stages"] = stages
        out["sam_masks"] = len(drain(seg.iter_proposals()))
        out["decoded_points"] = seg.stats["sam_decoded_points"]
        out["peak_mb_first"] = _peak_mb()
        # Re-prompt on the seen image: a new phrase, everything else cached.
        lat = []
        for word in ("square", "triangle", "cross", "ring", "diamond"):
            _, t = _timed(lambda w=word: seg.segment(None, w, labels=labels))
            lat.append(t)
        out["reprompt"] = float(np.median(lat))
        out["reprompt_all"] = lat
        # The floor of a re-prompt: one text encoding plus selection, nothing else.
        candidates = drain(seg.iter_candidates(None, labels=labels))
        floor = []
        for word in ("squares", "triangles", "crosses", "rings", "diamonds"):
            _, t = _timed(lambda w=word: seg.select(candidates, w))
            floor.append(t)
        out["reprompt_floor"] = float(np.median(floor))
        crops = make_crops(seg.image.rgb, props, seg.crop_params)
        # The other bound of the mask stage: every decoded mask survives the filters
        # (post-processing, stability and NMS over thousands of masks), on the same grid.
        sam = seg.sam.promptable
        embedding = sam.embed(seg.image.rgb, seg.precision)
        for name, grid in (
            ("masks_all_survive_small_grid", WORST_GRID),
            ("masks_all_survive", points),
        ):
            params = SamProposalParams.exact(
                points_per_side=grid, pred_iou_thresh=0.0, stability_score_thresh=0.0
            )
            worst, t = _timed(
                lambda p=params: drain(sam_proposals(sam, embedding, p, seg.precision))
            )
            out[name] = t
            out[f"{name}_n"] = len(worst)
            out[f"{name}_decoded"] = worst.decoded_points
            del worst
        out["flops"] = _flops(seg, image, crops)
        out["peak_gflops"] = _matmul_peak()
    out["peak_mb"] = _peak_mb()
    return out


def _flops(seg, image, crops) -> dict:
    """FLOPs of each stage, counted by torch (encoder, one decoder point, one CLIP crop)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_slip.core.models.fast import use_fast_attention

    counts = {}
    model = seg.sam.model
    # The counter does not see inside fused attention: count on SAM's own modules
    # (the same arithmetic).
    use_fast_attention(model, enabled=False)
    with FlopCounterMode(display=False) as fc:
        embedding = seg.sam.promptable.embed(seg.image.rgb, "fp32")
    counts["encoder"] = fc.get_total_flops()
    pts = torch.tensor([[[100.0, 100.0]]])
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        sparse, dense = model.prompt_encoder(
            points=(pts, torch.ones(1, 1, dtype=torch.int64)), boxes=None, masks=None
        )
        model.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    counts["decoder_per_point"] = fc.get_total_flops()
    from napari_slip.core.models.promptable import decode_points

    def per_point(*thresh) -> float:
        """FLOPs per point of our decoder, over two points (so the shared first layer
        counts once between them)."""
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            decode_points(
                model,
                embedding.features,
                model.prompt_encoder.get_dense_pe(),
                torch.cat([sparse, sparse]),
                dense.expand(2, -1, -1, -1),
                *thresh,
            )
        return fc.get_total_flops() / 2

    counts["shared_decoder_per_point"] = per_point()
    use_fast_attention(model)
    # As the fast path runs: projections folded into the prompt's tokens, the mask head
    # only above the IoU filter (random weights: none passes, bound 1).
    counts["fast_decoder_per_point"] = per_point(seg.sam_params.pred_iou_thresh)
    clip = seg.clip.clip
    clip.set_precision("fp32")
    # The counter cannot see inside PyTorch's fused attention fast path: turn it off.
    torch.backends.mha.set_fastpath_enabled(False)
    with FlopCounterMode(display=False) as fc:
        clip.encode_images(crops[:1])
    torch.backends.mha.set_fastpath_enabled(True)
    counts["clip_per_crop"] = fc.get_total_flops()
    return counts


def _matmul_peak() -> dict:
    import torch

    out = {}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x, y = a.to(dt), b.to(dt)
        x @ y
        t = time.perf_counter()
        for _ in range(5):
            x @ y
        out[name] = 2 * 2048**3 * 5 / (time.perf_counter() - t) / 1e9
    return out


def _prepare_models(folder: Path) -> tuple[str, str]:
    import open_clip
    import torch

    from napari_slip.core.models.clip import build_clip, save_clip_checkpoint
    from napari_slip.core.models.sam import SamConfig, build_sam

    torch.manual_seed(0)
    sam_path = folder / "sam_vit_b_random.pth"
    torch.save(build_sam(SamConfig()).state_dict(), sam_path)
    config = open_clip.get_model_config("ViT-B-32")
    clip_path = save_clip_checkpoint(
        build_clip(config), config, folder / "vitb32_random.safetensors"
    )
    return str(sam_path), str(clip_path)


def report(naive: dict, fast: dict, args, fixture: dict | None = None) -> str:
    lines = [
        f"napari-slip benchmark: {args.size}x{args.size} image, {args.points}x{args.points} "
        f"grid, {args.crops} crops; SAM vit_b + CLIP ViT-B/32, random weights; "
        f"{os.cpu_count()} CPU cores; fast path precision {fast['precision']}",
        "",
    ]
    lines.append(f"{'stage':<34}{'naive s':>10}{'fast s':>10}{'speed-up':>10}")
    for stage in ("encoder", "masks", "crops", "clip", "selection"):
        a, b = naive["stages"][stage], fast["stages"][stage]
        lines.append(f"{stage:<34}{a:>10.2f}{b:>10.2f}{a / max(b, 1e-9):>9.1f}x")
    lines.append(
        f"  (masks row: bound 1, no mask survives SAM's default filters with random weights:"
        f" {naive['sam_masks']} naive, {fast['sam_masks']} fast)"
    )
    a, b = naive["masks_all_survive"], fast["masks_all_survive_small_grid"]
    label = f"masks, all survive ({WORST_GRID}x{WORST_GRID})"
    lines.append(f"{label:<34}{a:>10.2f}{b:>10.2f}{a / b:>9.1f}x")
    lines.append(
        f"{f'masks, all survive ({args.points}x{args.points})':<34}{'n/a':>10}"
        f"{fast['masks_all_survive']:>10.2f}{'':>10}   (bound 2: "
        f"{fast['masks_all_survive_n']} masks after NMS of "
        f"{3 * fast['masks_all_survive_decoded']} decoded; the naive loop's run-length "
        "encodings of noisy masks do not fit this machine)"
    )
    lines.append("")
    fp, rp = naive["first_prompt"] / fast["first_prompt"], naive["reprompt"] / fast["reprompt"]
    lines.append(
        f"{'first prompt on a new image':<34}{naive['first_prompt']:>10.2f}"
        f"{fast['first_prompt']:>10.2f}{fp:>9.1f}x   (target >= 4x)"
    )
    lines.append(
        f"{'re-prompt on a seen image':<34}{naive['reprompt']:>10.2f}"
        f"{fast['reprompt']:>10.4f}{rp:>9.0f}x   (target <= 0.05 s and >= 1000x)"
    )
    lines.append(
        f"{'  floor: one text encoding + select':<34}{'':>10}"
        f"{fast['reprompt_floor']:>10.4f}{'':>10}   (the re-prompt above, minus bookkeeping)"
    )
    lines.append(
        f"{'peak memory, first prompt (MB)':<34}{naive['peak_mb_first']:>10.0f}"
        f"{fast['peak_mb_first']:>10.0f}"
        f"{'':>10}   (target < 4096 MB)"
    )
    fl, peak = fast["flops"], fast["peak_gflops"]
    ppeak = peak["bf16"] if fast["precision"] == "bf16" else peak["fp32"]
    lines += [
        "",
        f"Hardware floor (matmul peak measured now: fp32 {peak['fp32']:.0f}, "
        f"bf16 {peak['bf16']:.0f} GFLOP/s):",
    ]
    work = {
        "encoder": fl["encoder"],
        "masks": fl.get("fast_decoder_per_point", fl.get("shared_decoder_per_point", 0))
        * fast["decoded_points"],
        "clip": fl["clip_per_crop"] * args.crops,
    }
    for stage, flops in work.items():
        t = fast["stages"][stage]
        floor = flops / 1e9 / ppeak
        lines.append(
            f"  {stage:<10}{flops / 1e9:>9.0f} GFLOP  floor {floor:6.2f} s  "
            f"took {t:6.2f} s  = {100 * floor / t:4.0f}% of peak"
        )
    lines.append(
        f"  decoder: {fl['decoder_per_point'] / 1e9:.2f} GFLOP per point in SAM, "
        f"{fl.get('shared_decoder_per_point', fl['decoder_per_point']) / 1e9:.2f} with the "
        f"shared first layer"
        + (
            f", {fl['fast_decoder_per_point'] / 1e9:.2f} as run (projections folded, mask "
            "head only above the IoU filter)"
            if "fast_decoder_per_point" in fl
            else ""
        )
        + f"; {fast['decoded_points']} of {args.points**2} points decoded"
    )
    if fixture:
        lines += ["", "Trained fixture SAM (tests/data, input 256) on held-out synthetic scenes:"]
        for row in fixture["rows"]:
            lines.append(
                f"  {row['name']:<30} first prompt {row['first_prompt']:5.2f} s "
                f"(encoder {row['encoder']:.2f} s), {row['decoded_points']:>5} points decoded, "
                f"{row['masks']:5.1f} masks/scene, recall {row['recall']:.2f}, "
                f"precision {row['precision']:.2f}"
            )
    return "\n".join(lines)


def fixture_worker(clip_path: str, n_scenes: int = 10) -> dict:
    """The trained fixture SAM at its own size: time, masks kept, recall."""
    from napari_slip.core.params import SamProposalParams
    from napari_slip.core.pipeline.segmenter import Segmenter
    from napari_slip.core.runtime.generators import drain
    from napari_slip.core.runtime.perf import tune_allocator
    from napari_slip.testing.scenes import scenes
    from napari_slip.testing.trained_sam import FIXTURE_AMG, FIXTURE_PATH, match_objects

    tune_allocator()
    rgbs, labels = scenes(n_scenes, seed=2024)
    rows = []
    for name, extra in (("full grid", {}), ("skip covered points", {"skip_covered": True})):
        params = SamProposalParams(**{**FIXTURE_AMG, **extra})
        seg = Segmenter(str(FIXTURE_PATH), clip_path, "cpu", sam_params=params, disk_cache=False)
        seg.load("sam", "clip")  # load before timing
        first, enc, found, total, matched, masks, decoded = [], [], 0, 0, 0, 0, 0
        for rgb, lab in zip(rgbs, labels, strict=True):
            times = {}

            def track(e, times=times):
                now = time.perf_counter()
                times.setdefault(e.stage, [now, now])[1] = now

            t0 = time.perf_counter()
            result = drain(seg.iter_segment(rgb, "a shape", mode="topk", top_k=1), track)
            first.append(time.perf_counter() - t0)
            enc.append(times["embedding"][1] - times["embedding"][0])
            props = drain(seg.iter_proposals())
            f, n, m = match_objects(lab, [props.full_mask(i) for i in range(len(props))])
            found, total, matched = found + f, total + n, matched + m
            masks += len(props)
            decoded += props.decoded_points
            assert result.labels.shape == lab.shape
        rows.append(
            {
                "name": name,
                "first_prompt": float(np.median(first)),
                "encoder": float(np.median(enc)),
                "decoded_points": decoded // n_scenes,
                "masks": masks / n_scenes,
                "recall": found / total,
                "precision": matched / max(masks, 1),
            }
        )
    return {"rows": rows, "scenes": n_scenes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--crops", type=int, default=100)
    parser.add_argument("--json", help="write all measurements here")
    parser.add_argument("--report-from", help="print the report of an earlier --json file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        print(report(saved["naive"], saved["fast"], args, saved.get("fixture")))
        return
    if args.worker == "fixture":
        print(json.dumps(fixture_worker(args.models[1])))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, *args.models, args.size, args.points, args.crops)))
        return
    # Each worker's numbers are saved as soon as it finishes (with --json), and a
    # rerun with the same --json file keeps them: a failure late in the run costs
    # only the missing part.
    saved = Path(args.json) if args.json else None
    results = json.loads(saved.read_text()) if saved and saved.is_file() else {}
    results.pop("report", None)
    with tempfile.TemporaryDirectory() as tmp:
        models = _prepare_models(Path(tmp))
        for kind in ("naive", "fast", "fixture"):
            if kind in results:
                print(f"{kind}: kept from {saved}", file=sys.stderr)
                continue
            env = {
                **os.environ,
                "NAPARI_SLIP_MALLOC": "0" if kind == "naive" else "1",
                "NAPARI_SLIP_CACHE": tmp,
            }
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                kind,
                "--models",
                *models,
                "--size",
                str(args.size),
                "--points",
                str(args.points),
                "--crops",
                str(args.crops),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                sys.exit(f"the {kind} worker failed:\n{proc.stderr[-3000:]}")
            results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
            if saved:
                saved.write_text(json.dumps(results, indent=2))
            print(f"{kind} done", file=sys.stderr)
    text = report(results["naive"], results["fast"], args, results["fixture"])
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "report": text}, indent=2))


if __name__ == "__main__":
    main()
