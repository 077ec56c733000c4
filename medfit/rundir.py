"""The run directory: the contract between train, eval, predict and export.

RUN/config.yaml               resolved config (re-run with --config)
RUN/classes.json              class names in label order
RUN/preprocess.json           size, mean/std, interpolation from the weights' config
RUN/split.csv                 which file went to which split (and any skipped file)
RUN/metrics.jsonl|csv         one row per epoch (`EpochRow`)
RUN/summary.json              the outcome in a few numbers (`Summary`)
RUN/checkpoints/              best.pt (selected weights), last.pt (everything needed to resume)
RUN/tb/                       TensorBoard events
RUN/lr_find_<stage>.png       the LR range test, when --lr auto ran it
RUN/calibration.json          the temperature `medfit eval` fitted on val
RUN/eval_<split>.json         `medfit eval` metrics; predictions_<split>.csv its per-image output
RUN/check.json                `medfit check DATA --out RUN`
RUN/diagnosis.json            `medfit diagnose RUN`
RUN/report.html               `medfit report RUN`
OUT/seeds.json                `--seeds N`: per-seed table, mean and sd (OUT holds seed<k>/ runs)
OUT/seeds_config.yaml         `--seeds N`: the config as requested

Every file is written here and read here, with one policy: an absent optional file reads as
None or [], a file that exists but cannot be parsed is a one-line MedfitError naming it and the
command that writes it again. The one exception is a torn last line of metrics.jsonl (a run
killed mid-write by an older medfit or a copy): it is skipped, the epochs before it stand.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from medfit.errors import MedfitError
from medfit.files import (
    TEXT_ERRORS,
    FileMissing,
    atomic_write_text,
    json_depth_ok,
    read_text_file,
)

# `--select-metric` choices and the epoch-row field each one reads.
METRIC_KEYS = {
    "accuracy": "val_acc",
    "balanced_accuracy": "val_balanced_accuracy",
    "macro_f1": "val_macro_f1",
}


@dataclass
class EpochRow:
    """One line of metrics.jsonl / metrics.csv: what one epoch did and how long it took.

    train_acc is measured on augmented batches; val_* on the whole val split. Timings are
    seconds: data_s waiting for batches, augment_s augmenting, compute_s forward/backward.
    """

    epoch: int
    stage: str  # "head" (linear probe) or "full" (fine-tuning)
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_balanced_accuracy: float
    val_macro_f1: float
    lr: float
    data_s: float = 0.0
    augment_s: float = 0.0
    compute_s: float = 0.0
    eval_s: float = 0.0
    epoch_s: float = 0.0
    skipped_steps: int = 0
    selection_score: float | None = None  # the smoothed selection metric, set when selected

    def metric(self, name: str) -> float:
        """The value of `--select-metric name` in this epoch."""
        return float(getattr(self, METRIC_KEYS[name]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> EpochRow:
        """Read a row written by any medfit version: a missing metric is NaN, a missing time 0."""

        def num(key: str, missing: float) -> float:
            value = row.get(key)
            return float(value) if value is not None and value != "" else missing

        values: dict[str, Any] = {
            "epoch": int(row["epoch"]),
            "stage": str(row.get("stage") or "full"),
        }
        for f in fields(cls):
            if f.name in values:
                continue
            if f.name == "skipped_steps":
                values[f.name] = int(num(f.name, 0.0))
            elif f.name == "selection_score":
                score = num(f.name, math.nan)
                values[f.name] = None if math.isnan(score) else score
            else:
                values[f.name] = num(f.name, 0.0 if f.name.endswith("_s") else math.nan)
        return cls(**values)


_VAL_KEYS = ("val_acc", "val_balanced_accuracy", "val_macro_f1")


@dataclass
class Summary:
    """summary.json: what `fit` writes when a run ends (field names are the JSON keys)."""

    model: str
    weights: str
    classes: list[str]
    train_images: int
    val_images: int
    skipped_images: int
    selected_metric: str
    best_epoch: int  # the epoch whose weights are checkpoints/best.pt
    best_metric: float | None  # its smoothed selection score (None: no epoch was scored)
    epochs_run: int
    final: dict[str, float | None]  # val_acc, val_balanced_accuracy, val_macro_f1 of the last epoch
    data_wait_s: float
    compute_s: float
    device: str
    wall_s: float
    augment_s: float = 0.0  # written since augmentation was timed apart from compute
    world_size: int = 1  # written since torchrun support
    best_val_acc: float | None = None  # the best epoch's own val accuracy (not smoothed)
    smoothed_over: int = 1  # epochs in best_metric's mean (fewer at a stage's start)
    run_dir: str = ""  # the absolute path the run was written to (--out may have been numbered)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Summary:
        """Raises KeyError, TypeError or ValueError when a key is missing or of the wrong kind."""
        final = raw["final"]
        return cls(
            model=str(raw["model"]),
            weights=str(raw["weights"]),
            classes=[str(c) for c in raw["classes"]],
            train_images=int(raw["train_images"]),
            val_images=int(raw["val_images"]),
            skipped_images=int(raw["skipped_images"]),
            selected_metric=str(raw["selected_metric"]),
            best_epoch=int(raw["best_epoch"]),
            best_metric=None if raw["best_metric"] is None else float(raw["best_metric"]),
            epochs_run=int(raw["epochs_run"]),
            final={k: None if final.get(k) is None else float(final[k]) for k in _VAL_KEYS},
            data_wait_s=float(raw["data_wait_s"]),
            compute_s=float(raw["compute_s"]),
            device=str(raw["device"]),
            wall_s=float(raw["wall_s"]),
            augment_s=float(raw.get("augment_s", 0.0)),
            world_size=int(raw.get("world_size", 1)),
            best_val_acc=None if raw.get("best_val_acc") is None else float(raw["best_val_acc"]),
            smoothed_over=int(raw.get("smoothed_over", 1)),
            run_dir=str(raw.get("run_dir", "")),
        )


@dataclass(frozen=True)
class SplitRow:
    """One line of split.csv: a file, its class, its split, and "ok" or why it was skipped."""

    path: str
    label: str
    split: str
    status: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The command that writes each file again, for the error that says a file cannot be read.
_REMEDY = {
    "check.json": "run `medfit check DATA --out {run}` again",
    "diagnosis.json": "run `medfit diagnose {run}` again",
    "calibration.json": "run `medfit eval {run}` again",
    "seeds.json": "run the same `medfit train --seeds N --out {run}` again",
}
_DAMAGED = "it was damaged after training: restore it from a copy, or train again"


def _remedy(path: Path) -> str:
    if path.name.startswith(("eval_", "predictions_")):
        return f"run `medfit eval {path.parent}` again"
    return _REMEDY.get(path.name, _DAMAGED).format(run=path.parent)


def read_run_text(path: Path) -> str | None:
    """A run file's text, read bounded (medfit.files); None when it does not exist, a one-line
    MedfitError naming the command that writes it again when it cannot be read."""
    try:
        return read_text_file(path, "run file", errors=TEXT_ERRORS).text
    except FileMissing:
        return None
    except MedfitError as exc:
        raise MedfitError(f"{exc}; {_remedy(path)}") from None


def read_json(path: Path) -> Any | None:
    """The JSON in `path`; None when it does not exist, a one-line MedfitError when unreadable."""
    text = read_run_text(path)
    if text is None:
        return None
    if not json_depth_ok(text):
        raise MedfitError(f"{path}: JSON nested deeper than medfit writes; {_remedy(path)}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MedfitError(f"{path}: not valid JSON ({exc}); {_remedy(path)}") from None


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc).splitlines()[0]


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
    check = property(lambda self: self.path / "check.json")
    diagnosis = property(lambda self: self.path / "diagnosis.json")
    report = property(lambda self: self.path / "report.html")
    seeds = property(lambda self: self.path / "seeds.json")  # in the OUT of `--seeds N`
    seeds_config = property(lambda self: self.path / "seeds_config.yaml")  # likewise

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
