"""How good a text-conditioned decoder (or CLIP's untrained map) is on labelled images:
IoU and Dice per class, the decoder's masks being its map above 0.5, as segmentation
uses it (windows over whole images, stitched)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.decoder import DecoderConfig, LoadedDecoder, TextDecoder
from ..models.registry import LoadedClip
from ..pipeline.images import prepare_image
from ..pipeline.relevance import (
    DenseFeatures,
    _square,
    decoder_map,
    decoder_windows,
    tapped_features,
)
from .datasets import DatasetImage


@dataclass
class ClassScores:
    """Pixel counts of one class over a set of images, for IoU and Dice."""

    inter: int = 0
    union: int = 0
    predicted: int = 0
    truth: int = 0

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        self.inter += int(np.logical_and(pred, truth).sum())
        self.union += int(np.logical_or(pred, truth).sum())
        self.predicted += int(pred.sum())
        self.truth += int(truth.sum())

    @property
    def iou(self) -> float:
        return self.inter / self.union if self.union else float("nan")

    @property
    def dice(self) -> float:
        total = self.predicted + self.truth
        return 2 * self.inter / total if total else float("nan")


def class_masks(item: DatasetImage) -> dict[str, np.ndarray]:
    """Class name -> boolean mask of all its objects in ``item``."""
    labels = np.asarray(item.labels)
    out: dict[str, np.ndarray] = {}
    for label, name in item.classes.items():
        mask = labels == int(label)
        out[name] = out[name] | mask if name in out else mask
    return out


def summarise(scores: Mapping[str, ClassScores]) -> dict:
    """Per-class and mean IoU / Dice (classes never seen nor predicted are left out)."""
    per_class = {
        name: {"iou": s.iou, "dice": s.dice, "pixels": s.truth}
        for name, s in sorted(scores.items())
        if s.union
    }
    ious = [v["iou"] for v in per_class.values()]
    dices = [v["dice"] for v in per_class.values()]
    return {
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "mean_dice": float(np.mean(dices)) if dices else float("nan"),
        "per_class": per_class,
    }


@dataclass
class _Held:
    """A held-out image: tapped activations of its windows, and its class masks."""

    dense: DenseFeatures  # features: raw taps (n, T, tokens, width)
    masks: dict[str, np.ndarray]


def _windows_of(rgb: np.ndarray, window: int):
    boxes = decoder_windows(rgb.shape[:2], window)
    fill = rgb.reshape(-1, 3).mean(0).round().astype(np.uint8)
    squares = [_square(rgb[y0:y1, x0:x1], window, fill) for y0, x0, y1, x1 in boxes]
    return boxes, squares


def _taps(clip, squares, taps, batch_size=16) -> torch.Tensor:
    return torch.cat(
        [
            tapped_features(clip, squares[s : s + batch_size], taps)
            for s in range(0, len(squares), batch_size)
        ]
    )


def score_maps(
    decoder: TextDecoder,
    held: Sequence[_Held],
    texts: Mapping[str, np.ndarray],
    level: float = 0.5,
) -> dict:
    """IoU / Dice of the decoder's masks on held-out images, per class and mean."""
    scores = {name: ClassScores() for name in texts}
    was_training = decoder.training
    decoder.eval()
    with torch.no_grad():
        for item in held:
            reduced = decoder.reduce(item.dense.features)
            dense = DenseFeatures(item.dense.windows, reduced, item.dense.window, item.dense.shape)
            for name, text in texts.items():
                pred = decoder_map(decoder, dense, text) > level
                truth = item.masks.get(name)
                scores[name].add(pred, truth if truth is not None else np.zeros_like(pred))
    decoder.train(was_training)
    return summarise(scores)


def held_out(loaded_clip: LoadedClip, items: Sequence[DatasetImage], config: DecoderConfig):
    """Images prepared for :func:`score_maps` with a decoder of ``config``."""
    out = []
    for item in items:
        rgb = prepare_image(item.image).rgb
        boxes, squares = _windows_of(rgb, config.window)
        feats = _taps(loaded_clip.clip, squares, config.taps)
        dense = DenseFeatures(boxes, feats, config.window, rgb.shape[:2])
        out.append(_Held(dense, class_masks(item)))
    return out


def evaluate_decoder(
    loaded_clip: LoadedClip,
    decoder: LoadedDecoder,
    items: Sequence[DatasetImage],
    phrase: Callable[[str], np.ndarray] | None = None,
) -> dict:
    """IoU and Dice of a decoder's masks (its map above 0.5) per class and overall.

    ``phrase`` turns a class name into its text embedding (default: the class through
    the decoder's training template).
    """
    decoder.check_clip(loaded_clip.sha256, loaded_clip.spec)
    decoder.check_fits(loaded_clip.clip)
    names = sorted({n for item in items for n in item.classes.values()} | set(decoder.class_names))
    template = str(decoder.metadata.get("prompt_template") or "a photo of {}.")
    if phrase is None:
        encoded = loaded_clip.clip.encode_texts([template.format(n) for n in names])
        texts = dict(zip(names, encoded, strict=True))
    else:
        texts = {n: phrase(n) for n in names}
    return score_maps(decoder.model, held_out(loaded_clip, items, decoder.config), texts)


def untrained_map_scores(segmenter, items: Sequence[DatasetImage], levels=None) -> dict:
    """IoU / Dice of CLIP's *untrained* relevance map (``segmenter`` without a decoder),
    rescaled to 0-1 per image and thresholded at the level that scores best: the
    baseline a trained decoder must beat, as generous to the map as can be.

    Returns :func:`summarise`'s report at the best level, with ``level`` added.
    """
    from ..pipeline.guided import unit_map

    names = sorted({n for item in items for n in item.classes.values()})
    maps = []
    for item in items:
        segmenter.set_image(item.image)
        maps.append({n: unit_map(segmenter.relevance(n), probability=False) for n in names})
    best: dict = {"mean_iou": -1.0}
    for level in np.linspace(0.05, 0.95, 19) if levels is None else levels:
        scores = {n: ClassScores() for n in names}
        for item, per_class in zip(items, maps, strict=True):
            truth = class_masks(item)
            for n in names:
                unit = per_class[n]
                scores[n].add(unit > level, truth.get(n, np.zeros(unit.shape, bool)))
        report = summarise(scores)
        if report["mean_iou"] > best["mean_iou"]:
            best = {**report, "level": float(level)}
    return best


def format_decoder_report(report: dict) -> str:
    """A plain-text table of :func:`evaluate_decoder`'s report."""
    lines = [
        f"decoder {report.get('decoder', '')} on CLIP {report.get('clip', '')}",
        f"{'class':<20} {'IoU':>6} {'Dice':>6} {'pixels':>9}",
    ]
    for name, row in report["per_class"].items():
        lines.append(f"{name:<20} {row['iou']:>6.3f} {row['dice']:>6.3f} {row['pixels']:>9}")
    lines.append(f"{'mean':<20} {report['mean_iou']:>6.3f} {report['mean_dice']:>6.3f}")
    return "\n".join(lines)


__all__ = [
    "ClassScores",
    "class_masks",
    "evaluate_decoder",
    "format_decoder_report",
    "held_out",
    "score_maps",
    "summarise",
    "untrained_map_scores",
]
