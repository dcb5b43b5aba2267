"""A small SAM trained on synthetic scenes: the fixture that judges mask quality.

Random SAM weights keep no masks, so they prove plumbing only. This module trains a
small SAM (input 256) on :mod:`.scenes` with SAM's own recipe in miniature: point
prompts inside objects (and on the background), three mask outputs with the loss
taken on the best one (focal + Dice), and the IoU head regressed on the true IoU of
every output. A few CPU minutes give a model whose automatic masks find most objects
of held-out scenes; :func:`evaluate_sam` measures that.

    python -m napari_slip.testing.trained_sam OUT.pth [--steps N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..core.models.sam import SamConfig
from .dense import dense_planes
from .scenes import scenes

#: The fixture's architecture: small enough to train on a CPU, big enough to learn.
FIXTURE_SAM = SamConfig(
    img_size=256,
    patch_size=16,
    embed_dim=96,
    depth=4,
    num_heads=4,
    window_size=8,
    global_attn_indexes=(1, 3),
    prompt_embed_dim=64,
    decoder_mlp_dim=256,
    iou_head_hidden_dim=64,
)
#: Automatic-mask options that suit the fixture (its IoU head and stability are less
#: sure than SAM's; measured on held-out scenes, see docs/performance.md).
FIXTURE_AMG = {
    "points_per_side": 16,
    "pred_iou_thresh": 0.5,
    "stability_score_thresh": 0.7,
    "box_nms_thresh": 0.7,
}
#: Where the trained fixture is kept in the repository (made by :func:`train_sam`).
FIXTURE_PATH = Path(__file__).resolve().parents[3] / "tests" / "data" / "fixture_sam.pth"
#: The fixture fine-tuned on planes of dense stacks too (:mod:`.dense`, stacks of
#: seeds 5,000 on, never the tests' or benchmarks'), which judges dense 3D linking from
#: SAM's own proposals; made by ``python -m napari_slip.testing.trained_sam
#: tests/data/fixture_sam_dense.pth --steps 3000 --seed 4 --dense-share 0.6 --init
#: tests/data/fixture_sam.pth`` (17 minutes on one CPU thread).
FIXTURE_DENSE_PATH = FIXTURE_PATH.with_name("fixture_sam_dense.pth")
#: The dense fixture fine-tuned with every batch seen in a frame of 128, 192 or 256 px
#: (objects at 0.5-1x the scale it saw before, as SAM's training images show objects
#: at many scales), which judges SAM at a smaller ``input_side``; made by ``python -m
#: napari_slip.testing.trained_sam tests/data/fixture_sam_scales.pth --steps 1500
#: --seed 7 --dense-share 0.6 --init tests/data/fixture_sam_dense.pth --frames 128 192
#: 256 --lr 5e-4`` (6 minutes on one CPU thread). It was made while the positional
#: embedding, resized for the smaller frames, got no gradient from them (fixed since in
#: ``SamViT.positions``): the recipe now trains it on every frame, and gives another model.
FIXTURE_SCALES_PATH = FIXTURE_PATH.with_name("fixture_sam_scales.pth")


def _targets(labels: np.ndarray, rng, n_points: int):
    """Point prompts (x, y) and their target masks: objects mostly, some background."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    points, masks = [], []
    for _ in range(n_points):
        pick = int(rng.choice(ids)) if len(ids) and rng.random() < 0.85 else 0
        target = labels == pick
        ys, xs = np.nonzero(target)
        j = int(rng.integers(len(ys)))
        points.append((xs[j] + 0.5, ys[j] + 0.5))
        masks.append(target)
    return np.asarray(points, np.float32), np.stack(masks)


