"""One image of a batch, in whichever process runs it (this one or a Dask worker): its
segmentation, its labels file and its record. A worker loads its models once."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from .batch_files import BatchItem, _write_record, read_record
from .errors import SlipError
from .runtime.generators import drain
from .runtime.progress import Progress

_WORKER_SEGMENTERS: dict[tuple, Any] = {}


def _segmenter(config: Any):
    """This process's segmenter for the config's models (loaded once per process)."""
    from .pipeline.segmenter import Segmenter

    models = config.models
    key = (models.sam, models.clip, models.device, models.precision)
    seg = _WORKER_SEGMENTERS.get(key)
    if seg is None:
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            from .models import autotune

            autotune.in_foreground()  # a worker process: never a measurement of its own
        if config.threads:
            import torch

            from .runtime.perf import cap_threads

            torch.set_num_threads(config.threads)
            cap_threads(config.threads)  # auto's per-stage threads stay within the share
        # One image at a time, never revisited: no per-image caches to keep.
        seg = Segmenter(
            models.sam,
            models.clip,
            models.device,
            precision=models.precision,
            cache_size=1,
            disk_cache=False,
        )
        _WORKER_SEGMENTERS.clear()
        _WORKER_SEGMENTERS[key] = seg
    return seg


def process(
    item: BatchItem,
    config: Any,
    out_dir: str | os.PathLike,
    reader: Callable[[Path], Any] | None = None,
) -> dict:
    """Segment one input and write its labels, then its record; return the record.

    Never raises for a bad input: the record says ``failed`` and why.
    """
    return drain(iter_process(item, config, out_dir, reader))


def iter_process(
    item: BatchItem,
    config: Any,
    out_dir: str | os.PathLike,
    reader: Callable[[Path], Any] | None = None,
) -> Generator[Progress, None, dict]:
    """:func:`process` as a generator of the image's own progress (its stages), for a
    batch run in this process. Closed midway (a cancel), it writes nothing for the
    image: no labels, no record, so the next run does it again."""
    from .io import Outputs, open_image, write_labels, write_stack_labels_to
    from .pipeline.dispatch import ImageInputs, iter_segment_image

    out_dir = Path(out_dir)
    start = time.perf_counter()
    record: dict[str, Any] = {
        "input": str(item.path),
        "name": item.name,
        "labels": item.labels_name,
        "params": config.digest(),
    }
    previous = read_record(out_dir, item) or {}
    wrote_before = bool(previous.get("wrote") or previous.get("status") == "done")
    try:
        if reader is not None:
            image = reader(item.path)
        else:
            image = open_image(item.path, lazy=config.run.tile_params.tiles != "off")
        pixel_size = dict(config.pixel_size) if config.pixel_size else None
        inputs = ImageInputs(axes=config.axes, pixel_size=pixel_size, path=item.path)
        run = iter_segment_image(_segmenter(config), image, config.run, inputs)
        result = yield from run
        # Claimed before it is written: killed between the two, the labels stay ours.
        _write_record(out_dir, item, {**record, "status": "writing", "wrote": True})
        target = out_dir / item.labels_name
        if getattr(result, "axes", "YX") != "YX":  # a stack: one label image, its axes
            Outputs({"labels": target}, overwrite=True).write(
                {
                    "labels": lambda tmp: write_stack_labels_to(
                        tmp,
                        result.labels,
                        target.suffix.lower(),
                        result.axes,
                        result.scale,
                        result.unit,
                    )
                }
            )
        else:
            write_labels(target, result.labels)
        record.update(
            status="done",
            wrote=True,
            n_objects=result.n_objects,
            message=result.message,
            objects=json.loads(result.table.to_json(orient="records")),
        )
    except SlipError as exc:
        record.update(status="failed", error=exc.for_surface("cli"))
    except MemoryError:
        record.update(status="failed", error="out of memory on this image")
    except Exception as exc:  # one bad image must not stop the batch
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    if record["status"] != "done":
        # The labels file there (if any) is still ours if an earlier run wrote it.
        record["wrote"] = wrote_before and (out_dir / item.labels_name).is_file()
    record["seconds"] = round(time.perf_counter() - start, 3)
    # Which process did the work, and how often it has loaded models so far.
    from .models.hub import default_hub

    record["worker"] = {"pid": os.getpid(), "model_loads": dict(default_hub().loads)}
    try:
        _write_record(out_dir, item, record)
    except (OSError, SlipError) as exc:  # the item failed; the batch goes on
        message = exc.for_surface("cli") if isinstance(exc, SlipError) else str(exc)
        if record["status"] == "done":  # labels without a record would look foreign
            (out_dir / item.labels_name).unlink(missing_ok=True)
        error = f"could not write its record ({message})"
        record.update(status="failed", wrote=False, error=error)
    return record


__all__ = ["process"]
