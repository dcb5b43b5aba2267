"""Adapting CLIP to a user's domain (SLIP's central step: 15% -> 70% in their domain).

Contrastive training on image-text pairs, where objects of the same class in a batch
are not negatives of each other. What is trained is a choice (everything, the last
blocks and projections, or the projections only) so that CPU fine-tuning is practical.
The result is written in the engine's checkpoint format with what it learned.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import os
import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models.clip import ClipModel, save_clip_checkpoint
from ..models.hub import default_hub
from ..models.registry import resolve_device
from ..params import CropParams, FinetuneParams
from ..runtime.generators import drain, relabel
from ..runtime.progress import Progress
from .datasets import Pairs, load_pairs


@dataclass
class FinetuneResult:
    """What a training run produced."""

    params: FinetuneParams
    state: dict[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = float("nan")
    baseline_val: float = float("nan")
    stopped_early: bool = False


def split_pairs(pairs: Pairs, val_fraction: float, seed: int = 0) -> tuple[Pairs, Pairs]:
    """Split by source image (group) into training and validation pairs.

    With a single source image (fine-tuning from one napari layer), objects are split
    individually instead.
    """
    if len(set(pairs.groups)) < 2:
        pairs = Pairs(pairs.crops, pairs.classes, [str(i) for i in range(len(pairs))])
    groups = sorted(set(pairs.groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    # At least one image on each side when a split is asked for and possible.
    n_val = round(len(groups) * val_fraction)
    n_val = min(max(n_val, 1), len(groups) - 1) if val_fraction > 0 and len(groups) >= 2 else 0
    val_groups = set(groups[:n_val])
    val = [i for i, g in enumerate(pairs.groups) if g in val_groups]
    train = [i for i, g in enumerate(pairs.groups) if g not in val_groups]
    return pairs.subset(train), pairs.subset(val)


def trainable_names(model: torch.nn.Module, part: str, last_blocks: int = 2) -> list[str]:
    """The parameter names trained for ``part`` (see :class:`FinetuneParams`)."""
    names = [n for n, _ in model.named_parameters()]
    if part == "all":
        return names
    proj = {"visual.proj", "text_projection", "logit_scale"}
    chosen = {n for n in names if n in proj or n.startswith(("visual.head.", "text.proj"))}
    if part == "last":
        chosen |= {n for n in names if n.startswith(("visual.ln_post.", "ln_final."))}
        for prefix in ("visual.transformer.resblocks.", "transformer.resblocks."):
            pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
            blocks = sorted({int(m.group(1)) for n in names if (m := pattern.match(n))})
            keep = set(blocks[-last_blocks:]) if last_blocks > 0 else set()
            chosen |= {n for n in names if (m := pattern.match(n)) and int(m.group(1)) in keep}
    if not chosen:
        raise InputError(
            f"This CLIP architecture has no parameters to train as {part!r}; use 'all'."
        )
    return [n for n in names if n in chosen]


def _augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    out = []
    for img in batch:
        if rng.random() < 0.5:
            img = img.flip(-1)
        img = torch.rot90(img, int(rng.integers(4)), dims=(-2, -1))
        out.append(img)
    return torch.stack(out)


def contrastive_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric CLIP loss with repeated classes.

    ``text_emb`` holds one embedding per *distinct* text in the batch and ``targets``
    the index of each image's text, so objects of one class are never negatives of
    each other; the text-to-image direction spreads its target over all of a text's
    images (as a KL divergence, so a perfect fit costs 0).
    """
    logits = scale * image_emb @ text_emb.T  # (images, texts)
    image_to_text = F.cross_entropy(logits, targets)
    onehot = F.one_hot(targets, text_emb.shape[0]).T.float()  # (texts, images)
    soft = onehot / onehot.sum(1, keepdim=True)
    # KL rather than cross-entropy: same gradients, but 0 at a perfect fit instead of
    # the entropy of the soft target.
    log_soft = torch.log(soft.clamp_min(1e-12))
    text_to_image = (soft * (log_soft - F.log_softmax(logits.T, dim=1))).sum(1).mean()
    return (image_to_text + text_to_image) / 2