def train_sam(
    out: str | Path,
    steps: int = 1500,
    batch_images: int = 6,
    points_per_image: int = 8,
    seed: int = 0,
    lr: float = 1e-3,
    log=print,
    dense_share: float = 0.0,
    init: str | Path | None = None,
    frames: tuple[int, ...] = (256,),
) -> Path:
    """Train the fixture SAM and save it as a SAM-format ``.pth`` state dict.

    With ``dense_share``, that share of the batches' images are planes of dense
    stacks (:func:`~.dense.dense_planes`) instead of the sparse scenes; with
    ``init``, training starts from that fixture's weights (fine-tuning). Each batch
    is seen in a frame side drawn from ``frames`` (its images resized as
    ``PromptableSam.embed`` resizes them for that ``side``), so that a model trained
    with several sees objects at several scales, as SAM's training images show them.
    """
    import torch
    import torch.nn.functional as F
    from segment_anything.utils.transforms import ResizeLongestSide

    from ..core.models.promptable import decode_points
    from ..core.models.sam import build_sam

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_sam(FIXTURE_SAM)
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    model.train()
    pool_rgb, pool_labels = scenes(600, seed=seed + 1)
    dense_rgb, dense_labels = dense_planes(600, seed=seed + 1) if dense_share else ([], [])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    for step in range(steps):
        use_dense = rng.random() < dense_share
        images, truths = (dense_rgb, dense_labels) if use_dense else (pool_rgb, pool_labels)
        idx = rng.choice(len(images), batch_images, replace=False)
        rgb = np.stack([images[i] for i in idx])
        if rng.random() < 0.5:  # flips: cheap augmentation
            rgb = rgb[:, :, ::-1]
            flip = True
        else:
            flip = False
        # Drawn only when there is a choice: one frame keeps the earlier recipes' draws.
        frame = int(rng.choice(frames)) if len(frames) > 1 else int(frames[0])
        if frame != FIXTURE_SAM.img_size:
            rgb = np.stack(
                [ResizeLongestSide(frame).apply_image(np.ascontiguousarray(i)) for i in rgb]
            )
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float()
        feats = model.image_encoder((x - mean) / std)
        dense_pe = model.prompt_encoder.pe_layer((frame // 16, frame // 16)).unsqueeze(0)
        loss_total = 0.0
        for b, i in enumerate(idx):
            labels = truths[i][:, ::-1] if flip else truths[i]
            pts, target = _targets(labels, rng, points_per_image)
            coords = torch.from_numpy(pts)[:, None, :]
            plabels = torch.ones(coords.shape[:2], dtype=torch.int64)
            sparse, dense = model.prompt_encoder(points=(coords, plabels), boxes=None, masks=None)
            low, iou = decode_points(model, feats[b : b + 1], dense_pe, sparse, dense)
            # Targets at the decoder's resolution (64 x 64 for a 256 input).
            tgt = torch.from_numpy(target).float()[:, None]
            tgt = F.adaptive_avg_pool2d(tgt, low.shape[-2:])
            tgt = (tgt > 0.5).float().expand_as(low)
            prob = low.sigmoid()
            bce = F.binary_cross_entropy_with_logits(low, tgt, reduction="none")
            p_t = prob * tgt + (1 - prob) * (1 - tgt)
            focal = (((1 - p_t) ** 2) * bce).flatten(2).mean(-1)
            inter = (prob * tgt).flatten(2).sum(-1)
            dice = 1 - (2 * inter + 1) / (prob.flatten(2).sum(-1) + tgt.flatten(2).sum(-1) + 1)
            per_output = 20 * focal + dice
            best = per_output.argmin(dim=1)
            mask_loss = per_output.gather(1, best[:, None]).mean()
            with torch.no_grad():
                hard = (low > 0).float()
                union = ((hard + tgt) > 0).float().flatten(2).sum(-1)
                true_iou = (hard * tgt).flatten(2).sum(-1) / union.clamp(min=1)
            iou_loss = F.mse_loss(iou, true_iou)
            loss_total = loss_total + mask_loss + iou_loss
        loss = loss_total / len(idx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f}s")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.eval().state_dict().items()}
    torch.save(state, out)
    return out


def match_objects(labels: np.ndarray, masks: list[np.ndarray], iou: float = 0.5):
    """(found, n_objects, matched_masks): objects with a mask of IoU >= ``iou``."""
    ids = [i for i in np.unique(labels) if i > 0]
    found, used = 0, set()
    for i in ids:
        obj = labels == i
        best, best_j = 0.0, None
        for j, m in enumerate(masks):
            inter = np.logical_and(obj, m).sum()
            if not inter:
                continue
            score = inter / np.logical_or(obj, m).sum()
            if score > best:
                best, best_j = score, j
        if best >= iou:
            found += 1
            used.add(best_j)
    return found, len(ids), len(used)


def evaluate_sam(path: str | Path, n_scenes: int = 20, seed: int = 12345, **amg) -> dict:
    """Recall and precision of the automatic masks of a SAM on held-out scenes.

    Recall: objects matched by a mask with IoU >= 0.5. Precision: masks that match an
    object (the background mask, which a point on the background rightly proposes,
    counts against it).
    """
    from ..core.models.promptable import PromptableSam
    from ..core.models.sam import load_sam
    from ..core.params import SamProposalParams
    from ..core.pipeline.proposals import sam_proposals
    from ..core.runtime.generators import drain

    model, _ = load_sam(path)
    params = SamProposalParams(**{**FIXTURE_AMG, **amg})
    rgbs, labels = scenes(n_scenes, seed)
    found = total = matched = n_masks = decoded = 0
    for rgb, lab in zip(rgbs, labels, strict=True):
        sam = PromptableSam(model)
        props = drain(sam_proposals(sam, sam.embed(rgb), params))
        masks = [props.full_mask(i) for i in range(len(props))]
        f, n, m = match_objects(lab, masks)
        found, total, matched, n_masks = found + f, total + n, matched + m, n_masks + len(masks)
        decoded += props.decoded_points
    return {
        "scenes": n_scenes,
        "objects": total,
        "recall": found / max(total, 1),
        "precision": matched / max(n_masks, 1),
        "masks_per_scene": n_masks / n_scenes,
        "decoded_points": decoded,
        "params": params.as_dict(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dense-share", type=float, default=0.0, help="share of batches of dense planes"
    )
    parser.add_argument("--init", help="start from this fixture's weights")
    parser.add_argument(
        "--frames", type=int, nargs="+", default=[256], help="frame sides batches are seen in"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    path = train_sam(
        args.out,
        steps=args.steps,
        seed=args.seed,
        dense_share=args.dense_share,
        init=args.init,
        frames=tuple(args.frames),
        lr=args.lr,
    )
    print(evaluate_sam(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
