"""The run directory: the contract between train, eval, predict and export.

RUN/config.yaml        resolved config (re-run with --config)
RUN/classes.json       class names in label order
RUN/preprocess.json    size, mean/std, interpolation from the weights' config
RUN/split.csv          which file went to which split (and any skipped file)
RUN/metrics.jsonl|csv  one row per epoch
RUN/summary.json       the outcome in a few numbers
RUN/checkpoints/       best.pt (selected weights), last.pt (everything needed to resume)
RUN/tb/                TensorBoard events
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from medfit.errors import MedfitError
from medfit.files import atomic_write_bytes

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
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    tensorboard = property(lambda self: self.path / "tb")
    lock = property(lambda self: self.path / ".lock")

    def write_text(self, path: Path, text: str) -> None:
        try:
            atomic_write_bytes(path, lambda f: f.write(text.encode()))
        except OSError as exc:  # a full disk must not end the run with a traceback
            raise MedfitError(
                f"could not write {path}: {exc.strerror or exc}; free disk space (checkpoints "
                "already written are intact) and resume with --resume, or use another --out"
            ) from None

    def write_json(self, path: Path, data: Any) -> None:
        self.write_text(path, json.dumps(data, indent=2) + "\n")

    def write_history(self, history: list[dict[str, Any]]) -> None:
        self.write_text(self.metrics_jsonl, "".join(json.dumps(row) + "\n" for row in history))
        buffer = io.StringIO()
        if history:
            writer = csv.DictWriter(buffer, fieldnames=list(history[-1]))
            writer.writeheader()
            writer.writerows(history)
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
                return
            pid = self._lock_pid()
            if pid == os.getpid():
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
