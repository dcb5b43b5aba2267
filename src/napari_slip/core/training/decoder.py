"""Training a text-conditioned decoder on a user's labels (seed 003, CLIPSeg's design).

CLIP stays frozen: every training view (a square window of an image, and its mirror
image) goes through CLIP's image tower once, and only the small decoder
(:class:`~napari_slip.core.models.decoder.TextDecoder`) learns, so a small dataset
trains in minutes on a laptop CPU. A view and a class make one example: the target is
the mask of that class's objects in the view (empty when the class is absent, which
teaches the decoder to say no). The text of a class is its name through the template,
or one of the paraphrases a user gave for it, drawn at random each time.

Validation runs the decoder as segmentation does (windows over whole held-out images,
stitched, thresholded at 0.5) and reports the mean IoU over classes; the epoch with the
best one is kept, and training stops after ``patience`` epochs without a better one.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..models.decoder import DecoderConfig, TextDecoder, default_taps, save_decoder
from ..models.hub import default_hub
from ..models.registry import LoadedClip, resolve_device
from ..params import DecoderParams
from ..pipeline.images import prepare_image
from ..pipeline.relevance import (
    DenseFeatures,
    decoder_windows,
    open_clip_vision,
)
from ..runtime.generators import drain
from ..runtime.progress import Progress
from .datasets import DatasetImage, read_dataset_folder
from .decoder_eval import (
    ClassScores,
    _Held,
    _taps,
    _windows_of,
    class_masks,
    evaluate_decoder,
    format_decoder_report,
    score_maps,
    summarise,
    untrained_map_scores,
)
from .finetune import _jsonable


@dataclass
class _Views:
    """Tapped CLIP activations of training views and their per-class targets."""

    taps: torch.Tensor  # (n, T, tokens, width)
    targets: torch.Tensor  # (n, classes, out, out) in [0, 1]


@dataclass
class DecoderResult:
    """What a decoder training run produced."""

    decoder: TextDecoder
    params: DecoderParams
    class_names: list[str]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val: dict = field(default_factory=dict)
    stopped_early: bool = False
    n_train: int = 0
    n_val: int = 0


def _target(mask: np.ndarray, box, window: int, out: int) -> np.ndarray:
    """The share of each output cell of a window covered by ``mask``."""
    y0, x0, y1, x1 = box
    square = np.zeros((window, window), np.float32)
    square[: y1 - y0, : x1 - x0] = mask[y0:y1, x0:x1]
    t = torch.from_numpy(square)[None, None]
    return F.adaptive_avg_pool2d(t, out)[0, 0].numpy()


def split_images(
    items: Sequence[DatasetImage], val_fraction: float, seed: int
) -> tuple[list[DatasetImage], list[DatasetImage]]:
    """Held-out images for validation (at least one when asked for and possible)."""
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = 0
    if val_fraction > 0 and len(items) >= 2:
        n_val = min(max(round(len(items) * val_fraction), 1), len(items) - 1)
    val = [items[i] for i in sorted(order[:n_val])]
    train = [items[i] for i in sorted(order[n_val:])]
    return train, val


def _loss(
    logits: torch.Tensor, target: torch.Tensor, kind: str, pos_weight: float = 1.0
) -> torch.Tensor:
    """BCE (positives weighted by ``pos_weight``), Dice or their sum.

    Dice is taken over the whole batch (its pixels pooled): per example it would be 1
    for every view where the class is absent whatever the decoder says, and those
    examples would teach nothing but 'say nothing'."""
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
    if kind == "bce":
        return bce
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return dice if kind == "dice" else bce + dice


def iter_train_decoder(
    loaded_clip: LoadedClip,
    items: Sequence[DatasetImage],
    params: DecoderParams | None = None,
    paraphrases: Mapping[str, Sequence[str]] | None = None,
) -> Generator[Progress, None, DecoderResult]:
    """Train a decoder on labelled images; yields progress, returns the best decoder.

    Parameters
    ----------
    loaded_clip
        The frozen CLIP (its activations are what the decoder learns to read).
    items
        Images with label images and the class of each label.
    params
        Training options.
    paraphrases
        Class name -> other phrases for it; each is also drawn as the text of the class.
    """
    params = params or DecoderParams()
    clip = loaded_clip.clip
    open_clip_vision(clip)  # refuses CLIPs without an open_clip ViT tower, with the reason
    class_names = sorted({name for item in items for name in item.classes.values()})
    if not class_names:
        raise InputError("The training data names no classes: nothing to learn.")
    pixels = {name: 0 for name in class_names}
    for item in items:
        labels = np.asarray(item.labels)
        if labels.ndim != 2:
            raise InputError(
                f"The label image of {item.name} has shape {labels.shape}: give one 2D "
                "label image per image (not RGB)."
            )
        for label, name in item.classes.items():
            pixels[name] += int(np.count_nonzero(labels == int(label)))
    empty = [name for name, n in pixels.items() if n == 0]
    if empty:
        raise InputError(
            f"No pixel of the label images belongs to {', '.join(map(repr, empty))}: check "
            "classes.csv against the label images (a decoder would learn nothing of them)."
        )
    paraphrases = {k: [p.strip() for p in v if p.strip()] for k, v in (paraphrases or {}).items()}
    unknown = sorted(set(paraphrases) - set(class_names))
    if unknown:
        raise InputError(
            f"Paraphrases were given for {', '.join(map(repr, unknown))}, which is not a "
            f"class of the data ({', '.join(class_names)})."
        )
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    depth = len(clip.model.visual.transformer.resblocks)
    grid = clip.image_size // _patch_size(clip)
    config = DecoderConfig(
        taps=default_taps(depth),
        width=int(clip.model.visual.transformer.width),
        embed_dim=clip.embed_dim,
        grid=grid,
        clip_size=clip.image_size,
        window=int(params.window or clip.image_size),
        dim=params.dim,
        heads=4 if params.dim % 4 == 0 else 1,
    )
    decoder = TextDecoder(config).to(clip.device)
    train_items, val_items = split_images(list(items), params.val_fraction, params.seed)
    held_ids = {id(item) for item in val_items}
    # Texts: the class through the template (also what segmenting uses) + paraphrases.
    phrases = {c: [c, *paraphrases.get(c, [])] for c in class_names}
    flat = [(c, params.template.format(p)) for c in class_names for p in phrases[c]]
    encoded = clip.encode_texts([t for _, t in flat])
    text_bank = {c: encoded[[i for i, (k, _) in enumerate(flat) if k == c]] for c in class_names}
    val_texts = {c: text_bank[c][0] for c in class_names}

    total_views = sum(
        len(decoder_windows(np.asarray(i.labels).shape[:2], config.window)) for i in items
    ) * (2 if params.augment else 1)
    yield Progress(
        "reading views", 0, len(items), f"CLIP on about {total_views} views", heavy=True
    )
    taps, targets, held = [], [], []
    for n, item in enumerate(items, start=1):
        rgb = prepare_image(item.image).rgb
        if rgb.shape[:2] != np.asarray(item.labels).shape[:2]:
            raise InputError(
                f"{item.name}: labels {np.asarray(item.labels).shape} do not match the image "
                f"{rgb.shape[:2]}."
            )
        masks = class_masks(item)
        boxes, squares = _windows_of(rgb, config.window)
        if id(item) in held_ids:
            feats = _taps(clip, squares, config.taps)
            held.append(_Held(DenseFeatures(boxes, feats, config.window, rgb.shape[:2]), masks))
        else:
            per_view = np.zeros((len(boxes), len(class_names), config.out_size, config.out_size))
            for ci, name in enumerate(class_names):
                if name in masks:
                    for vi, box in enumerate(boxes):
                        per_view[vi, ci] = _target(
                            masks[name], box, config.window, config.out_size
                        )
            taps.append(_taps(clip, squares, config.taps))
            targets.append(torch.from_numpy(per_view).float())
            if params.augment:
                taps.append(_taps(clip, [s[:, ::-1].copy() for s in squares], config.taps))
                targets.append(torch.from_numpy(per_view[..., ::-1].copy()).float())
        yield Progress("reading views", n, len(items), item.name)
    if not taps:
        raise InputError("No training images are left after the validation split.")
    views = _Views(torch.cat(taps), torch.cat(targets))
    # Objects cover a small share of the pixels: BCE weighs them up by the square root
    # of the imbalance (held-out IoU 0.31 -> 0.55 on the synthetic domain).
    share = float(views.targets.mean())
    pos_weight = float(np.clip(np.sqrt((1 - share) / max(share, 1e-6)), 1, 20))
    result = DecoderResult(
        decoder, params, class_names, n_train=len(train_items), n_val=len(val_items)
    )
    pairs = np.array([(v, c) for v in range(len(views.taps)) for c in range(len(class_names))])
    n_batches = math.ceil(len(pairs) / params.batch_size)
    total = params.epochs * n_batches
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=params.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    best_state = copy.deepcopy(decoder.state_dict())
    best_iou = -1.0
    since_best, step = 0, 0
    yield Progress("training", 0, total, f"{len(pairs)} view-class examples per epoch")
    for epoch in range(1, params.epochs + 1):
        decoder.train()
        order = rng.permutation(len(pairs))
        losses = []
        for b in range(n_batches):
            batch = pairs[order[b * params.batch_size : (b + 1) * params.batch_size]]
            v, c = batch[:, 0], batch[:, 1]
            texts = np.stack(
                [
                    text_bank[class_names[ci]][rng.integers(len(text_bank[class_names[ci]]))]
                    for ci in c
                ]
            )
            reduced = decoder.reduce(views.taps[v].to(clip.device))
            logits = decoder(reduced, torch.from_numpy(texts).to(clip.device))
            target = views.targets[v, c].to(clip.device)
            loss = _loss(logits, target, params.loss, pos_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            step += 1
            running = f"epoch {epoch}/{params.epochs} loss {np.mean(losses):.3f}"
            yield Progress("training", step, total, running)
        entry = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5)}
        if held:
            val = score_maps(decoder, held, val_texts)
            entry["val_iou"] = round(val["mean_iou"], 5)
            entry["val_dice"] = round(val["mean_dice"], 5)
            improved = val["mean_iou"] > best_iou
        else:
            val, improved = {}, True
        result.history.append(entry)
        if improved:
            best_iou = val.get("mean_iou", best_iou)
            best_state = copy.deepcopy(decoder.state_dict())
            result.best_epoch, result.best_val = epoch, val
            since_best = 0
        else:
            since_best += 1
        shown = f", validation IoU {entry['val_iou']:.3f}" if held else ""
        summary = f"epoch {epoch}/{params.epochs}: loss {entry['loss']:.3f}{shown}"
        yield Progress("training", step, total, summary)
        if held and since_best >= params.patience:
            result.stopped_early = True
            break
    decoder.load_state_dict(best_state)
    decoder.eval().requires_grad_(False)
    return result


def _patch_size(clip) -> int:
    conv = clip.model.visual.conv1
    return int(conv.kernel_size[0])


def decoder_metadata(result: DecoderResult, loaded_clip: LoadedClip, clip_spec: str, data) -> dict:
    """What a decoder file records about its training."""
    return {
        "clip_spec": clip_spec,
        "clip_sha256": loaded_clip.sha256,
        "class_names": result.class_names,
        "prompt_template": result.params.template,
        "training": {
            **asdict(result.params),
            "data": str(data),
            "n_train_images": result.n_train,
            "n_val_images": result.n_val,
        },
        "metrics": {
            "best_epoch": result.best_epoch,
            "val": _jsonable(result.best_val),
            "stopped_early": result.stopped_early,
            "history": result.history,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def iter_train_decoder_to_file(
    data: str | os.PathLike | Sequence[DatasetImage],
    clip: str,
    output: str | os.PathLike,
    params: DecoderParams | None = None,
    *,
    paraphrases: Mapping[str, Sequence[str]] | None = None,
    device: str = "auto",
) -> Generator[Progress, None, Path]:
    """:func:`train_decoder` as a generator of progress (for GUIs and cancelling)."""
    params = params or DecoderParams()
    output = Path(output)
    if output.suffix != ".safetensors":
        raise InputError(f"The output must be a .safetensors file; got {output.name!r}.")
    yield Progress("loading data", 0, 1, str(data) if isinstance(data, (str, os.PathLike)) else "")
    items = read_dataset_folder(data) if isinstance(data, (str, os.PathLike)) else list(data)
    yield Progress("loading data", 1, 1, f"{len(items)} images")
    dev = resolve_device(device)
    hub = default_hub()
    if not hub.has_clip(clip, dev, "fp32"):
        yield Progress("loading models", 0, 1, f"CLIP {clip}", heavy=True)
    loaded = hub.clip(clip, dev, "fp32")
    result = yield from iter_train_decoder(loaded, items, params, paraphrases)
    meta = decoder_metadata(
        result,
        loaded,
        clip,
        data if isinstance(data, (str, os.PathLike)) else "napari layers",
    )
    meta["paraphrases"] = {k: list(v) for k, v in (paraphrases or {}).items()}
    yield Progress("saving", 0, 1, str(output))
    path = save_decoder(result.decoder, output, meta)
    val = result.best_val.get("mean_iou")
    yield Progress("saving", 1, 1, "saved" if val is None else f"saved; validation IoU {val:.3f}")
    return path


def train_decoder(
    data: str | os.PathLike | Sequence[DatasetImage],
    clip: str,
    output: str | os.PathLike,
    params: DecoderParams | None = None,
    *,
    paraphrases: Mapping[str, Sequence[str]] | None = None,
    device: str = "auto",
    progress: Callable[[Progress], None] | None = None,
) -> Path:
    """Train a text-conditioned decoder on labelled images and write it; returns the path.

    Parameters
    ----------
    data
        A dataset folder (``images/``, ``labels/``, ``classes.csv``) or a list of
        :class:`~.datasets.DatasetImage` (e.g. from napari Labels layers).
    clip
        The CLIP it reads: ``MODEL:TAG`` or a checkpoint path. Segment with the same.
    output
        The ``.safetensors`` file to write.
    params
        Training options (:class:`~napari_slip.core.params.DecoderParams`).
    paraphrases
        Class name -> extra phrases for that class, used as prompts while training.
    progress
        Called with every :class:`Progress` event.
    """
    return drain(
        iter_train_decoder_to_file(
            data, clip, output, params, paraphrases=paraphrases, device=device
        ),
        progress,
    )


__all__ = [
    "ClassScores",
    "DecoderResult",
    "evaluate_decoder",
    "format_decoder_report",
    "iter_train_decoder",
    "iter_train_decoder_to_file",
    "score_maps",
    "split_images",
    "summarise",
    "train_decoder",
    "untrained_map_scores",
]
