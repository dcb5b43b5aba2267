"""Many images: resumable batches, in this process or on a Dask cluster.

:func:`iter_batch` segments every image of some files, folders and globs and writes,
under one output folder:

- one label image per input, at the input's relative name with ``.tif``
  (``plate/A01.png`` -> ``OUT/plate/A01.tif``);
- ``objects.csv``: every object of every image, with an ``image`` column;
- ``summary.json``: the parameters, their hash, and each input's outcome (done,
  skipped, failed with the reason).

Each input also gets a small record in ``OUT/.napari-slip/``: it claims the labels
file before it is written and says done after; both are written atomically (a
temporary file renamed when complete). A second run skips inputs whose record says
done with the same parameter hash and whose labels exist, and redoes the others:
stale (other parameters), failed, or interrupted ones. A file in ``OUT`` that no
record claims (a raw image with an output's name, another tool's results) is never
replaced without ``overwrite``; temporaries a killed run left are removed when the
next one starts. One bad input is reported and does not stop the batch.

Work runs in this process (one worker), on a local Dask cluster of worker processes
(more workers), or on an existing cluster (``scheduler="tcp://host:8786"``). A
worker loads its models once and keeps them for every image it gets; it writes its
outputs itself; if it dies mid-image, the scheduler gives the image to another
worker, and the atomic writes leave nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .axes import check_scale, parse_axes
from .batch_cluster import (
    CONNECT_TIMEOUT,
    WORKER_TIMEOUT,
    check_given_workers,
    check_scheduler,
    check_workers,
    client_for,
    default_workers,
    iter_wait_for_workers,
)
from .batch_files import (
    BatchSummary,
    _check_out_dir,
    _not_ours,
    _write_summary,
    collect_inputs,
    is_done,
)
from .batch_worker import iter_process, process
from .config import OPTIONS, Models, RunConfig
from .errors import InputError
from .params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    check_options,
)
from .proposal_kinds import kinds_where
from .runtime.generators import drain, relabel
from .runtime.progress import Progress

#: Run options a batch's parameters always record (others: where not their default).
_RECORDED_ALWAYS = (
    "proposals",
    "selection",
    "sam_params",
    "tile_params",
    "guided_params",
    "crop_params",
    "normalisation",
)


def _default_of(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _model_identity(spec: str) -> str:
    """A model's name, or a local file's content hash (moving a file changes nothing)."""
    path = Path(spec).expanduser()
    if path.is_file():
        from .models.download import file_sha256

        return f"sha256:{file_sha256(path)}"
    return spec


@dataclass(frozen=True)
class BatchConfig:
    """A batch's settings: the run every image gets (a :class:`~.config.RunConfig`)
    and the batch's own. Everything that decides the outputs names them (its hash).

    Parameters
    ----------
    run
        The run each image gets (validated as a whole).
    threads
        Torch threads per worker (None: torch's default).
    axes, pixel_size
        Axes of inputs whose files do not record them (e.g. ``"ZYX"``), and pixel sizes
        that replace the files' (see :func:`napari_slip.core.axes.resolve_axes`).
    """

    run: RunConfig
    threads: int | None = None
    axes: str | None = None
    pixel_size: tuple[tuple[str, float], ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.run, RunConfig):
            raise InputError(f"run must be a RunConfig; got {type(self.run).__name__}.")
        if self.run.proposals not in kinds_where(per_image=False):
            *most, last = kinds_where(per_image=False)
            shown = f"{', '.join(most)} or {last}"
            raise InputError(f"A batch's proposals are {shown}; got {self.run.proposals!r}.")
        if self.axes is not None:
            object.__setattr__(self, "axes", parse_axes(self.axes, where="axes"))
        if self.pixel_size is not None:
            sizes = dict(self.pixel_size)
            letters = self.axes or "".join(a for a in "TZYX" if a in sizes or a in "YX")
            sizes = check_scale(sizes, letters)
            object.__setattr__(self, "pixel_size", tuple(sorted(sizes.items())))

    @classmethod
    def from_run(
        cls,
        run: RunConfig,
        threads: int | None = None,
        axes: str | None = None,
        pixel_size: Any = None,
    ) -> BatchConfig:
        """The batch of ``run``'s settings (``threads``: torch threads per worker;
        ``axes``, ``pixel_size``: for stacks whose files do not record them)."""
        return cls(run, threads, axes, pixel_size)

    @property
    def models(self) -> Models:
        return self.run.models

    def run_config(self) -> RunConfig:
        """The run each image gets."""
        return self.run

    def describe(self) -> dict:
        """The parameters as JSON-able data, models by identity (the layout of batches
        before the run was one object, so their digests still hold: a run option is
        recorded where it is not its default)."""
        run, models = self.run, self.run.models
        data: dict[str, Any] = {
            "prompt": run.prompt,
            "sam": _model_identity(models.sam),
            "clip": _model_identity(models.clip),
            "device": models.device,
            "precision": models.precision,
            "templates": run.templates,
            "decoder": None if models.decoder is None else _model_identity(models.decoder),
        }
        for f in fields(RunConfig):
            value = getattr(run, f.name)
            if f.name in _RECORDED_ALWAYS or (
                f.name not in ("target", "models") and value != _default_of(f)
            ):
                if hasattr(value, "recorded"):  # a parameter group: its new fields when set
                    value = value.recorded()
                data[f.name] = asdict(value) if is_dataclass(value) else value
        if run.target.concept is not None:
            from .concepts.files import fingerprint

            data["concept"] = fingerprint(run.target.concept)
        if run.target.concept_class is not None:
            data["concept_class"] = run.target.concept_class
        for name in ("axes", "pixel_size"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    def digest(self) -> str:
        """A hash of everything that changes the outputs (not where or how fast)."""
        data = self.describe()
        data.pop("device")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- one image, in whichever process runs it -------------------------------------------


# --- many images -----------------------------------------------------------------------


def _check_clips(config: BatchConfig) -> None:
    """A decoder trained on, or a concept learnt with, another CLIP than the batch's is
    one line before the first image (compared by the CLIP file's SHA-256, where the
    file is here), not one failure per image."""
    from .models.download import file_sha256

    clip = Path(config.models.clip).expanduser()
    concept, decoder = config.run.target.concept, config.models.decoder
    if concept is not None and clip.is_file():
        concept.check_clip(file_sha256(clip), clip.name)
    if not decoder:
        return
    from .models.decoder import read_decoder_metadata

    meta = read_decoder_metadata(decoder)
    trained = meta.get("clip_sha256")
    if isinstance(trained, str) and trained and clip.is_file() and file_sha256(clip) != trained:
        raise InputError(
            f"The decoder {Path(decoder).name} was trained on "
            f"{meta.get('clip_spec') or 'another CLIP'}, not on {config.models.clip}: choose the "
            "CLIP it was trained on, or train a decoder for this CLIP."
        )


def iter_batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: BatchConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    reader: Callable[[Path], Any] | None = None,
    overwrite: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    worker_timeout: float = WORKER_TIMEOUT,
) -> Generator[Progress, None, BatchSummary]:
    """:func:`batch` as a generator of :class:`Progress` (one event per image).

    Closing the generator (cancelling) stops handing out images; images already
    written stay, and the next run resumes after them.
    """
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    for name, value in (("connect_timeout", connect_timeout), ("worker_timeout", worker_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InputError(f"{name} must be a positive number of seconds; got {value!r}.")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = None if hasattr(inputs, "shape") else list(inputs)
    if not inputs or not all(isinstance(i, (str, os.PathLike)) for i in inputs):
        raise InputError(
            "batch() takes image files, folders and globs (paths); for arrays already in "
            "memory, call napari_slip.segment() on each."
        )
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InputError(f"out_dir must be a folder path; got {type(out_dir).__name__}.")
    out_dir = Path(out_dir).expanduser()
    config.run_config()  # every check before the first image, not once per image
    _check_clips(config)
    check_given_workers(workers)
    items = collect_inputs(inputs, exclude=out_dir)
    _check_out_dir(out_dir, items)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = config.digest()
    todo = [item for item in items if not is_done(out_dir, item, digest)]
    skipped = [item.name for item in items if item not in todo]
    foreign = [] if overwrite else _not_ours(out_dir, todo)
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InputError(
            f"{len(foreign)} file(s) in {out_dir} were not written by a napari-slip batch "
            f"and would be replaced: {shown}{more}. Choose another output folder, or pass "
            "--overwrite (overwrite=True) to replace them."
        )
    from .io import remove_stale_temporaries

    remove_stale_temporaries(out_dir)  # what a killed run left half-written
    n = len(items)
    workers, warning = check_workers(
        workers or (1 if scheduler else default_workers()), max(1, len(todo))
    )
    start = time.perf_counter()
    records: dict[str, dict] = {}
    done = len(skipped)
    yield Progress("batch", done, n, f"{len(skipped)} already done" if skipped else "starting")
    if warning and not scheduler:
        yield Progress("batch", done, n, f"warning: {warning}")
    if todo and workers == 1 and not scheduler:
        for k, item in enumerate(todo, start=1):
            yield Progress("batch", done, n, item.name, heavy=True)
            tag = f"image {k}/{len(todo)} {item.name}"  # its own stages, named after it
            run = iter_process(item, config, out_dir, reader)
            records[item.name] = yield from relabel(run, lambda e, t=tag: f"{t}: {e.message}")
            done += 1
            yield Progress("batch", done, n, _line(records[item.name]))
    elif todo:
        from distributed import as_completed

        cores = os.cpu_count() or 1
        if config.threads is None and not scheduler:
            config = replace(config, threads=max(1, cores // workers))
        what = f"connecting to {scheduler}" if scheduler else f"starting {workers} workers"
        yield Progress("batch", done, n, what, heavy=True)
        with client_for(scheduler, workers, connect_timeout) as client:
            if scheduler:
                yield from iter_wait_for_workers(client, scheduler, worker_timeout, done, n)
            futures = [
                client.submit(process, item, config, str(out_dir), reader, pure=False, retries=2)
                for item in todo
            ]
            try:
                for future in as_completed(futures):
                    record = future.result()
                    records[record["name"]] = record
                    done += 1
                    yield Progress("batch", done, n, _line(record))
            finally:
                client.cancel([f for f in futures if not f.done()])
    summary = BatchSummary(
        out_dir=out_dir,
        done=[i.name for i in todo if records.get(i.name, {}).get("status") == "done"],
        skipped=skipped,
        failed={
            i.name: records[i.name].get("error", "")
            for i in todo
            if records.get(i.name, {}).get("status") == "failed"
        },
        params=digest,
        seconds=round(time.perf_counter() - start, 3),
        workers=workers,
    )
    _write_summary(out_dir, items, config, summary, records)
    return summary


def _line(record: dict) -> str:
    if record.get("status") == "done":
        return f"{record['name']}: {record.get('n_objects', 0)} object(s)"
    return f"{record['name']}: failed: {record.get('error', '')}"


#: Keyword options of :func:`batch` that build its :class:`BatchConfig`: a run's
#: (:data:`~.config.OPTIONS`, its models given by name; no relevance maps are kept), the
#: axes and pixel sizes of files that do not record them, threads per worker.
BATCH_OPTIONS = (
    *(o for o in OPTIONS if o not in ("sam", "clip", "device", "relevance")),
    "axes",
    "pixel_size",
    "threads",
)


def _optional_str(value) -> str | None:
    return None if value is None else str(value)


def make_config(
    prompt: Any, sam: str = DEFAULT_SAM, clip: str | None = None, device: str = "auto", **options
) -> BatchConfig:
    """A :class:`BatchConfig` from the keyword options of :func:`batch`, every check
    (models, combinations) made once, before any image. ``clip`` None: the default, or
    the CLIP a concept given as ``prompt`` was learnt with."""
    check_options(options, BATCH_OPTIONS, "batch()")
    if clip is None:
        clip = getattr(prompt, "clip_spec", lambda: None)() or DEFAULT_CLIP
    threads = options.pop("threads", None)
    axes, pixel_size = options.pop("axes", None), options.pop("pixel_size", None)
    run = RunConfig.build(prompt, "batch()", sam=sam, clip=clip, device=device, **options)
    return BatchConfig.from_run(run, threads=threads, axes=axes, pixel_size=pixel_size)


def batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    prompt: Any,
    *,
    sam: str = DEFAULT_SAM,
    clip: str | None = None,
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    reader: Callable[[Path], Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    overwrite: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    worker_timeout: float = WORKER_TIMEOUT,
    **options: Any,
) -> BatchSummary:
    """Segment every image of ``inputs`` into ``out_dir``, resumably.

    Parameters
    ----------
    inputs
        Files, folders (searched recursively; a ``.zarr`` folder is one image) and
        globs such as ``"plate1/*.tif"``.
    out_dir
        Where label images (same relative names, ``.tif``), ``objects.csv`` and
        ``summary.json`` go. Run again to resume: inputs done with the same
        parameters are skipped.
    prompt
        What to segment: a text, or a :class:`~.concepts.Concept` (its classes go in
        ``objects.csv``'s ``class`` and ``class_probability``; ``concept_class=`` keeps one).
    clip
        Default :data:`~.params.DEFAULT_CLIP`, or the CLIP a concept was learnt with.
    workers
        Worker processes (default: one per 2 cores and 4 GB; 1 runs in this process;
        never more than images to do, at most four per core).
    scheduler
        Address of a running Dask scheduler (``tcp://host:8786``) to run on instead.
    reader
        ``f(path) -> array`` for formats napari-slip does not read itself.
    progress
        Called with a :class:`Progress` per image.
    connect_timeout, worker_timeout
        Seconds a ``scheduler`` has to answer, and to get its first worker (a progress
        line says it is waiting); then the batch stops with one line.
    overwrite
        Replace files in ``out_dir`` that no earlier batch there wrote (a label image
        of another tool, a raw image with an output's name). Without it such files are
        refused before any work; a batch's own outputs are always updated.
    **options
        As for :func:`~napari_slip.segment`: selection (``mode``, ``threshold``, ...),
        normalisation (``channel_axis``, ...), ``sam_params``, ``crop_params``,
        ``tile_params``/``tiles``, ``templates``, ``precision``; and ``threads``
        (torch threads per worker).

    Returns
    -------
    BatchSummary
    """
    config = make_config(prompt, sam, clip, device, **options)
    gen = iter_batch(
        inputs,
        out_dir,
        config,
        workers=workers,
        scheduler=scheduler,
        reader=reader,
        overwrite=overwrite,
        connect_timeout=connect_timeout,
        worker_timeout=worker_timeout,
    )
    return drain(gen, progress)


__all__ = ["BatchConfig", "BatchSummary", "batch", "collect_inputs", "iter_batch", "process"]
