"""Read the pieces of a run directory the report renders, tolerating any that are absent.

A piece that exists but cannot be read (truncated JSON, a CSV without its columns) is treated as
absent with a `problems` note, so one damaged file costs one section, never the whole report.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfit.errors import MedfitError

EVAL_PREFIX = "eval_"
CHECK_FILE = "check.json"
DIAGNOSIS_FILE = "diagnosis.json"


@dataclass(frozen=True)
class Prediction:
    """One row of predictions_<split>.csv, with the numbers the gallery sorts by."""

    path: str
    label: str
    predicted: str
    p_true: float
    p_predicted: float

    @property
    def correct(self) -> bool:
        return self.label == self.predicted

    @property
    def loss(self) -> float:
        """Cross-entropy of the true class: what "top losses" ranks by."""
        return -math.log(max(self.p_true, 1e-12))


@dataclass
class RunData:
    path: Path
    config_text: str | None = None
    classes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_splits: list[str] = field(default_factory=list)
    split: str | None = None
    evaluation: dict[str, Any] | None = None
    predictions: list[Prediction] = field(default_factory=list)
    check: dict[str, Any] | None = None
    diagnosis: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.pt"


def read_run(run_dir: str | Path, split: str | None = None) -> RunData:
    """Everything the report needs; a MedfitError only when RUN is not a run directory."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise MedfitError(
            f"run directory not found: {path}; pass the --out folder of a training run"
        )
    if not (path / "config.yaml").is_file():
        raise MedfitError(f"{path} is not a medfit run directory (no config.yaml)")
    data = RunData(path, config_text=(path / "config.yaml").read_text(errors="replace"))
    data.classes = _as(list, _json(data, path / "classes.json"), [])
    data.summary = _as(dict, _json(data, path / "summary.json"), {})
    if not data.classes:
        data.classes = [str(c) for c in data.summary.get("classes", [])]
    data.history = _history(data, path / "metrics.jsonl")
    data.eval_splits = _eval_splits(path)
    data.split = split or (data.eval_splits[0] if data.eval_splits else None)
    if data.split is not None:
        data.evaluation = _as(dict, _json(data, path / f"{EVAL_PREFIX}{data.split}.json"), None)
        data.predictions = _predictions(data, path / f"predictions_{data.split}.csv")
    data.check = _as(dict, _json(data, path / CHECK_FILE), None)
    data.diagnosis = _as(dict, _json(data, path / DIAGNOSIS_FILE), None)
    return data


def _eval_splits(path: Path) -> list[str]:
    """Splits with an eval_<split>.json, newest first (the default is what was evaluated last)."""
    files = sorted(path.glob(f"{EVAL_PREFIX}*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [f.stem.removeprefix(EVAL_PREFIX) for f in files]


def _as(kind: type, value: Any, default: Any) -> Any:
    return value if isinstance(value, kind) else default


def _json(data: RunData, path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        data.problems.append(f"{path.name}: unreadable ({exc}); re-run the command that wrote it")
        return None


def _history(data: RunData, path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a torn last line (a run killed mid-write) is skipped, not fatal."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError:
            data.problems.append(f"{path.name}, line {n}: not JSON; skipped")
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def _predictions(data: RunData, path: Path) -> list[Prediction]:
    """predictions_<split>.csv as written by `medfit eval`: path, label, predicted, p_<class>..."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            return [p for row in csv.DictReader(f) if (p := _prediction(row)) is not None]
    except (OSError, csv.Error) as exc:
        data.problems.append(f"{path.name}: unreadable ({exc}); re-run `medfit eval`")
        return []


def _prediction(row: dict[str, str]) -> Prediction | None:
    try:
        label, predicted = row["label"], row["predicted"]
        return Prediction(
            row["path"], label, predicted, float(row[f"p_{label}"]), float(row[f"p_{predicted}"])
        )
    except (KeyError, TypeError, ValueError):
        return None
