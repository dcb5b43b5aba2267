"""``napari-slip models``: known models, whether each is cached, where, this machine."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "models", help="list known models, whether each is cached, and where; this CPU"
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="measure now which precision is fastest per stage on this CPU (what "
        "--precision auto uses; 15-25 s, cached)",
    )


def run(args: argparse.Namespace) -> int:
    from ..core.models import autotune, autotune_report
    from ..core.models.download import cache_dir
    from ..core.models.listing import list_models
    from ..core.models.registry import available_devices
    from ..core.runtime.perf import describe_machine

    rows = list_models()
    print(describe_machine())
    if getattr(args, "measure", False):
        autotune.measure_now()
    print("\n".join(autotune_report.describe()))
    print(f"devices: {', '.join(available_devices())}")
    print(f"cache folder: {cache_dir()}  (set NAPARI_SLIP_CACHE to move it)")
    width = max(len(r.name) for r in rows)
    for r in rows:
        state = "cached " if r.cached else "missing"
        print(f"{r.kind:<16} {r.name:<{width}}  {state}  {r.path}")
        if r.description:
            print(f"{'':<16} {'':<{width}}           {r.description}")
    return 0
