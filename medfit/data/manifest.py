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

Multi-label (several findings per image, `--task multilabel`, detected by `auto`):

    path,labels,split,patient_id              path,effusion,edema,split
    a.png,Effusion|Infiltration,train,17      a.png,1,0,train
    b.png,No Finding,val,18                   b.png,0,0,val

- a label cell joining labels with `label_sep` (default `|`; NIH ChestX-ray14's "Finding Labels"),
  the task being multi-label as soon as one cell holds the separator; `none_label` (default
  "No Finding", any case) is the all-zero target, not a label;
- or no label column and one 0/1 column per label (every non-empty cell 0 or 1; other columns,
  such as a view or an age, are ignored). An uncertain -1 (CheXpert) is refused: map it first.
- The labels are those positive on at least one train row. `labels`/`finding labels` name the
  label column too; `patient`/`patient_id`/`subject_id` the group column.

Every problem is a one-line `DataError` naming the manifest, the row (1-based, the header is row
1) and what to do.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
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
# Other header names read as a known column (lower case).
COLUMN_SYNONYMS = {
    "labels": "label",
    "finding labels": "label",
    "finding_labels": "label",
    "patient": "group",
    "patient_id": "group",
    "patientid": "group",
    "patient id": "group",
    "subject_id": "group",
}
_DELIMITERS = {".csv": ",", ".tsv": "\t"}
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "bar"}
_LAYOUT = "path,label[,split][,group]"


def is_manifest_path(path: str | Path) -> bool:
    """True for a path that names a manifest (by suffix), whether or not it exists yet."""
    path = Path(path).expanduser()
    return path.suffix.lower() in MANIFEST_SUFFIXES and not path.is_dir()


@dataclass(frozen=True)
class LabelFormat:
    """How a manifest's labels are read: the task asked for (auto, multiclass, ordinal,
    multilabel), the multi-label separator and the "no finding" label."""

    task: str = "auto"
    sep: str = "|"
    none_label: str = "No Finding"


def index_manifest(
    path: str | Path,
    val_fraction: float = 0.15,
    seed: int = 0,
    labels: LabelFormat | None = None,
) -> DatasetIndex:
    """Index the images a CSV/TSV manifest lists into Sample records (see the module docstring)."""
    fmt = labels or LabelFormat()
    manifest = Path(path).expanduser()
    text = _read_text(manifest)
    delimiter = _delimiter(manifest, text)
    rows = _rows(manifest, text, delimiter)
    if not any(_filled(row) for row in rows):
        raise DataError(
            f"{manifest}: the manifest is empty; write a header row {_LAYOUT} and one row per image"
        )
    # 0/1 label columns are looked for only when there is no label column: beside one, any
    # other column (a view, a -1/1 laterality) is ignored as before.
    named = _columns(manifest, rows[0], delimiter, need_label=False)
    use_columns = "label" not in named and fmt.task != "multiclass"
    label_columns = _binary_columns(manifest, rows) if use_columns else {}
    columns = _columns(manifest, rows[0], delimiter, need_label=not label_columns)
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
        given = _cell(row, columns, "path")
        label = _cell(row, columns, "label") if not label_columns else _joined(row, label_columns)
        if not given:
            raise DataError(f"{where}: the path is empty; fill it in or delete the row")
        if not label and not label_columns:
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

    multilabel = bool(label_columns) or fmt.task == "multilabel"
    if fmt.task == "auto" and not multilabel:
        multilabel = any(fmt.sep in label for _, label, _, _ in records)
    if multilabel:
        sep = _LABEL_JOIN if label_columns else fmt.sep
        return _multilabel_index(manifest, records, sep, fmt.none_label, val_fraction, seed)

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


_LABEL_JOIN = "\x1f"  # joins 0/1 columns' names internally (no header holds it)


def _binary_columns(manifest: Path, rows: list[list[str]]) -> dict[str, int]:
    """Label name -> column index of every column (not path/split/group/label) whose cells are
    all 0, 1 or empty; {} unless there are at least two. A -1 (uncertain) is a DataError."""
    header = rows[0]
    found: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = raw.strip()
        known = COLUMN_SYNONYMS.get(name.lower(), name.lower())
        if not name or known in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            continue
        cells = {row[i].strip() for row in rows[1:] if i < len(row)} - {""}
        values = {_binary(c) for c in cells}
        if cells and values <= {0, 1}:
            found[name] = i
        elif cells and values <= {0, 1, -1} and -1 in values:
            raise DataError(
                f"{manifest}: column {name!r} holds -1 (an uncertain label, as in CheXpert); map "
                "it to 0 or 1 first (U-Zeros / U-Ones, Irvin et al. 2019)"
            )
    return found if len(found) >= 2 else {}


def _binary(cell: str) -> int | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0, -1.0) else None


def _joined(row: list[str], label_columns: dict[str, int]) -> str:
    """The names of the 0/1 columns that are 1 in this row, joined by _LABEL_JOIN."""
    on = [n for n, i in label_columns.items() if i < len(row) and _binary(row[i].strip()) == 1]
    return _LABEL_JOIN.join(on)


def _multilabel_index(
    manifest: Path,
    records: list[tuple[str, str, str, str | None]],
    sep: str,
    none_label: str,
    val_fraction: float,
    seed: int,
) -> DatasetIndex:
    """Samples with a 0/1 target per label: the labels positive on some train row, sorted."""
    none = none_label.strip().lower()
    parsed = []
    for path, cell, split, group in records:
        names = {n.strip() for n in cell.split(sep) if n.strip() and n.strip().lower() != none}
        parsed.append((path, names, split, group))
    train = Counter(n for _, names, split, _ in parsed if split == "train" for n in names)
    if not train:
        raise DataError(
            f"{manifest}: no train row has a label; mark some rows train (or leave their split "
            f"empty) and give their labels (joined by {sep!r}, or {none_label!r} for none)"
        )
    if len(train) < 2:
        raise DataError(
            f"{manifest}: only one label ({next(iter(train))}) in train; a multi-label "
            "classifier needs at least two"
        )
    classes = sorted(train)
    index = {name: i for i, name in enumerate(classes)}
    for _, names, split, _ in parsed:
        extra = sorted(names - set(index))
        if extra:
            raise DataError(
                f"{manifest}: label(s) {', '.join(extra)} in {split} but on no train row; add "
                "training images for them or remove them"
            )
    rarity = sorted(classes, key=lambda name: (train[name], name))
    rank = {name: r for r, name in enumerate(rarity)}
    samples = []
    for path, names, split, group in parsed:
        targets = tuple(int(name in names) for name in classes)
        key = index[min(names, key=rank.__getitem__)] if names else len(classes)
        samples.append(Sample(path, key, split, group, targets))
    dataset = DatasetIndex(str(manifest), classes, samples, multilabel=True)
    if not dataset.split("val"):
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


def _columns(
    manifest: Path, header: list[str], delimiter: str, need_label: bool = True
) -> dict[str, int]:
    """Known column name -> its index in the header; a DataError when path (or, without 0/1
    label columns, label) is absent."""
    columns: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = COLUMN_SYNONYMS.get(raw.strip().lower(), raw.strip().lower())
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            continue
        if name in columns:
            raise DataError(
                f"{manifest}, row 1 (header): columns {columns[name] + 1} and {i + 1} are both "
                f"named {name!r}; keep one"
            )
        columns[name] = i
    required = REQUIRED_COLUMNS if need_label else ("path",)
    absent = [name for name in required if name not in columns]
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
