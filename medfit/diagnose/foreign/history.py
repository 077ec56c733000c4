"""What a training history written by another tool says, in one model: phases of epochs.

A log can hold several runs or phases: a head stage then fine-tuning (two `fit()` calls), runs
appended to one CSVLogger file, a notebook cell run twice. Each is a `Phase`, in order, never
merged by epoch number; the rules run per phase and across neighbours. Columns are canonical
(`COLUMNS`): the tool's own names are kept beside them, so every finding can quote the log.

Values are checked as they are read (`Phase.add`): an accuracy outside [0, 1] (after a column
given in percent is scaled), or any non-finite accuracy, is dropped and named in a note; a NaN or
infinite *loss* is kept, because that is what divergence looks like.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The canonical per-epoch columns (bench/diagnose_wild/KEY_FORMAT.md uses the same names).
COLUMNS = (
    "train_loss",
    "val_loss",
    "train_acc",
    "val_acc",
    "lr",
    "train_auc",
    "val_auc",
    "val_f1",
    "val_precision",
    "val_recall",
    "val_balanced_acc",
    "val_top5",
)
# Columns that are fractions: a value outside [0, 1] is impossible (or the column is in percent).
FRACTIONS = frozenset(c for c in COLUMNS if not c.endswith("loss") and c != "lr")

# Words that say which split a metric was measured on.
SPLIT_WORDS = {
    "val": "val",
    "valid": "val",
    "validation": "val",
    "eval": "val",
    "dev": "val",
    "test": "val",  # a "test" metric logged every epoch is the set that selects the model
    "train": "train",
    "training": "train",
    "trn": "train",
}
NOISE_WORDS = {"epoch", "avg", "mean", "running", "total", "overall", "categorical", "sparse"}
STEP_WORDS = {"step", "steps", "batch", "batches", "iteration", "iterations", "iter", "iters"}
# Metric words -> canonical kind (the split is decided separately).
KINDS = {
    ("loss",): "loss",
    ("acc",): "acc",
    ("accuracy",): "acc",
    ("binary", "accuracy"): "acc",
    ("accuracy", "top1"): "acc",
    ("top1",): "acc",
    ("top1", "acc"): "acc",
    ("acc1",): "acc",
    ("top5",): "top5",
    ("accuracy", "top5"): "top5",
    ("acc5",): "top5",
    ("top", "k", "accuracy"): "top5",
    ("auc",): "auc",
    ("roc", "auc"): "auc",
    ("auroc",): "auc",
    ("roc", "auc", "score"): "auc",
    ("f1",): "f1",
    ("f1", "score"): "f1",
    ("macro", "f1"): "f1",
    ("f1", "macro"): "f1",
    ("precision",): "precision",
    ("recall",): "recall",
    ("sensitivity",): "recall",
    ("balanced", "accuracy"): "balanced_acc",
    ("balanced", "acc"): "balanced_acc",
    ("learning", "rate"): "lr",
    ("lr",): "lr",
}
CANONICAL = {
    ("train", "loss"): "train_loss",
    ("val", "loss"): "val_loss",
    ("train", "acc"): "train_acc",
    ("val", "acc"): "val_acc",
    ("train", "auc"): "train_auc",
    ("val", "auc"): "val_auc",
    ("val", "f1"): "val_f1",
    ("val", "precision"): "val_precision",
    ("val", "recall"): "val_recall",
    ("val", "balanced_acc"): "val_balanced_acc",
    ("val", "top5"): "val_top5",
}


def canonical(name: str, default_split: str = "train") -> str | None:
    """The canonical column a tool's metric name holds, or None (a per-step value, a metric
    medfit has no use for). `default_split` is the split of a name that does not say one: train
    for Keras (`accuracy`), val for fastai (whose metrics are computed on the validation set)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    while words and re.fullmatch(r"\d+", words[-1]):
        words.pop()  # Keras numbers repeated metrics: auc_1, val_precision_3
    if not words or STEP_WORDS & set(words):
        return None
    if words[0] == "lr" or words[:2] == ["learning", "rate"] or words[-2:] == ["learning", "rate"]:
        return "lr"  # lr, lr-SGD, lr/pg0, learning_rate, epoch_learning_rate
    splits = [SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS]
    if "metrics" in words[:1] and not splits:
        splits = ["val"]  # Ultralytics: metrics/accuracy_top1 is measured on val
    rest = tuple(w for w in words if w not in SPLIT_WORDS and w not in NOISE_WORDS)
    if rest[:1] == ("metrics",):
        rest = rest[1:]
    kind = KINDS.get(rest)
    if kind is None:
        return None
    if kind == "lr":
        return "lr"
    return CANONICAL.get((splits[0] if splits else default_split, kind))


@dataclass
class Phase:
    """Consecutive epochs of one run or `fit()` call, as the log numbers them."""

    name: str
    epochs: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)  # canonical -> one per epoch
    source: dict[str, str] = field(default_factory=dict)  # canonical -> the tool's own name
    planned: int | None = None  # N of "Epoch k/N"
    steps: int | None = None  # optimizer steps per epoch, when the log says
    epoch_s: list[float] = field(default_factory=list)  # seconds per epoch (NaN unknown)
    step_s: list[float] = field(default_factory=list)  # seconds per step (NaN unknown)

    def __len__(self) -> int:
        return len(self.epochs)

    def column(self, name: str) -> list[float]:
        """The column's values, NaN where an epoch has none; all NaN when absent."""
        return self.values.get(name, [math.nan] * len(self.epochs))

    def has(self, name: str, at_least: int = 1) -> bool:
        return sum(not math.isnan(v) for v in self.column(name)) >= at_least

    def to_dict(self) -> dict[str, Any]:
        def plain(xs: list[float]) -> list[float | None]:
            return [None if math.isnan(x) else x for x in xs]

        return {
            "name": self.name,
            "epochs": self.epochs,
            "planned": self.planned,
            "steps": self.steps,
            "columns": dict(self.source),
            "values": {k: plain(v) for k, v in self.values.items()},
            "epoch_s": plain(self.epoch_s) if any(not math.isnan(x) for x in self.epoch_s) else [],
        }


