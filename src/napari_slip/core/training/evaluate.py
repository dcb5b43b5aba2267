"""Evaluating segmentation by text on a dataset folder, for before/after comparisons.

For every (image, class present in it) query, the prompt is the class name. A query is
a *hit* when a selected mask has IoU >= 0.5 with an object of that class. Reported per
CLIP: hit rate, mean IoU and Dice of the selected masks (each against its best-matching
object of the class), and precision / recall of one-to-one matches at IoU >= 0.5 (what
matters for the multi-object modes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..params import DEFAULT_SAM, CropParams, SamProposalParams, SelectionParams
from ..pipeline.segmenter import Segmenter
from ..runtime.generators import drain
from ..runtime.progress import Progress
from .datasets import read_dataset_folder

METRICS = ("hit_rate", "mean_iou", "dice", "precision", "recall")


@dataclass
class QueryScore:
    """The outcome of one (image, class) query."""

    hit: bool
    ious: list[float]  # best IoU of each selected mask with an object of the class
    dices: list[float]
    matched: int  # one-to-one matches at IoU >= threshold
    n_selected: int
    n_truth: int
    chance: float  # hit probability of picking one proposal at random (label proposals)


def score_query(
    selected: np.ndarray,
    truth: list[np.ndarray],
    iou_threshold: float = 0.5,
    n_objects: int | None = None,
) -> QueryScore:
    """Score one query's label image against the true masks of the queried class."""
    ids = [i for i in np.unique(selected) if i != 0]
    masks = [selected == i for i in ids]
    iou = np.zeros((len(masks), len(truth)))
    dice = np.zeros_like(iou)
    for a, m in enumerate(masks):
        for b, t in enumerate(truth):
            inter = np.logical_and(m, t).sum()
            union = np.logical_or(m, t).sum()
            iou[a, b] = inter / union if union else 0.0
            dice[a, b] = 2 * inter / (m.sum() + t.sum()) if (m.sum() + t.sum()) else 0.0
    best = iou.argmax(1) if len(truth) else np.zeros(len(masks), int)
    ious = [float(iou[a, best[a]]) if len(truth) else 0.0 for a in range(len(masks))]
    dices = [float(dice[a, best[a]]) if len(truth) else 0.0 for a in range(len(masks))]
    # Greedy one-to-one matching, highest IoU first.
    matched, used_a, used_b = 0, set(), set()
    for a, b in sorted(np.ndindex(iou.shape), key=lambda ab: -iou[ab]):
        if iou[a, b] < iou_threshold:
            break
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            matched += 1
    chance = len(truth) / n_objects if n_objects else float("nan")
    return QueryScore(matched > 0, ious, dices, matched, len(masks), len(truth), chance)


def summarise(scores: Sequence[QueryScore]) -> dict:
    """Aggregate query scores into the reported metrics."""
    ious = [v for s in scores for v in s.ious]
    dices = [v for s in scores for v in s.dices]
    selected = sum(s.n_selected for s in scores)
    truth = sum(s.n_truth for s in scores)
    matched = sum(s.matched for s in scores)
    chances = [s.chance for s in scores if not np.isnan(s.chance)]
    return {
        "queries": len(scores),
        "hit_rate": float(np.mean([s.hit for s in scores])) if scores else None,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "dice": float(np.mean(dices)) if dices else None,
        "precision": matched / selected if selected else None,
        "recall": matched / truth if truth else None,
        "selected": selected,
        "chance_hit_rate": float(np.mean(chances)) if chances else None,
    }


def iter_evaluate(
    data: str | os.PathLike,
    clips: Sequence[str],
    *,
    proposals: str = "labels",
    sam: str = DEFAULT_SAM,
    device: str = "auto",
    mode: str = SelectionParams.default("mode"),
    threshold: float | None = None,
    top_k: int = SelectionParams.default("top_k"),
    iou_threshold: float = 0.5,
    sam_params: SamProposalParams | None = None,
    crop_params: CropParams | None = None,
    templates: Sequence[str] | None = None,
) -> Generator[Progress, None, dict[str, dict]]:
    """Evaluate each CLIP on a dataset folder; returns ``{clip: metrics}``.

    Parameters
    ----------
    data
        A dataset folder (``images/``, ``labels/``, ``classes.csv``).
    clips
        CLIPs to compare (``MODEL:TAG`` or checkpoint paths).
    proposals
        ``labels`` (every labelled object is a candidate: measures CLIP alone) or
        ``sam`` (SAM's automatic masks: measures the whole pipeline).
    mode, threshold, top_k
        Selection, as when segmenting. In ``distractors`` mode the other classes of the
        dataset are the distractors.
    """
    if proposals not in ("labels", "sam"):
        raise InputError(f"proposals must be 'labels' or 'sam'; got {proposals!r}.")
    if not clips:
        raise InputError("Give at least one CLIP to evaluate.")
    items = read_dataset_folder(data)
    all_classes = sorted({c for item in items for c in item.classes.values()})
    n_queries = sum(len(set(item.classes.values())) for item in items)
    report = {}
    for spec in clips:
        seg = Segmenter(
            sam,
            spec,
            device,
            sam_params=sam_params,
            crop_params=crop_params,
            templates=templates,
            cache_size=2,
        )
        scores, done = [], 0
        yield Progress("evaluating", 0, n_queries, spec)
        for item in items:
            labelled = [v for v in np.unique(item.labels) if v != 0]
            for cls in sorted(set(item.classes.values())):
                distractors = [c for c in all_classes if c != cls] if mode == "distractors" else ()
                result = seg.segment(
                    item.image,
                    cls,
                    mode=mode,
                    threshold=threshold,
                    top_k=top_k,
                    distractors=distractors,
                    labels=item.labels if proposals == "labels" else None,
                )
                truth = [item.labels == v for v, c in item.classes.items() if c == cls]
                scores.append(
                    score_query(
                        result.labels,
                        truth,
                        iou_threshold,
                        len(labelled) if proposals == "labels" else None,
                    )
                )
                done += 1
                yield Progress("evaluating", done, n_queries, f"{spec}: {item.name} {cls!r}")
        report[spec] = {**summarise(scores), "mode": mode, "proposals": proposals}
    return report


def evaluate(
    data, clips: Sequence[str], progress: Callable[[Progress], None] | None = None, **options
) -> dict[str, dict]:
    """:func:`iter_evaluate`, drained."""
    return drain(iter_evaluate(data, clips, **options), progress)


def format_report(report: dict[str, dict]) -> str:
    """A plain-text table of an evaluation report."""
    header = ["clip", "queries", *METRICS]
    rows = [header]
    for spec, m in report.items():
        rows.append(
            [spec, str(m["queries"])] + ["-" if m[k] is None else f"{m[k]:.3f}" for k in METRICS]
        )
    chance = [m.get("chance_hit_rate") for m in report.values()]
    if chance and chance[0] is not None and next(iter(report.values()))["mode"] == "best":
        rows.append(["(random pick)", rows[1][1], f"{chance[0]:.3f}", "", "", "", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
