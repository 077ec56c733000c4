"""A CSV/TSV manifest as the data source: one row per image, for data that is not in class folders.

    path,label,split,group
    images/p001_a.png,pneumonia,train,P001
    /data/xr/p002.dcm,normal,val,P002

- Row 1 is the header. Column names are matched in any case; `path` and `label` are required,
  `split` and `group` optional, and any other column is ignored. Blank rows are skipped.
- The delimiter follows the suffix: `.csv` comma, `.tsv` tab; anything else (`.txt`) is sniffed
  among comma, tab, semicolon and bar. The file must be UTF-8 (a BOM is fine).
- A path is relative to the manifest's folder, or absolute (`~` is expanded).
- `split` takes the folder-name synonyms (train/training, val/valid/validation/dev,
  test/testing, any case); an empty cell means train. Without a single val row, a stratified val
  split of train is made, as for folders: grouped (no id in both train and val) when any train
  row has a group.
- `group` (patient or study id) becomes `Sample.group`; an empty cell is None. Without a group
  column, DICOM rows get PatientID/StudyInstanceUID from their header, as in folder layouts.
- The classes are the sorted labels of the train rows, checked by `sources.check_classes` exactly
  as class folders are.

Every problem is a one-line `DataError` naming the manifest, the row (1-based, the header is row
1) and what to do.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path

from medfit.data.sources import (
    SPLIT_SYNONYMS,
    DatasetIndex,
    Sample,
    check_classes,
    dicom_group,
    split_name,
    stratified_val_split,
)
from medfit.errors import DataError, MedfitError
from medfit.files import FileMissing, read_bytes_bounded

MANIFEST_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("split", "group")
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}
_LAYOUT = "path,label[,split][,group]"


def is_manifest_path(path: str | Path) -> bool:
    """True for a path that names a manifest (by suffix), whether or not it exists yet."""
    path = Path(path).expanduser()
    return path.suffix.lower() in MANIFEST_SUFFIXES and not path.is_dir()


def index_manifest(path: str | Path, val_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """Index the images a CSV/TSV manifest lists into Sample records (see the module docstring)."""
    manifest = Path(path).expanduser()
    text = _read_text(manifest)
    delimiter = _delimiter(manifest, text)
    rows = _rows(manifest, text, delimiter)
    if not any(_filled(row) for row in rows):
        raise DataError(
            f"{manifest}: the manifest is empty; write a header row {_LAYOUT} and one row per image"
        )
    columns = _columns(manifest, rows[0], delimiter)
    has_group = "group" in columns

    records: list[tuple[str, str, str, str | None]] = []  # path, label, split, group
    seen: dict[str, int] = {}  # real path -> row
    missing: list[tuple[int, str, str]] = []  # row, path, what is wrong
    for number, row in enumerate(rows[1:], start=2):
        if not _filled(row):
            continue
        where = f"{manifest}, row {number}"
        extra = row[len(rows[0]) :]
        if _filled(extra):
            raise DataError(
                f"{where}: {len(row)} values but the header has {len(rows[0])} columns; "
                f"quote values that contain a {_DELIMITER_NAMES.get(delimiter, repr(delimiter))}"
            )
        given, label = _cell(row, columns, "path"), _cell(row, columns, "label")
        if not given:
            raise DataError(f"{where}: the path is empty; fill it in or delete the row")
        if not label:
            raise DataError(f"{where}: the label of {given} is empty; fill it in or delete the row")
        split = _split(where, _cell(row, columns, "split"))
        file = Path(given).expanduser()
        if not file.is_absolute():
            file = manifest.parent / file
        key = os.path.realpath(file)
        if key in seen:
            raise DataError(
                f"{where}: {given} is already listed in row {seen[key]}; remove one of rows "
                f"{seen[key]} and {number} (a duplicate counts twice in one split, and leaks "
                "between train and val/test in two)"
            )
        seen[key] = number
        if not file.exists():  # also a dangling symlink
            missing.append((number, os.path.abspath(file), "not found"))
        elif file.is_dir():
            missing.append((number, os.path.abspath(file), "is a folder, not an image file"))
        group = (_cell(row, columns, "group") or None) if has_group else dicom_group(file)
        records.append((str(file), label, split, group))

    if missing:
        first_row, first_path, problem = missing[0]
        more = f" ({len(missing) - 1} more row(s) with missing files)" if len(missing) > 1 else ""
        raise DataError(
            f"{manifest}, row {first_row}: {first_path} {problem}{more}; "
            f"relative paths are read from {manifest.parent.absolute()}"
        )

    counts: dict[str, Counter[str]] = {}
    for _, label, split, _ in records:
        counts.setdefault(split, Counter())[label] += 1
    classes = check_classes(
        str(manifest),
        counts,
        "no rows in the train split; mark some rows train (or leave their split empty)",
    )
    index = {name: i for i, name in enumerate(classes)}
    samples = [Sample(path, index[label], split, group) for path, label, split, group in records]
    dataset = DatasetIndex(str(manifest), classes, samples)
    if "val" not in counts:
        dataset = stratified_val_split(dataset, val_fraction, seed)
    return dataset


def _read_text(manifest: Path) -> str:
    try:
        raw = read_bytes_bounded(manifest, "manifest")
    except FileMissing:
        raise DataError(f"manifest not found: {manifest}") from None
    except MedfitError as err:
        raise DataError(str(err)) from None
    try:
        return raw.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as err:
        row = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{manifest}, row {row}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the "
            "manifest as UTF-8 (Excel: Save As 'CSV UTF-8')"
        ) from None


def _delimiter(manifest: Path, text: str) -> str:
    suffix = manifest.suffix.lower()
    if suffix in _DELIMITERS:
        return _DELIMITERS[suffix]
    head = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(head, delimiters="".join(_DELIMITER_NAMES)).delimiter
    except csv.Error:
        raise DataError(
            f"{manifest}: cannot tell which character separates the columns; "
            "name the file .csv (comma-separated) or .tsv (tab-separated)"
        ) from None


def _rows(manifest: Path, text: str, delimiter: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    try:
        rows.extend(reader)
    except csv.Error as err:
        raise DataError(f"{manifest}, row {len(rows) + 1}: not valid CSV ({err})") from None
    return rows


def _cell(row: list[str], columns: dict[str, int], name: str) -> str:
    i = columns.get(name)
    return row[i].strip() if i is not None and i < len(row) else ""


def _filled(cells: list[str]) -> bool:
    return any(c.strip() for c in cells)


def _columns(manifest: Path, header: list[str], delimiter: str) -> dict[str, int]:
    """Known column name -> its index in the header; a DataError when path or label is absent."""
    columns: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = raw.strip().lower()
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            continue
        if name in columns:
            raise DataError(
                f"{manifest}, row 1 (header): columns {columns[name] + 1} and {i + 1} are both "
                f"named {name!r}; keep one"
            )
        columns[name] = i
    absent = [name for name in REQUIRED_COLUMNS if name not in columns]
    if absent:
        found = ", ".join(repr(h.strip()) for h in header) or "none"
        hint = ""
        if len(header) == 1:
            other = [d for d in _DELIMITER_NAMES if d != delimiter and d in header[0]]
            if other:
                hint = (
                    f" (the header seems {_DELIMITER_NAMES[other[0]]}-separated; "
                    f"a {manifest.suffix} file is read as {_DELIMITER_NAMES[delimiter]}-separated)"
                )
        raise DataError(
            f"{manifest}, row 1 (header): no {' or '.join(map(repr, absent))} column "
            f"(found: {found}){hint}; row 1 must name the columns: {_LAYOUT}"
        )
    return columns


def _split(where: str, value: str) -> str:
    if not value:
        return "train"
    split = split_name(value)
    if split is None:
        valid = "; ".join(f"{s}: {'/'.join(names)}" for s, names in SPLIT_SYNONYMS.items())
        raise DataError(
            f"{where}: unknown split {value!r}; use one of {valid} (any case), "
            "or leave it empty for train"
        )
    return split
