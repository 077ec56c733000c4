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
import os
from pathlib import Path
from typing import Any

from medfit.errors import MedfitError
from medfit.training.checkpoint import atomic_write_bytes


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
        atomic_write_bytes(path, lambda f: f.write(text.encode()))

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

    def acquire(self) -> None:
        """Refuse to share the directory with a live run (two runs would interleave files)."""
        if self.lock.exists():
            try:
                pid = int(self.lock.read_text().strip() or 0)
            except ValueError:
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise MedfitError(
                    f"{self.path} is in use by another medfit run (pid {pid}); "
                    "use another --out or wait for it to finish"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.write_text(str(os.getpid()))

    def release(self) -> None:
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