@torch.no_grad()
def accuracy(
    clip: ClipModel, pairs: Pairs, class_names: Sequence[str], template: str, batch_size: int = 64
) -> float:
    """Share of crops whose most similar class text is their own (zero-shot top-1)."""
    if not len(pairs):
        return float("nan")
    was_training = clip.model.training
    clip.model.eval()
    texts = clip.encode_texts([template.format(c) for c in class_names])
    index = {c: i for i, c in enumerate(class_names)}
    hits = 0
    for start in range(0, len(pairs), batch_size):
        emb = clip.encode_images(pairs.crops[start : start + batch_size])
        pred = (emb @ texts.T).argmax(1)
        truth = [index[c] for c in pairs.classes[start : start + batch_size]]
        hits += int((pred == np.asarray(truth)).sum())
    clip.model.train(was_training)
    return hits / len(pairs)


def iter_finetune(
    clip: ClipModel, train: Pairs, val: Pairs, params: FinetuneParams = FinetuneParams()
) -> Generator[Progress, None, FinetuneResult]:
    """Fine-tune ``clip`` in place; yields progress per batch, returns the best state.

    The model ends holding the weights of the epoch with the best validation accuracy
    (or the last epoch if there is no validation set).
    """
    class_names = sorted(set(train.classes) | set(val.classes))
    if len(set(train.classes)) < 2:
        raise InputError(
            "Fine-tuning needs at least two different classes (or captions) to contrast; "
            f"the training data has {sorted(set(train.classes))}."
        )
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    model = clip.model
    names = set(trainable_names(model, params.train, params.last_blocks))
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
        if name in names:
            trainable.append(p)
    optimizer = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay)
    n_batches = -(-len(train) // params.batch_size)
    total = params.epochs * n_batches
    baseline = accuracy(clip, val, class_names, params.template)
    result = FinetuneResult(
        params, _snapshot(model, names), baseline_val=baseline, best_val=baseline
    )
    yield Progress("training", 0, total, f"before training: val accuracy {baseline:.3f}")
    since_best, step = 0, 0
    try:
        for epoch in range(1, params.epochs + 1):
            model.train()
            order = rng.permutation(len(train))
            losses = []
            for b in range(n_batches):
                idx = order[b * params.batch_size : (b + 1) * params.batch_size]
                if len(idx) < 2:
                    continue
                batch_classes = [train.classes[i] for i in idx]
                distinct = sorted(set(batch_classes))
                targets = torch.tensor(
                    [distinct.index(c) for c in batch_classes], device=clip.device
                )
                images = clip.preprocess([train.crops[i] for i in idx])
                if params.augment:
                    images = _augment(images, rng)
                tokens = clip.tokenizer([params.template.format(c) for c in distinct]).to(
                    clip.device
                )
                image_emb = F.normalize(model.encode_image(images), dim=-1)
                text_emb = F.normalize(model.encode_text(tokens), dim=-1)
                scale = model.logit_scale.exp().clamp(max=100)
                loss = contrastive_loss(image_emb, text_emb, targets, scale)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
                yield Progress(
                    "training",
                    step,
                    total,
                    f"epoch {epoch}/{params.epochs} loss {np.mean(losses):.3f}",
                )
            model.eval()
            val_acc = accuracy(clip, val, class_names, params.template)
            train_loss = float(np.mean(losses)) if losses else float("nan")
            result.history.append(
                {"epoch": epoch, "loss": round(train_loss, 5), "val_accuracy": round(val_acc, 5)}
            )
            improved = len(val) == 0 or val_acc > result.best_val or np.isnan(result.best_val)
            if improved:
                result.best_val, result.best_epoch = val_acc, epoch
                result.state = _snapshot(model, names)
                since_best = 0
            else:
                since_best += 1
            yield Progress(
                "training",
                step,
                total,
                f"epoch {epoch}/{params.epochs}: loss "
                f"{train_loss:.3f}, val accuracy {val_acc:.3f}",
            )
            if len(val) and since_best >= params.patience:
                result.stopped_early = True
                break
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
    model.load_state_dict(result.state, strict=False)
    return result


def _snapshot(model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n in names}


def grid_params(params: FinetuneParams) -> list[FinetuneParams]:
    """The grid ``--grid`` searches: learning rate x what is trained (as SLIP did)."""
    parts = ["proj", "last"] + (["all"] if params.train == "all" else [])
    return [
        replace(params, lr=params.lr * f, train=part)
        for part, f in itertools.product(parts, (0.3, 1.0, 3.0))
    ]


def finetune(
    data: str | os.PathLike | Pairs,
    base: str,
    output: str | os.PathLike,
    params: FinetuneParams = FinetuneParams(),
    *,
    grid: bool | Sequence[FinetuneParams] = False,
    device: str = "auto",
    crop_params: CropParams | None = None,
    progress: Callable[[Progress], None] | None = None,
    extra_metadata: dict | None = None,
) -> Path:
    """Fine-tune a CLIP on ``data`` and write the checkpoint; returns its path.

    Parameters
    ----------
    data
        A captions CSV, a dataset folder, or :class:`~napari_slip.core.datasets.Pairs`.
    base
        The CLIP to start from: ``MODEL:TAG`` or a checkpoint path.
    output
        Where to write the ``.safetensors`` checkpoint.
    params
        Training options.
    grid
        True to try :func:`grid_params`, or a list of parameter sets; the best
        validation accuracy wins.
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    crop_params
        How objects are cropped (use the same as when segmenting).
    progress
        Called with every :class:`Progress` event.
    """
    return drain(
        iter_finetune_to_file(
            data,
            base,
            output,
            params,
            grid=grid,
            device=device,
            crop_params=crop_params,
            extra_metadata=extra_metadata,
        ),
        progress,
    )


def iter_finetune_to_file(
    data,
    base: str,
    output,
    params: FinetuneParams = FinetuneParams(),
    *,
    grid=False,
    device: str = "auto",
    crop_params: CropParams | None = None,
    extra_metadata: dict | None = None,
) -> Generator[Progress, None, Path]:
    """:func:`finetune` as a generator of progress (for GUIs and cancelling)."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise InputError(f"The output must be a .safetensors file; got {output.name!r}.")
    crop_params = crop_params or CropParams()
    yield Progress("loading data", 0, 1, str(data) if not isinstance(data, Pairs) else "pairs")
    pairs = data if isinstance(data, Pairs) else load_pairs(data, crop_params)
    train, val = split_pairs(pairs, params.val_fraction, params.seed)
    yield Progress("loading data", 1, 1, f"{len(train)} training and {len(val)} validation pairs")
    dev = resolve_device(device)
    hub = default_hub()
    if not hub.has_clip(base, dev, "fp32"):
        yield Progress("loading models", 0, 1, f"CLIP {base}", heavy=True)
    loaded = hub.clip(base, dev, "fp32")
    candidates = (
        list(grid) if isinstance(grid, Sequence) else (grid_params(params) if grid else [params])
    )
    best: tuple[FinetuneResult, ClipModel] | None = None
    tried = []
    for n, candidate in enumerate(candidates, start=1):
        # Training changes weights: work on a copy, the hub's model serves inference.
        clip = _copy_clip(loaded.clip)
        run = iter_finetune(clip, train, val, candidate)
        if len(candidates) > 1:
            prefix = f"grid {n}/{len(candidates)} lr={candidate.lr:g} train={candidate.train}"
            run = relabel(run, lambda e, prefix=prefix: f"{prefix}: {e.message}")
        result = yield from run
        tried.append(
            {
                "lr": candidate.lr,
                "train": candidate.train,
                "best_val": result.best_val,
                "best_epoch": result.best_epoch,
            }
        )
        if best is None or result.best_val > best[0].best_val:
            best = (result, clip)
    result, clip = best
    base_meta = loaded.clip.metadata
    metadata = {
        "base_model": base_meta.get("base_model", base)
        if loaded.path.suffix == ".safetensors" and base_meta.get("base_model")
        else base,
        "base_sha256": loaded.sha256,
        "class_names": sorted(set(pairs.classes)),
        "prompt_template": result.params.template,
        "preprocess_cfg": {"mean": list(clip.mean), "std": list(clip.std)},
        "training": {
            **asdict(result.params),
            "data": str(data) if not isinstance(data, Pairs) else "in-memory pairs",
            "n_train": len(train),
            "n_val": len(val),
            "crop_fill": crop_params.fill,
            "crop_margin": crop_params.margin,
            "grid": tried if len(candidates) > 1 else None,
        },
        "metrics": {
            "val_accuracy": result.best_val,
            "baseline_val_accuracy": result.baseline_val,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "history": result.history,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(extra_metadata or {}),
    }
    yield Progress("saving", 0, 1, str(output))
    path = save_clip_checkpoint(clip.model, clip.config, output, _jsonable(metadata))
    yield Progress(
        "saving", 1, 1, f"val accuracy {result.baseline_val:.3f} -> {result.best_val:.3f}"
    )
    return path


def _copy_clip(clip: ClipModel) -> ClipModel:
    return replace(clip, model=copy.deepcopy(clip.model))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
