"""Batch prediction with a run's own preprocessing, optional TTA and temperature scaling.

    predictor = Predictor("runs/blood")
    table = predictor.predict_files(collect_inputs(["scans/", "more.csv"]), tta=True)
    write_csv(table, open("preds.csv", "w", newline=""))

The model comes from `medfit.load` (weights-only checkpoint loading, never pickled code) and the
pixels go through exactly the pieces training used, owned by the run's `Preprocess`:
`decode_image` -> `square` (resized to the cache size, gray replicated to 3 channels) ->
`input_fn` (resized to img_size, (x - mean) / std). A file that cannot be decoded is not fatal:
its row carries the reason.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from tqdm import tqdm

from medfit.api import load
from medfit.data.decode import DecodeError, is_image_path
from medfit.deploy.runinfo import FLIP_DIMS, read_run_info
from medfit.errors import DataError, MedfitError
from medfit.files import atomic_write_text, csv_cell, read_bytes_bounded
from medfit.rundir import RunDir

MANIFEST_SUFFIXES = {".csv": ",", ".tsv": "\t"}


@dataclass
class PredictionTable:
    """One row per input, in input order; rows that failed have NaN probabilities and an error."""

    classes: list[str]
    paths: list[Path]
    probs: np.ndarray  # float (N, num_classes); NaN rows where `errors[i]` is set
    errors: list[str | None]
    views: tuple[str, ...]  # TTA views averaged ("identity" alone without TTA)
    temperature: float | None  # applied temperature, None when uncalibrated

    @property
    def labels(self) -> list[str | None]:
        return [
            None if err else self.classes[int(np.argmax(p))]
            for p, err in zip(self.probs, self.errors, strict=True)
        ]

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        return [(p, e) for p, e in zip(self.paths, self.errors, strict=True) if e]


class Predictor:
    """A run's model plus the exact eval preprocessing, TTA views and calibration of that run."""

    def __init__(self, run_dir: str | Path, device: str = "auto", checkpoint: str = "best") -> None:
        self.info = read_run_info(run_dir)
        self.classifier = load(run_dir, device=device, checkpoint=checkpoint)
        self.classes = self.classifier.classes
        self.preprocess = self.classifier.preprocess
        self.model = self.classifier.model
        self.device = self.classifier.device
        self._input = self.preprocess.input_fn(self.device)

    # --- preprocessing -------------------------------------------------------------------------

    def square(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W[, C]) -> uint8 (S, S, 3) at the run's cache size, as training stored it."""
        return self.preprocess.square(pixels)

    def model_input(self, squares: np.ndarray) -> torch.Tensor:
        """uint8 (B, S, S, 3) -> the normalised float (B, 3, img_size, img_size) the model takes."""
        return self._input(
            torch.from_numpy(np.require(squares, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]))
        )

    def load_square(self, path: str | Path) -> np.ndarray:
        """Decode one file and bring it to the cache square; DecodeError when unreadable."""
        return self.preprocess.load(path)

    def _try_square(self, path: Path) -> tuple[np.ndarray | None, str | None]:
        try:
            return self.load_square(path), None
        except DecodeError as exc:
            return None, _reason(exc, path)

    # --- inference -----------------------------------------------------------------------------

    def temperature(self, scaled: bool) -> float | None:
        """The temperature to apply, or None; asking for one the run lacks is an error, because
        silently returning uncalibrated probabilities would mislead whoever reads them."""
        if not scaled:
            return None
        if self.info.temperature is None:
            raise MedfitError(
                f"temperature scaling is not available for {self.info.path}: it has no "
                f"{RunDir(self.info.path).calibration.name} (calibrate the run first, or drop the "
                "temperature option)"
            )
        return self.info.temperature

    def views(self, tta: bool) -> tuple[str, ...]:
        return self.info.tta_views if tta else ("identity",)

    @torch.no_grad()
    def probabilities(
        self, x: torch.Tensor, tta: bool = False, temperature: float | None = None
    ) -> np.ndarray:
        """softmax(logits / T) for a normalised batch, averaged over the TTA views."""
        total = torch.zeros(x.shape[0], len(self.classes), device=self.device)
        views = self.views(tta)
        for view in views:
            xv = x if view == "identity" else torch.flip(x, dims=(FLIP_DIMS[view],))
            logits = self.model(xv).float()
            total += torch.softmax(logits / (temperature or 1.0), dim=1)
        return (total / len(views)).cpu().numpy()

    def predict_pixels(
        self,
        images: Sequence[np.ndarray],
        tta: bool = False,
        temperature_scaled: bool = False,
    ) -> np.ndarray:
        """Probabilities (N, num_classes) for uint8 arrays (H, W[, C]) already decoded."""
        if not images:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        squares = np.stack([self.square(img) for img in images])
        temperature = self.temperature(temperature_scaled)
        return self.probabilities(self.model_input(squares), tta, temperature)

    def predict_files(
        self,
        paths: Sequence[Path],
        batch_size: int = 32,
        tta: bool = False,
        temperature_scaled: bool = False,
        progress: bool = False,
        workers: int | None = None,
    ) -> PredictionTable:
        """Predict every file; unreadable ones get an error instead of probabilities."""
        if batch_size < 1:
            raise MedfitError(f"batch size must be >= 1, got {batch_size}")
        temperature = self.temperature(temperature_scaled)
        probs = np.full((len(paths), len(self.classes)), np.nan, dtype=np.float32)
        errors: list[str | None] = [None] * len(paths)
        bar = tqdm(total=len(paths), unit="img", desc="predict", disable=not progress)
        with bar, ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = range(start, min(start + batch_size, len(paths)))
                # Pillow and pydicom release the GIL for much of a decode: threads overlap them.
                results = pool.map(self._try_square, [paths[i] for i in chunk])
                rows, squares = [], []
                for i, (square, reason) in zip(chunk, results, strict=True):
                    errors[i] = reason
                    if square is not None:
                        rows.append(i)
                        squares.append(square)
                if squares:
                    x = self.model_input(np.stack(squares))
                    probs[rows] = self.probabilities(x, tta, temperature)
                bar.update(len(chunk))
        return PredictionTable(
            self.classes, list(paths), probs, errors, self.views(tta), temperature
        )


def _reason(exc: Exception, path: Path) -> str:
    """DecodeError says '<path>: <problem>'; the row already names the path."""
    return str(exc).removeprefix(f"{path}: ")


# --- inputs and outputs ------------------------------------------------------------------------


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
