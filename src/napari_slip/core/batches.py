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

import contextlib
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import Models, RunConfig
from .errors import InputError, SlipError
from .params import (
    DEFAULT_CLIP,
    DEFAULT_SAM,
    CropParams,
    GuidedParams,
    NormalisationParams,
    SamProposalParams,
    SelectionParams,
    TileParams,
    check_options,
)
from .runtime.generators import drain
from .runtime.progress import Progress

#: Inputs a batch picks up in folders (a ``.zarr`` folder is one image).
SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".zarr")
#: Where per-input records live inside the output folder.
RECORDS = ".napari-slip"


@dataclass(frozen=True)
class BatchItem:
    """One input: its path and its name relative to what was given (posix)."""

    path: Path
    name: str

    @property
    def labels_name(self) -> str:
        """The output's relative name: the input's with ``.tif``."""
        name = (
            self.name[: -len(".ome.tif")] if self.name.lower().endswith(".ome.tif") else self.name
        )
        return str(Path(name).with_suffix(".tif").as_posix())


def _wanted(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def collect_inputs(
    inputs: Iterable[str | os.PathLike], exclude: Path | None = None
) -> list[BatchItem]:
    """Files, folders (searched recursively) and globs -> inputs with unique names.

    Raises
    ------
    InputError
        For an input that does not exist or matches nothing, or two inputs that would
        write the same output.
    """
    exclude = exclude.resolve() if exclude is not None else None
    items: list[BatchItem] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir() and path.suffix.lower() != ".zarr":
            found = []
            for root, dirs, files in os.walk(path):
                here = Path(root)
                if exclude is not None and (
                    here.resolve() == exclude or exclude in here.resolve().parents
                ):
                    dirs[:] = []
                    continue
                keep = [d for d in dirs if not d.startswith(".")]
                found += [here / d for d in keep if d.lower().endswith(".zarr")]
                dirs[:] = sorted(d for d in keep if not d.lower().endswith(".zarr"))
                found += [here / f for f in files if _wanted(Path(f))]
            items += [BatchItem(p, p.relative_to(path).as_posix()) for p in sorted(found)]
            if not found:
                raise InputError(f"The folder {path} holds no images ({', '.join(SUFFIXES)}).")
        elif path.exists():
            items.append(BatchItem(path, path.name))
        else:
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            matches = [m for m in matches if _wanted(m)]
            if not matches:
                raise InputError(f"{given} is not a file or folder and matches no image.")
            items += [BatchItem(m, m.name) for m in matches]
    seen: dict[str, Path] = {}
    unique = []
    for item in items:
        other = seen.get(item.labels_name)
        if other is not None and other.resolve() == item.path.resolve():
            continue  # the same file given twice
        if other is not None:
            raise InputError(
                f"{other} and {item.path} would both write {item.labels_name}: give their "
                "folder instead, so their relative names stay apart."
            )
        seen[item.labels_name] = item.path
        unique.append(item)
    if not unique:
        raise InputError("No inputs given.")
    return unique


def _model_identity(spec: str) -> str:
    """A model's name, or a local file's content hash (moving a file changes nothing)."""
    path = Path(spec).expanduser()
    if path.is_file():
        from .models.download import file_sha256

        return f"sha256:{file_sha256(path)}"
    return spec


@dataclass(frozen=True)
class BatchConfig:
    """Everything that decides a batch's outputs (its hash names them)."""

    prompt: str
    sam: str = DEFAULT_SAM
    clip: str = DEFAULT_CLIP
    device: str = "auto"
    precision: str = "auto"
    sam_params: SamProposalParams = field(default_factory=SamProposalParams)
    crop_params: CropParams = field(default_factory=CropParams)
    tile_params: TileParams = field(default_factory=TileParams)
    selection: SelectionParams = field(default_factory=SelectionParams)
    normalisation: NormalisationParams = field(default_factory=NormalisationParams)
    templates: tuple[str, ...] | None = None
    #: Torch threads per worker (None: torch's default).
    threads: int | None = None
    #: ``sam`` (the grid, or tiles), ``relevance`` or ``guided`` (see Segmenter.segment).
    proposals: str = "sam"
    #: A trained decoder file for the relevance map (None: CLIP's untrained map).
    decoder: str | None = None
    guided_params: GuidedParams = field(default_factory=GuidedParams)

    def __post_init__(self) -> None:
        if self.proposals not in ("sam", "relevance", "guided"):
            raise InputError(
                f"A batch's proposals are sam, relevance or guided; got {self.proposals!r}."
            )

    def run_config(self) -> RunConfig:
        """The run each image gets, validated as a whole (loads nothing)."""
        return RunConfig(
            prompt=self.prompt,
            models=Models(self.sam, self.clip, self.device, self.precision, self.decoder),
            proposals=self.proposals,
            selection=self.selection,
            templates=self.templates,
            sam_params=self.sam_params,
            tile_params=self.tile_params,
            guided_params=self.guided_params,
            crop_params=self.crop_params,
            normalisation=self.normalisation,
        )

    def describe(self) -> dict:
        """The parameters as JSON-able data, models by identity."""
        data = asdict(self)
        data.pop("threads")
        data["sam"] = _model_identity(self.sam)
        data["clip"] = _model_identity(self.clip)
        if self.decoder is not None:
            data["decoder"] = _model_identity(self.decoder)
        return data

    def digest(self) -> str:
        """A hash of everything that changes the outputs (not where or how fast)."""
        data = self.describe()
        data.pop("device")
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- one image, in whichever process runs it -------------------------------------------

_WORKER_SEGMENTERS: dict[tuple, Any] = {}


def _segmenter(config: BatchConfig):
    """This process's segmenter for the config's models (loaded once per process)."""
    from .pipeline.segmenter import Segmenter

    key = (config.sam, config.clip, config.device, config.precision)
    seg = _WORKER_SEGMENTERS.get(key)
    if seg is None:
        if config.threads:
            import torch

            torch.set_num_threads(config.threads)
        # One image at a time, never revisited: no per-image caches to keep.
        seg = Segmenter(
            config.sam,
            config.clip,
            config.device,
            precision=config.precision,
            cache_size=1,
            disk_cache=False,
        )
        _WORKER_SEGMENTERS.clear()
        _WORKER_SEGMENTERS[key] = seg
    return seg


def _atomic_text(path: Path, text: str) -> None:
    from .io import Outputs

    Outputs({"file": path}, overwrite=True).write({"file": lambda tmp: Path(tmp).write_text(text)})


def _record_path(out_dir: Path, item: BatchItem) -> Path:
    return out_dir / RECORDS / f"{item.labels_name}.json"


def process(
    item: BatchItem,
    config: BatchConfig,
    out_dir: str | os.PathLike,
    reader: Callable[[Path], Any] | None = None,
) -> dict:
    """Segment one input and write its labels, then its record; return the record.

    Never raises for a bad input: the record says ``failed`` and why.
    """
    from .io import open_image, write_labels

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
            image = open_image(item.path, lazy=config.tile_params.tiles != "off")
        result = drain(_segmenter(config).iter_run(image, config.run_config()))
        # Claimed before it is written: killed between the two, the labels stay ours.
        _write_record(out_dir, item, {**record, "status": "writing", "wrote": True})
        write_labels(out_dir / item.labels_name, result.labels)
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


def _write_record(out_dir: Path, item: BatchItem, record: dict) -> None:
    path = _record_path(out_dir, item)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(path, json.dumps(record, indent=1))


def read_record(out_dir: Path, item: BatchItem) -> dict | None:
    """An input's record, or None if it is missing or unreadable."""
    try:
        record = json.loads(_record_path(out_dir, item).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_done(out_dir: Path, item: BatchItem, digest: str) -> bool:
    """Whether an earlier run made this input's outputs with these parameters."""
    record = read_record(out_dir, item)
    return (
        record is not None
        and record.get("status") == "done"
        and record.get("params") == digest
        and (out_dir / item.labels_name).is_file()
    )


# --- many images -----------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What a batch did."""

    out_dir: Path
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    params: str
    seconds: float
    workers: int

    @property
    def n_inputs(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)

    def sentence(self) -> str:
        parts = [f"{len(self.done)} segmented"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already done (skipped)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (see summary.json)")
        return f"{self.n_inputs} images: " + ", ".join(parts) + "."


def default_workers() -> int:
    """Worker processes for this machine: one per 2 cores and 4 GB of memory, at least 1."""
    cores = os.cpu_count() or 1
    try:
        import psutil

        memory_gb = psutil.virtual_memory().total / 2**30
    except ImportError:  # pragma: no cover - psutil comes with distributed
        memory_gb = 4.0 * cores
    return max(1, min(cores // 2, int(memory_gb // 4)))


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int, threads: int):
    """A Dask client: on ``scheduler``, or on a LocalCluster this context shuts down."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - a dependency
        raise InputError(
            "Batches on several workers need Dask distributed: pip install distributed"
        ) from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise InputError(
                f"Could not reach the Dask scheduler at {scheduler} ({exc})."
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=0,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _check_out_dir(out_dir: Path, items: list[BatchItem]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"The output folder {out_dir} is a file; give a folder.")
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"The output folder {out_dir}: {existing} is a file, not a folder.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"The output folder {out_dir} cannot be written ({existing}).")
    real_out = out_dir.resolve()
    for item in items:
        target = (out_dir / item.labels_name).resolve()
        source = item.path.resolve()
        if target == source or source in target.parents:
            raise InputError(
                f"Writing {out_dir / item.labels_name} would replace the input {item.path}: "
                "choose another output folder."
            )
        if source.is_dir() and (source == real_out or source in real_out.parents):
            raise InputError(
                f"The output folder {out_dir} lies inside the input {item.path}: choose "
                "another output folder."
            )


def _not_ours(out_dir: Path, items: list[BatchItem]) -> list[Path]:
    """Files this batch would replace that no earlier batch in ``out_dir`` wrote."""
    foreign = []
    for item in items:
        target = out_dir / item.labels_name
        if target.exists() or target.is_symlink():
            record = read_record(out_dir, item) or {}
            if not (record.get("wrote") or record.get("status") == "done"):
                foreign.append(target)
    ours = (out_dir / RECORDS).is_dir() and _is_our_summary(out_dir / "summary.json")
    for name in ("objects.csv", "summary.json"):
        target = out_dir / name
        if (target.exists() or target.is_symlink()) and not ours:
            foreign.append(target)
    return foreign


def _is_our_summary(path: Path) -> bool:
    if not path.exists():
        return True
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "params_hash" in data


def iter_batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: BatchConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    reader: Callable[[Path], Any] | None = None,
    overwrite: bool = False,
) -> Generator[Progress, None, BatchSummary]:
    """:func:`batch` as a generator of :class:`Progress` (one event per image).

    Closing the generator (cancelling) stops handing out images; images already
    written stay, and the next run resumes after them.
    """
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
    workers = workers or (1 if scheduler else default_workers())
    if workers < 1:
        raise InputError(f"workers must be at least 1; got {workers}.")
    start = time.perf_counter()
    records: dict[str, dict] = {}
    done = len(skipped)
    yield Progress("batch", done, n, f"{len(skipped)} already done" if skipped else "starting")
    if todo and workers == 1 and not scheduler:
        for item in todo:
            yield Progress("batch", done, n, item.name, heavy=True)
            records[item.name] = process(item, config, out_dir, reader)
            done += 1
            yield Progress("batch", done, n, _line(records[item.name]))
    elif todo:
        from distributed import as_completed

        cores = os.cpu_count() or 1
        if config.threads is None and not scheduler:
            config = BatchConfig(**{**_fields(config), "threads": max(1, cores // workers)})
        yield Progress("batch", done, n, f"starting {workers} workers", heavy=True)
        with _client(scheduler, workers, 1) as client:
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


def _fields(config: BatchConfig) -> dict:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


def _line(record: dict) -> str:
    if record.get("status") == "done":
        return f"{record['name']}: {record.get('n_objects', 0)} object(s)"
    return f"{record['name']}: failed: {record.get('error', '')}"


def _write_summary(
    out_dir: Path, items: list[BatchItem], config: BatchConfig, summary, records: dict
) -> None:
    import pandas as pd

    from .._version import __version__
    from .io import Outputs
    from .pipeline.results import TABLE_COLUMNS

    tables, outcomes = [], []
    for item in items:
        record = records.get(item.name) or read_record(out_dir, item) or {}
        ok = record.get("status") == "done" and record.get("params") == summary.params
        status = "skipped" if item.name in summary.skipped else record.get("status", "missing")
        outcomes.append(
            {
                "input": str(item.path),
                "labels": item.labels_name if ok else None,
                "status": status,
                "n_objects": record.get("n_objects") if ok else None,
                "error": record.get("error"),
                "seconds": record.get("seconds"),
            }
        )
        if ok and record.get("objects"):
            table = pd.DataFrame(record["objects"])
            table.insert(0, "image", item.name)
            tables.append(table)
    objects = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=["image", *TABLE_COLUMNS])
    )
    info = {
        "napari_slip_version": __version__,
        "params_hash": summary.params,
        "params": config.describe(),
        "inputs": len(items),
        "done": len(summary.done),
        "skipped": len(summary.skipped),
        "failed": len(summary.failed),
        "workers": summary.workers,
        "seconds": summary.seconds,
        "images": outcomes,
    }
    Outputs(
        {"objects": out_dir / "objects.csv", "summary": out_dir / "summary.json"}, overwrite=True
    ).write(
        {
            "objects": lambda tmp: objects.to_csv(tmp, index=False),
            "summary": lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1, default=str)),
        }
    )


#: Keyword options of :func:`batch` that build its :class:`BatchConfig`.
BATCH_OPTIONS = (
    *SelectionParams.names(),
    *NormalisationParams.names(),
    "sam_params",
    "crop_params",
    "tile_params",
    "tiles",
    "templates",
    "precision",
    "threads",
    "proposals",
    "decoder",
    "guided_params",
)


def _optional_str(value) -> str | None:
    return None if value is None else str(value)


def make_config(
    prompt: str, sam: str = DEFAULT_SAM, clip: str = DEFAULT_CLIP, device: str = "auto", **options
) -> BatchConfig:
    """A :class:`BatchConfig` from the keyword options of :func:`batch`."""
    check_options(options, BATCH_OPTIONS, "batch()")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("The prompt is empty: type what to segment, e.g. 'nucleus'.")
    selection = SelectionParams(**SelectionParams.pick(options))
    normalisation = NormalisationParams(**NormalisationParams.pick(options))
    tile_params = TileParams.choose(options.pop("tile_params", None), options.pop("tiles", None))
    templates = options.pop("templates", None)
    config = BatchConfig(
        prompt=prompt,
        sam=str(sam),
        clip=str(clip),
        device=device,
        precision=options.pop("precision", "auto"),
        sam_params=options.pop("sam_params", None) or SamProposalParams(),
        crop_params=options.pop("crop_params", None) or CropParams(),
        tile_params=tile_params,
        selection=selection,
        normalisation=normalisation,
        templates=tuple(templates) if templates is not None else None,
        threads=options.pop("threads", None),
        proposals=options.pop("proposals", None) or "sam",
        decoder=_optional_str(options.pop("decoder", None)),
        guided_params=options.pop("guided_params", None) or GuidedParams(),
    )
    config.run_config()  # the combinations and the model files, once, before any image
    return config


def batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    prompt: str,
    *,
    sam: str = DEFAULT_SAM,
    clip: str = DEFAULT_CLIP,
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    reader: Callable[[Path], Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    overwrite: bool = False,
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
        What to segment.
    workers
        Worker processes (default: one per 2 cores and 4 GB; 1 runs in this process).
    scheduler
        Address of a running Dask scheduler (``tcp://host:8786``) to run on instead.
    reader
        ``f(path) -> array`` for formats napari-slip does not read itself.
    progress
        Called with a :class:`Progress` per image.
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
    )
    return drain(gen, progress)


__all__ = ["BatchConfig", "BatchSummary", "batch", "collect_inputs", "iter_batch", "process"]
