"""`RunDir`: where each file of a run lives, reading and writing them, and the run lock."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medfit.errors import MedfitError
from medfit.files import atomic_write_text, csv_cell, csv_value
from medfit.rundir.io import _remedy, read_json, read_run_text
from medfit.rundir.records import (
    MIN_CALIBRATION_IMAGES,
    EpochRow,
    PredictionRow,
    SplitRow,
    Summary,
)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    config = property(lambda self: self.path / "config.yaml")
    classes = property(lambda self: self.path / "classes.json")
    preprocess = property(lambda self: self.path / "preprocess.json")
    split = property(lambda self: self.path / "split.csv")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    summary = property(lambda self: self.path / "summary.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    tensorboard = property(lambda self: self.path / "tb")
    lock = property(lambda self: self.path / ".lock")
    calibration = property(lambda self: self.path / "calibration.json")
    thresholds = property(lambda self: self.path / "thresholds.json")  # multi-label, from eval
    check = property(lambda self: self.path / "check.json")
    diagnosis = property(lambda self: self.path / "diagnosis.json")
    report = property(lambda self: self.path / "report.html")
    seeds = property(lambda self: self.path / "seeds.json")  # in the OUT of `--seeds N`
    seeds_config = property(lambda self: self.path / "seeds_config.yaml")  # likewise
    # A k-fold run (`--folds K`): RUN/fold<k>/ are ordinary runs, these are RUN's own files.
    folds_csv = property(lambda self: self.path / "folds.csv")  # path,label,group,fold
    folds_json = property(lambda self: self.path / "folds.json")  # members, OOF metrics
    folds_config = property(lambda self: self.path / "folds_config.yaml")  # as requested
    oof_logits = property(lambda self: self.path / "oof_logits.npz")  # paths, labels, logits
    manifests = property(lambda self: self.path / "manifests")  # fold<k>.csv per member

    def member(self, fold: int) -> Path:
        return self.path / f"fold{fold}"

    def fold_members(self) -> list[Path]:
        """The finished members of a k-fold run, in fold order; [] for any other run."""
        data = self.read_json(self.folds_json) if self.folds_json.is_file() else None
        if not data:
            return []
        return [
            self.path / m["dir"] for m in data.get("members", []) if m.get("status") != "failed"
        ]

    def eval_json(self, split: str) -> Path:
        return self.path / f"eval_{split}.json"

    def predictions(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"

    def lr_find_plot(self, stage: str) -> Path:
        return self.path / f"lr_find_{stage}.png"

    def eval_splits(self) -> list[str]:
        """Splits with an eval_<split>.json, newest first (the one evaluated last leads)."""
        files = self.path.glob(self.eval_json("*").name)
        newest = sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)
        return [f.stem.removeprefix("eval_") for f in newest]

    # --- reading ------------------------------------------------------------------------------

    def read_json(self, path: Path) -> Any | None:
        """See the module function `read_json`: None when absent, MedfitError when unreadable."""
        return read_json(path)

    def read_history(self) -> list[EpochRow]:
        """metrics.jsonl; [] before the first epoch. A torn last line is skipped; any other line
        that is not an epoch row is a MedfitError naming the line."""
        path = self.metrics_jsonl
        text = read_run_text(path)
        if text is None:
            return []
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        rows = []
        for i, (n, line) in enumerate(lines):
            try:
                rows.append(EpochRow.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                if i == len(lines) - 1:
                    break  # the row being written when the run was killed
                raise MedfitError(
                    f"{path}, line {n}: not an epoch row ({type(exc).__name__}: {exc}); "
                    f"{_remedy(path)}"
                ) from None
        return rows

    def read_summary(self) -> Summary | None:
        """summary.json; None while the run has not finished."""
        raw = read_json(self.summary)
        if raw is None:
            return None
        try:
            return Summary.from_dict(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MedfitError(
                f"{self.summary}: not a medfit summary ({type(exc).__name__}: {exc}); "
                f"{_remedy(self.summary)}"
            ) from None

    def read_classes(self) -> list[str]:
        """classes.json, in label order; [] when absent."""
        raw = read_json(self.classes)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise MedfitError(
                f"{self.classes}: expected a JSON list of class names; {_remedy(self.classes)}"
            )
        return [str(c) for c in raw]

    def read_temperature(self) -> float | tuple[float, ...] | None:
        """calibration.json's temperature (multi-label runs: one per label, `temperatures`);
        None when the run has none, or one fitted on fewer than MIN_CALIBRATION_IMAGES images
        (such a T is noise, not a calibration)."""
        path = self.calibration
        saved = read_json(path)
        if saved is None:
            return None
        try:
            value = saved["temperatures"] if "temperatures" in saved else saved["temperature"]
            values = [float(v) for v in value] if isinstance(value, list) else [float(value)]
            fitted_on = saved.get("n_images")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MedfitError(
                f"{path}: expected a JSON object with a number 'temperature'; {_remedy(path)}"
            ) from None
        if isinstance(fitted_on, int) and fitted_on < MIN_CALIBRATION_IMAGES:
            return None
        if not all(math.isfinite(t) and t > 0 for t in values):
            raise MedfitError(f"{path}: temperature must be a positive number, got {value!r}")
        return tuple(values) if isinstance(value, list) else values[0]

    def read_thresholds(self) -> list[float] | None:
        """thresholds.json's per-label operating thresholds (multi-label runs, chosen on val by
        `medfit eval`); None before the first eval."""
        saved = read_json(self.thresholds)
        if saved is None:
            return None
        try:
            return [float(t) for t in saved["thresholds"]]
        except (KeyError, TypeError, ValueError):
            raise MedfitError(
                f"{self.thresholds}: expected a JSON object with a list 'thresholds'; "
                f"{_remedy(self.thresholds)}"
            ) from None

    def read_config_mapping(self) -> dict[str, Any]:
        """config.yaml as plain data, tolerantly (a run written by another medfit version may
        hold keys this one does not know; `RunConfig.load` is the strict, typed reader)."""
        try:
            config = yaml.safe_load(read_run_text(self.config) or "") or {}
        except (MedfitError, yaml.YAMLError, RecursionError):
            config = None
        if not isinstance(config, dict) or not all(
            isinstance(config.get(k, {}), dict) for k in ("data", "model")
        ):
            raise MedfitError(f"{self.config}: not a readable run config")
        return config

    def read_split_rows(self) -> list[SplitRow]:
        """split.csv, skipped files included (`SplitRow.ok` is False for them); [] when absent."""
        text = read_run_text(self.split)
        if text is None:
            return []
        try:
            return [
                SplitRow(r["path"], r["label"], r["split"], r["status"])
                for r in csv.DictReader(io.StringIO(text, newline=""))
            ]
        except (KeyError, csv.Error) as exc:
            raise MedfitError(
                f"{self.split}: expected columns path,label,split,status ({exc}); "
                f"{_remedy(self.split)}"
            ) from None

    def read_predictions(self, split: str) -> tuple[list[PredictionRow], int] | None:
        """predictions_<split>.csv as `write_predictions` wrote it: (rows, rows that could not
        be read); None when absent. Text cells go back through `csv_value`."""
        text = read_run_text(self.predictions(split))
        if text is None:
            return None
        rows, bad = [], 0
        try:
            for raw in csv.DictReader(io.StringIO(text, newline="")):
                try:
                    probs = {
                        k.removeprefix("p_"): float(v)
                        for k, v in raw.items()
                        if k and k.startswith("p_")
                    }
                    row = [csv_value(raw[k]) for k in ("path", "label", "predicted")]
                except (KeyError, TypeError, ValueError):
                    bad += 1
                    continue
                rows.append(PredictionRow(row[0], row[1], row[2], probs))
        except csv.Error as exc:
            path = self.predictions(split)
            raise MedfitError(f"{path}: not a predictions CSV ({exc}); {_remedy(path)}") from None
        return rows, bad

    # --- writing ------------------------------------------------------------------------------

    def write_text(self, path: Path, text: str) -> None:
        try:
            atomic_write_text(path, text)  # a file name that is not UTF-8 keeps its bytes
        except OSError as exc:  # a full disk must not end the run with a traceback
            then = (
                f"continue with: medfit train --resume {self.path} ({self.last.name} is intact)"
                if self.last.is_file()
                else "run the command again (no checkpoint was written yet)"
            )
            raise MedfitError(
                f"could not write {path}: {exc.strerror or exc}; free disk space and {then}"
            ) from None

    def write_json(self, path: Path, data: Any) -> None:
        self.write_text(path, json.dumps(data, indent=2) + "\n")

    def write_predictions(self, split: str, classes: list[str], rows: list[PredictionRow]) -> None:
        """path, label, predicted, p_<class>...; text cells through `csv_cell` (no spreadsheet
        formula), probabilities to 6 decimals, file names with their own bytes."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
        for r in rows:
            cells = [csv_cell(r.path), csv_cell(r.label), csv_cell(r.predicted)]
            writer.writerow([*cells, *[f"{r.probs[c]:.6f}" for c in classes]])
        self.write_text(self.predictions(split), buffer.getvalue())

    def write_split_rows(self, rows: Sequence[SplitRow]) -> None:
        """split.csv: path, label, split, status ("ok" or "skipped: why")."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "label", "split", "status"])
        writer.writerows([r.path, r.label, r.split, r.status] for r in rows)
        self.write_text(self.split, buffer.getvalue())

    def write_history(self, history: Sequence[EpochRow | dict[str, Any]]) -> None:
        rows = [row.to_dict() if isinstance(row, EpochRow) else row for row in history]
        self.write_text(self.metrics_jsonl, "".join(json.dumps(row) + "\n" for row in rows))
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[-1]))
            writer.writeheader()
            writer.writerows(rows)
        self.write_text(self.metrics_csv, buffer.getvalue())

    def acquire(self, new: bool = False) -> None:
        """Take the directory's lock, or refuse: two runs in one directory would interleave files.

        The lock file is created with O_EXCL, so of two processes starting at the same moment
        exactly one gets it. A lock left by a killed run (its pid is gone) is taken over, which is
        what `--resume` after a kill -9 needs. With `new=True` (a run that is not resuming) a
        directory that already holds another run's files is refused as well: it was empty when
        its name was picked, and another run filled it in the meantime.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):  # a stale lock is removed and the claim retried
            if self._create_lock():
                if new and self._foreign_entries():
                    self.release()
                    raise MedfitError(
                        f"{self.path} was filled by another medfit run while this one started; "
                        "start again (a free name is picked) or use another --out"
                    )
                _LOCKED.append(self.path)
                return
            pid = self._lock_pid()
            if pid == os.getpid():
                _LOCKED.append(self.path)
                return
            if pid and _alive(pid):
                raise MedfitError(
                    f"{self.path} is in use by another medfit run (pid {pid}); "
                    "use another --out or wait for it to finish"
                )
            if not pid and attempt < 2:  # created an instant ago, its pid not written yet
                time.sleep(0.1)
                continue
            self.lock.unlink(missing_ok=True)  # left by a run that was killed
        raise MedfitError(f"{self.path}: could not take the run lock {self.lock}; try again")

    def _create_lock(self) -> bool:
        try:
            fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True

    def _lock_pid(self) -> int:
        """The pid in the lock file; 0 when it is unreadable or still being written."""
        try:
            return int(self.lock.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _foreign_entries(self) -> bool:
        return any(child.name != self.lock.name for child in self.path.iterdir())

    def release(self) -> None:
        """Remove the lock if it is this process's (never another run's)."""
        if self._lock_pid() == os.getpid():
            self.lock.unlink(missing_ok=True)


# Run directories this process has locked, latest last: the interrupt message names the run.
_LOCKED: list[Path] = []


def last_locked_run() -> Path | None:
    """The run directory this process locked last (it may be released by now), or None."""
    return _LOCKED[-1] if _LOCKED else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fresh_run_dir(out: str) -> RunDir:
    """`out` itself if new or empty; else the first free `out-2`, `out-3`, ... (never overwrite)."""
    base = Path(out).expanduser()
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return RunDir(candidate)


def existing_run_dir(path: str) -> RunDir:
    run = RunDir(Path(path).expanduser())
    if not run.config.is_file():
        raise MedfitError(f"{run.path} is not a medfit run directory (no config.yaml)")
    return run
