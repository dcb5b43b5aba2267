"""The one checked reader of every JSON file and text napari-slip reads: caps on
size and depth, standard JSON only, the kind asked for; and no other reader in the
package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from napari_slip.core.runtime.json_files import (
    JsonDamaged,
    depth_of,
    parse_json,
    read_json,
    read_json_or_none,
)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "napari_slip"


def test_a_record_reads_back(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"status": "done", "wrote": ["a.tif"], "n": [1, {"x": 2.5}]}')
    assert read_json(path) == {"status": "done", "wrote": ["a.tif"], "n": [1, {"x": 2.5}]}
    assert depth_of(read_json(path)) == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests deeper than 32 levels"),  # recursion
        ("[" * 40 + "]" * 40, "nests deeper than 32 levels"),  # parses, too deep
        ('{"threads": NaN}', "NaN, which is not standard JSON"),
        ('{"t": Infinity}', "Infinity"),
        ('{"a": 1,}', "not JSON"),
        ("[1, 2]", "holds a list, not a mapping"),
        ('"text"', "holds a string, not a mapping"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
    ids=["deep for python", "deep", "nan", "infinity", "bad", "list", "string", "bytes"],
)
def test_damaged_json_is_refused_with_its_reason(text, reason):
    with pytest.raises(JsonDamaged, match=re.escape(reason)):
        parse_json(text)


def test_size_is_looked_at_before_reading(tmp_path, monkeypatch):
    """A sparse 1 GB file is refused from its size: not a byte read."""
    path = tmp_path / "big.json"
    with open(path, "w") as fh:
        fh.truncate(1 << 30)
    reads = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or b"{}")
    with pytest.raises(JsonDamaged, match="larger than"):
        read_json(path)
    assert read_json_or_none(path) is None and reads == []
    with pytest.raises(JsonDamaged, match="larger than 10 bytes"):
        parse_json('{"a": "0123456789"}', max_bytes=10)


def test_missing_or_unreadable_is_none_for_memos(tmp_path):
    assert read_json_or_none(tmp_path / "nothing.json") is None
    assert read_json_or_none(tmp_path) is None  # a folder
    with pytest.raises(OSError):
        read_json(tmp_path / "nothing.json")


def test_no_other_json_reader_in_the_package():
    """Every JSON napari-slip reads goes through the checked reader: ``json.load`` and
    ``json.loads`` appear nowhere else, except on text the package itself made a
    line before (a table's records, a config copied)."""
    made_here = {
        "core/batch_worker.py": "json.loads(result.table.to_json(",
        "testing/tiny.py": "json.loads(json.dumps(",
    }
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "core/runtime/json_files.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(r"\bjson\.loads?\(", line) and made_here.get(rel, "\0") not in line:
                found.append(f"{rel}: {line.strip()}")
    assert found == []


def test_a_batch_record_of_a_slides_many_objects_reads_back(tmp_path):
    """A batch record holds every object's row: one larger than the default cap (a
    whole slide's nuclei) is still read back, so a resume neither redoes the image
    nor takes its labels for a file it did not write."""
    import json

    from napari_slip.core.batch_files import RECORDS, BatchItem, read_record
    from napari_slip.core.runtime.json_files import MAX_BYTES

    item = BatchItem(tmp_path / "slide.tif", "slide.tif")
    rows = [{"id": i, "area": 120 + i % 50, "mean_intensity_0": 812.25} for i in range(400_000)]
    record = {"status": "done", "wrote": True, "n_objects": len(rows), "objects": rows}
    path = tmp_path / RECORDS / "slide.tif.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    assert path.stat().st_size > MAX_BYTES
    back = read_record(tmp_path, item)
    assert (
        back is not None and back["n_objects"] == 400_000 and back["objects"][-1]["id"] == 399_999
    )
