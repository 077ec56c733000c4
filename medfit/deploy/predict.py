"""The `predict` verb's inputs and outputs: files, folders and manifests in, a CSV out.

    predictor = Predictor("runs/blood")                          # medfit.inference
    table = predictor.predict_files(collect_inputs(["scans/", "more.csv"]), tta=True)
    write_csv(table, open("preds.csv", "w", newline=""))

A file that cannot be decoded is not fatal: its row carries the reason.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from medfit.data.decode import is_image_path
from medfit.errors import DataError, MedfitError
from medfit.files import atomic_write_text, csv_cell, read_bytes_bounded
from medfit.inference import PredictionTable

MANIFEST_SUFFIXES = {".csv": ",", ".tsv": "\t"}


def collect_inputs(items: Sequence[str | Path]) -> list[Path]:
    """Expand image files, folders (recursively, images only) and CSV/TSV manifests to paths.

    A manifest needs a `path` column (any case); relative paths are read from the manifest's
    folder, as in `medfit.data.manifest`. Files listed but missing stay in the list: they are
    reported as skipped with their reason rather than aborting the whole batch.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            # Anything image-named but a folder is kept, so that a symlink loop or a pipe named
            # x.png is reported as skipped with its reason instead of vanishing.
            paths.extend(p for p in sorted(path.rglob("*")) if is_image_path(p) and not p.is_dir())
        elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            paths.extend(read_manifest_paths(path))
        elif path.exists():
            paths.append(path)
        else:
            raise DataError(f"input not found: {path}")
    if not paths:
        raise DataError(f"no images found in {', '.join(map(str, items))}")
    return paths


def read_manifest_paths(manifest: Path) -> list[Path]:
    """The `path` column of a CSV/TSV manifest; blank rows are skipped."""
    try:
        text = read_bytes_bounded(manifest, "manifest").decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{manifest}: cannot read the manifest as UTF-8 text ({exc})") from None
    rows = csv.reader(text.splitlines(), delimiter=MANIFEST_SUFFIXES[manifest.suffix.lower()])
    header = [h.strip().lower() for h in next(rows, [])]
    if "path" not in header:
        raise DataError(f"{manifest}, row 1 (header): no 'path' column (found: {header})")
    col = header.index("path")
    cells = (row[col].strip() for row in rows if col < len(row) and row[col].strip())
    return [_under(manifest.parent, cell) for cell in cells]


def _under(folder: Path, cell: str) -> Path:
    path = Path(cell).expanduser()
    return path if path.is_absolute() else folder / path


def check_output_file(out: str) -> Path:
    """The --out file, refused up front (before any prediction) when it cannot be written."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise MedfitError(f"--out {out} is a folder; name a file, e.g. {path / 'predictions.csv'}")
    if not path.parent.is_dir():
        raise MedfitError(f"--out {out}: folder {path.parent} does not exist; create it first")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise MedfitError(f"--out {out}: no permission to write in {path.parent}")
    return path


def save_csv(table: PredictionTable, path: Path) -> None:
    """`write_csv` to `path` atomically: a failure leaves no half-written CSV behind."""
    buffer = io.StringIO()
    write_csv(table, buffer)
    try:
        atomic_write_text(path, buffer.getvalue())
    except OSError as exc:
        raise MedfitError(f"could not write {path}: {exc.strerror or exc}") from None


def write_csv(table: PredictionTable, out: TextIO) -> None:
    """path, predicted, p_<class>..., error: one row per input, failed rows with empty cells.

    Text cells go through `csv_cell`: a class or file named "=cmd|..." is not a formula."""
    writer = csv.writer(out)
    writer.writerow(["path", "predicted", *[f"p_{c}" for c in table.classes], "error"])
    for row in _rows(table):
        writer.writerow(row)


def _rows(table: PredictionTable) -> Iterator[list[str]]:
    rows = zip(table.paths, table.labels, table.probs, table.errors, strict=True)
    for path, label, p, err in rows:
        if err:
            yield [csv_cell(path), "", *[""] * len(table.classes), csv_cell(err)]
        else:
            yield [csv_cell(path), csv_cell(label), *[f"{v:.6f}" for v in p], ""]


def skipped_lines(table: PredictionTable, limit: int = 10) -> list[str]:
    """A summary of unreadable files: count, then up to `limit` 'path: reason' lines."""
    skipped = table.skipped
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} unreadable file(s):"]
    lines += [f"  {path}: {reason}" for path, reason in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more (see the error column)")
    return lines