@dataclass
class History:
    """Everything read from one or more log files of one training job."""

    paths: list[Path]
    format: str  # what the file was read as, e.g. "Keras console log (Keras 3)"
    framework: str  # keras | pytorch | lightning | hf | ultralytics | fastai | timm | unknown
    phases: list[Phase]
    ignored: list[str] = field(default_factory=list)  # the tool's columns medfit did not use
    notes: list[str] = field(default_factory=list)  # what was dropped or ambiguous, one line each
    best_reported: tuple[str, float] | None = None  # from checkpoint callback lines

    @property
    def epochs(self) -> int:
        return sum(len(p) for p in self.phases)

    def columns(self) -> list[str]:
        return [c for c in COLUMNS if any(c in p.values for p in self.phases)]

    def describe(self) -> str:
        names = ", ".join(
            self.paths[0].name if len(self.paths) == 1 else p.name for p in self.paths
        )
        spans = "; ".join(
            f"{p.name}: {len(p)} epoch(s) {p.epochs[0]}-{p.epochs[-1]}"
            + (f" of {p.planned}" if p.planned else "")
            for p in self.phases
            if p.epochs
        )
        cols = ", ".join(
            f"{src}->{c}"
            for c, src in {k: v for p in self.phases for k, v in p.source.items()}.items()
        )
        ignored = ", ".join(self.ignored) if self.ignored else "none"
        return (
            f"{names} read as {self.format}: {len(self.phases)} phase(s) ({spans}); "
            f"understood {cols or 'nothing'}; ignored {ignored}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": [str(p) for p in self.paths],
            "format": self.format,
            "framework": self.framework,
            "phases": [p.to_dict() for p in self.phases],
            "ignored": self.ignored,
            "notes": self.notes,
        }


class PhaseBuilder:
    """Collects {epoch: {source column: value}} for one phase and turns it into a `Phase`,
    mapping columns to canonical names and checking values (the module docstring)."""

    def __init__(self, name: str, default_split: str = "train") -> None:
        self.name = name
        self.default_split = default_split
        self.rows: dict[int, dict[str, float]] = {}
        self.order: dict[str, None] = {}  # source columns in first-seen order
        self.timing: dict[int, tuple[float, float]] = {}  # epoch -> (epoch s, step s)
        self.planned: int | None = None
        self.steps: int | None = None

    def add(self, epoch: int, name: str, value: float) -> None:
        self.rows.setdefault(epoch, {})[name] = value
        self.order[name] = None

    def time(self, epoch: int, epoch_s: float = math.nan, step_s: float = math.nan) -> None:
        self.rows.setdefault(epoch, {})
        self.timing[epoch] = (epoch_s, step_s)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def build(self, notes: list[str], ignored: dict[str, None]) -> Phase:
        mapped: dict[str, str] = {}  # canonical -> source column (the first one wins)
        for col in self.order:
            target = canonical(col, self.default_split)
            if target is None or target in mapped:
                if col not in ("epoch", "step", "time", "epoch_s"):
                    ignored[col] = None
                continue
            mapped[target] = col
        # An epoch with values only in columns medfit does not use is not an epoch here (a
        # TensorBoard tag logged per iteration would otherwise add thousands).
        epochs = sorted(e for e, row in self.rows.items() if any(c in row for c in mapped.values()))
        phase = Phase(self.name, epochs, planned=self.planned, steps=self.steps)
        for target, col in mapped.items():
            series = [self.rows[e].get(col, math.nan) for e in epochs]
            if target in FRACTIONS:
                given = [col in self.rows[e] for e in epochs]  # a NaN written is not a blank
                series = _check_fraction(series, given, epochs, col, self.name, notes)
            if all(math.isnan(v) for v in series):
                continue
            phase.values[target] = series
            phase.source[target] = col
        phase.epoch_s = [self.timing.get(e, (math.nan, math.nan))[0] for e in epochs]
        phase.step_s = [self.timing.get(e, (math.nan, math.nan))[1] for e in epochs]
        return phase


def _check_fraction(
    series: list[float],
    given: list[bool],
    epochs: list[int],
    col: str,
    phase: str,
    notes: list[str],
) -> list[float]:
    """A fraction column: in percent when every finite value is in [0, 100] and at least half
    are above 1 (timm's eval_top1, many PyTorch prints); impossible values dropped and named."""
    finite = [v for v in series if math.isfinite(v)]
    above_one = sum(v > 1.0 for v in finite)
    if finite and above_one * 2 >= len(finite) and min(finite) >= 0.0 and max(finite) <= 100.0:
        notes.append(f"{col} is in percent (values up to {max(finite):g}): read as fractions")
        series = [v / 100.0 for v in series]
    bad = [(e, v) for e, v, g in zip(epochs, series, given, strict=True) if g]
    bad = [(e, v) for e, v in bad if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        shown = ", ".join(f"epoch {e}: {v:g}" for e, v in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        notes.append(
            f"{phase}: {col} has {len(bad)} impossible value(s) for a fraction ({shown}{more}); "
            "those epochs are read without it"
        )
        bad_epochs = {e for e, _ in bad}
        series = [math.nan if e in bad_epochs else v for e, v in zip(epochs, series, strict=True)]
    return series
