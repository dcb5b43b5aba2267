"""What ``napari-slip models`` prints of ``precision="auto"``: the measured table of
each stage's probe per precision and thread count, the fidelity refusals, the choice,
and the grid's point batch (see :mod:`.autotune`)."""

from __future__ import annotations

from ..runtime.perf import STAGES
from .autotune import FIDELITY, enabled, guess, load_measurement


def describe() -> list[str]:
    """Lines for ``napari-slip models``: the measured table and ``auto``'s choice."""
    if not enabled():  # a stored measurement is not used: say so, not show it
        return [
            f"precision 'auto' by measurement: off (NAPARI_SLIP_AUTOTUNE=0): auto gives "
            f"{guess()} (the flag table); any stored measurement is not used"
        ]
    entry = load_measurement()
    if entry is None:
        return [
            f"precision 'auto' by measurement: not measured yet; until then {guess()} "
            "(`napari-slip models --measure` measures now, in 15-25 s)"
        ]
    return describe_entry(entry)


def describe_entry(entry: dict) -> list[str]:
    """The lines of :func:`describe` for one measurement."""
    lines = [
        f"precision 'auto' measured {entry['measured_at']} in {entry['seconds']} s "
        f"(probes of ViT-B shapes, random weights; seconds per probe run):"
    ]
    for stage in STAGES:
        cells = []
        if stage not in entry["table"]:
            continue
        for precision, row in entry["table"][stage].items():
            cos = entry["fidelity"][stage].get(precision, 0.0)
            times = ", ".join(f"{t * 1000:.0f} ms x{n}" for n, t in row.items())
            refused = "" if cos >= FIDELITY else f" (cos {cos:.3f}: refused)"
            cells.append(f"{precision} {times}{refused}")
        pick = entry["choice"][stage]
        lines.append(
            f"  {stage:<8} {'; '.join(cells)}  -> {pick['precision']} with "
            f"{pick['threads']} thread(s)"
        )
    per_point = entry.get("point_batch")
    if per_point:
        times = ", ".join(f"{b}: {t * 1000:.1f} ms" for b, t in per_point.items())
        lines.append(
            f"  grid     per point, by points per batch: {times}  -> "
            f"{entry['choice']['decoder'].get('point_batch')} points per batch"
        )
    return lines


__all__ = ["describe", "describe_entry"]
