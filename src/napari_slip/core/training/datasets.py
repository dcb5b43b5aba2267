"""Training and evaluation data: image-text pairs as the engine's own crops.

Two on-disk forms:

- a captions CSV with columns ``image,caption`` (paths relative to the CSV): each whole
  image, padded to a square, paired with its caption (SLIP's form);
- a dataset folder: ``images/NAME.<png|tif|jpg>``, ``labels/NAME.tif`` (label images)
  and ``classes.csv`` with columns ``image,label,class``: every labelled object becomes
  the same masked crop the engine scores, paired with its class.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import read_image
from ..params import CropParams
from ..pipeline.crops import make_crops
from ..pipeline.images import prepare_image
from ..pipeline.proposals import proposals_from_labels

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


@dataclass
class Pairs:
    """Image crops with their texts.

    Attributes
    ----------
    crops
        Square uint8 RGB crops.
    classes
        The class (or caption) of each crop; the text is ``template.format(class)``.
    groups
        Which source image each crop comes from (splits keep an image's crops together).
    """

    crops: list[np.ndarray] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def class_names(self) -> list[str]:
        return sorted(set(self.classes))

    def subset(self, indices) -> Pairs:
        return Pairs(
            [self.crops[i] for i in indices],
            [self.classes[i] for i in indices],
            [self.groups[i] for i in indices],
        )

    def extend(self, other: Pairs) -> None:
        self.crops += other.crops
        self.classes += other.classes
        self.groups += other.groups


@dataclass
class DatasetImage:
    """One image of a dataset folder with its labels and the class of each label."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    classes: dict[int, str]


def pairs_from_arrays(
    image: np.ndarray,
    labels: np.ndarray,
    classes: dict[int, str],
    crop_params: CropParams | None = None,
    group: str = "image",
    **normalisation,
) -> Pairs:
    """Crops of the labelled objects of one image, each with its class.

    Labels missing from ``classes`` are skipped.
    """
    prepared = prepare_image(image, **normalisation)
    props = proposals_from_labels(labels, prepared.shape)
    keep = [i for i, v in enumerate(props.source_ids) if int(v) in classes]
    crops = make_crops(prepared.rgb, props, crop_params or CropParams(), keep)
    names = [classes[int(props.source_ids[i])] for i in keep]
    return Pairs(crops, names, [group] * len(crops))


def _find_image(folder: Path, name: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    raise InputError(
        f"No image for {name!r} in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})."
    )


def read_dataset_folder(folder: str | os.PathLike) -> list[DatasetImage]:
    """Read a dataset folder (see the module docstring).

    Raises
    ------
    InputError
        If the layout or ``classes.csv`` is wrong, naming the file and row.
    """
    folder = Path(folder)
    table = folder / "classes.csv"
    if not table.is_file() or not (folder / "images").is_dir() or not (folder / "labels").is_dir():
        raise InputError(
            f"{folder} is not a dataset folder: it needs images/, labels/ and classes.csv "
            "(columns image,label,class)."
        )
    per_image: dict[str, dict[int, str]] = {}
    with _open_csv(table) as fh:
        reader = csv.DictReader(fh)
        if not {"image", "label", "class"} <= set(reader.fieldnames or ()):
            raise InputError(
                f"{table} needs the columns image,label,class; has {reader.fieldnames}."
            )
        for row in reader:
            row_no = reader.line_num
            _check_row(table, row_no, row)
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise InputError(
                    f"{table} line {row_no}: label {row['label']!r} is not an integer."
                ) from None
            name = Path(row["image"]).stem
            cls = (row["class"] or "").strip()
            if not cls:
                raise InputError(f"{table} line {row_no}: the class is empty.")
            per_image.setdefault(name, {})[label] = cls
    items = []
    for name in sorted(per_image):
        image = read_image(_find_image(folder / "images", name))
        labels_path = _find_image(folder / "labels", name)
        labels = read_image(labels_path)
        if labels.shape[:2] != image.shape[:2]:
            raise InputError(f"{labels_path} has shape {labels.shape}, its image {image.shape}.")
        items.append(DatasetImage(name, image, labels, per_image[name]))
    if not items:
        raise InputError(f"{table} lists no objects.")
    return items


def _check_row(table: Path, line: int, row: dict) -> None:
    """Refuse a row that a stray quote or an unquoted comma garbled, naming its line
    (where the row ends) and the fix: a field over several lines (a quote opened and
    never closed swallows the rows after it), more fields than columns, fewer."""
    if None in row:
        raise InputError(
            f"{table} line {line}: more fields than the columns {list(row)[:-1]}; a name "
            'with a comma needs quotes ("cell, dividing").'
        )
    for column, value in row.items():
        if value is None:
            raise InputError(f"{table} line {line}: the {column!r} field is missing.")
        if any(ch in value for ch in "\r\n\x00"):
            shown = value.splitlines()[0][:40] if value.strip() else ""
            raise InputError(
                f"{table} line {line}: the {column!r} field {shown!r}... runs over several "
                'lines: a quote (") opened and never closed swallows the rows after it; '
                "remove the stray quote or close it."
            )


def _open_csv(path: Path):
    """A CSV as text: UTF-8 with or without the BOM that Excel writes; anything else
    (Latin-1, UTF-16) is refused with how to fix it."""
    import io

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' "
            "(in Excel: File > Save As > CSV UTF-8)."
        ) from None
    return io.StringIO(text, newline="")


def read_paraphrases(csv_path: str | os.PathLike) -> dict[str, list[str]]:
    """Extra phrases per class from a CSV with columns ``class,phrase`` (one row each)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"No paraphrases file at {csv_path}.")
    out: dict[str, list[str]] = {}
    with _open_csv(csv_path) as fh:
        reader = csv.DictReader(fh)
        if not {"class", "phrase"} <= set(reader.fieldnames or ()):
            raise InputError(
                f"{csv_path} needs the columns class,phrase; has {reader.fieldnames}."
            )
        for row in reader:
            row_no = reader.line_num
            _check_row(csv_path, row_no, row)
            cls, phrase = (row["class"] or "").strip(), (row["phrase"] or "").strip()
            if not cls or not phrase:
                raise InputError(f"{csv_path} line {row_no}: the class or the phrase is empty.")
            out.setdefault(cls, []).append(phrase)
    return out


def read_captions(csv_path: str | os.PathLike) -> Pairs:
    """Whole images with captions from a CSV with columns ``image,caption``."""
    csv_path = Path(csv_path)
    pairs = Pairs()
    with _open_csv(csv_path) as fh:
        reader = csv.DictReader(fh)
        if not {"image", "caption"} <= set(reader.fieldnames or ()):
            raise InputError(
                f"{csv_path} needs the columns image,caption; has {reader.fieldnames}."
            )
        for row in reader:
            row_no = reader.line_num
            _check_row(csv_path, row_no, row)
            caption = (row["caption"] or "").strip()
            if not caption:
                raise InputError(f"{csv_path} line {row_no}: the caption is empty.")
            path = (csv_path.parent / row["image"]).resolve()
            rgb = prepare_image(read_image(path)).rgb
            side = max(rgb.shape[:2])
            square = np.zeros((side, side, 3), np.uint8)
            oy, ox = (side - rgb.shape[0]) // 2, (side - rgb.shape[1]) // 2
            square[oy : oy + rgb.shape[0], ox : ox + rgb.shape[1]] = rgb
            pairs.crops.append(square)
            pairs.classes.append(caption)
            pairs.groups.append(str(path))
    if not len(pairs):
        raise InputError(f"{csv_path} has no rows.")
    return pairs


def load_pairs(data: str | os.PathLike, crop_params: CropParams | None = None) -> Pairs:
    """Training pairs from a captions CSV or a dataset folder."""
    data = Path(data)
    if data.is_file() and data.suffix.lower() == ".csv":
        return read_captions(data)
    if data.is_dir():
        pairs = Pairs()
        for item in read_dataset_folder(data):
            pairs.extend(
                pairs_from_arrays(
                    item.image, item.labels, item.classes, crop_params, group=item.name
                )
            )
        return pairs
    raise InputError(f"{data} is neither a captions .csv nor a dataset folder.")
