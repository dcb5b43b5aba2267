"""The files of a batch: its inputs, its output folder, and the records that say which
outputs it wrote (so a rerun resumes, and a file no batch wrote is never replaced)."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .runtime.json_files import read_json_or_none

#: The largest batch record or summary read back: a record holds every object's row
#: (a whole slide's million nuclei are about 0.5 GB), so far above the default cap.
BATCH_JSON_BYTES = 1 << 30
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
            _outside_output(path, exclude)
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
            # Our own outputs (a rerun's labels under -o) are not inputs.
            matches = [m for m in matches if _wanted(m) and not _our_output(m, exclude)]
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


def _our_output(path: Path, out: Path | None) -> bool:
    """Whether ``path`` is labels an earlier batch into ``out`` wrote (its record
    there says so); other files in the output folder are still inputs."""
    if out is None or out not in path.resolve().parents:
        return False
    name = path.resolve().relative_to(out).as_posix()
    record = read_json_or_none(out / RECORDS / f"{name}.json", max_bytes=BATCH_JSON_BYTES)
    return record is not None and bool(record.get("wrote") or record.get("status") == "done")


def _outside_output(folder: Path, out: Path | None) -> None:
    """An input folder that is the output folder, or lies inside it, would have its
    images taken for outputs: refused, naming why (not "holds no images")."""
    if out is None:
        return
    real = folder.resolve()
    if real == out:
        raise InputError(
            f"The output folder is the input folder {folder}: the labels would be written "
            f"among the images. Give another output folder (e.g. {folder / 'labels'})."
        )
    if out in real.parents:
        raise InputError(
            f"The input folder {folder} lies inside the output folder {out}: its images "
            "would be taken for earlier outputs. Give an output folder outside it."
        )


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


def _atomic_text(path: Path, text: str) -> None:
    from .io import Outputs

    Outputs({"file": path}, overwrite=True).write({"file": lambda tmp: Path(tmp).write_text(text)})


def _record_path(out_dir: Path, item: BatchItem) -> Path:
    return out_dir / RECORDS / f"{item.labels_name}.json"


def _write_record(out_dir: Path, item: BatchItem, record: dict) -> None:
    path = _record_path(out_dir, item)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_text(path, json.dumps(record, indent=1))


def read_record(out_dir: Path, item: BatchItem) -> dict | None:
    """An input's record, or None if it is missing or unreadable."""
    return read_json_or_none(_record_path(out_dir, item), max_bytes=BATCH_JSON_BYTES)


def is_done(out_dir: Path, item: BatchItem, digest: str) -> bool:
    """Whether an earlier run made this input's outputs with these parameters."""
    record = read_record(out_dir, item)
    return (
        record is not None
        and record.get("status") == "done"
        and record.get("params") == digest
        and (out_dir / item.labels_name).is_file()
    )


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
    # A folder with our records is ours: its summary and table are ours to rewrite,
    # even where a crash or a hand edit damaged the summary (a resume must not stop).
    records = out_dir / RECORDS
    ours = records.is_dir() and (
        _is_our_summary(out_dir / "summary.json") or any(records.rglob("*.json"))
    )
    for name in ("objects.csv", "summary.json"):
        target = out_dir / name
        if (target.exists() or target.is_symlink()) and not ours:
            foreign.append(target)
    return foreign


def _is_our_summary(path: Path) -> bool:
    if not path.exists():
        return True
    data = read_json_or_none(path, max_bytes=BATCH_JSON_BYTES)
    return data is not None and "params_hash" in data


def _write_summary(out_dir: Path, items: list[BatchItem], config, summary, records: dict) -> None:
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


__all__ = [
    "BATCH_JSON_BYTES",
    "RECORDS",
    "SUFFIXES",
    "BatchItem",
    "BatchSummary",
    "collect_inputs",
    "is_done",
    "read_record",
]
