"""The typed records a run directory holds: epoch rows, the summary, split rows.

Plain dataclasses (no torch, no numpy): every reader, the torch-free CLI preflight included, can
import them. `from_dict` reads what any medfit version wrote; `to_dict` writes what is read back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# Fewest readable val images a temperature is fitted on. Simulated over-confident model (true
# T 2.0, 300 draws per size): with 5-10 images the fit hit its search bound in 24-10% of draws
# (interquartile T 0.79-3.01 at 8), at 20 in 2%; from 30 on never (interquartile 1.48-2.38).
# A calibration.json fitted on fewer (older medfit wrote T from 0 images) is not a calibration.
MIN_CALIBRATION_IMAGES = 30

# `--select-metric` choices and the epoch-row field each one reads.
METRIC_KEYS = {
    "accuracy": "val_acc",
    "balanced_accuracy": "val_balanced_accuracy",
    "macro_f1": "val_macro_f1",
    "macro_auc": "val_macro_auc",
}


@dataclass
class EpochRow:
    """One line of metrics.jsonl / metrics.csv: what one epoch did and how long it took.

    train_acc is measured on augmented batches; val_* on the whole val split. Timings are
    seconds: data_s waiting for batches, augment_s augmenting, compute_s forward/backward.
    Multi-label runs (sigmoid outputs): val_macro_auc is the macro ROC-AUC that selects;
    train_acc/val_acc are label-wise accuracies and balanced accuracy/macro F1 are per label,
    all at p = 0.5 (medfit.inference.scores). Single-label runs leave val_macro_auc None.
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
    val_macro_auc: float | None = None  # multi-label runs only

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
            elif f.name in ("selection_score", "val_macro_auc"):
                score = num(f.name, math.nan)
                values[f.name] = None if math.isnan(score) else score
            else:
                values[f.name] = num(f.name, 0.0 if f.name.endswith("_s") else math.nan)
        return cls(**values)


_VAL_KEYS = ("val_acc", "val_balanced_accuracy", "val_macro_f1", "val_macro_auc")


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
            final={
                k: None if final.get(k) is None else float(final[k])
                for k in _VAL_KEYS
                if k in final or k != "val_macro_auc"  # single-label runs have none
            },
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
class PredictionRow:
    """One row of predictions_<split>.csv: a file, its label, the predicted class and the
    (temperature-scaled) probability of every class."""

    path: str
    label: str
    predicted: str
    probs: dict[str, float]

    @property
    def correct(self) -> bool:
        return self.label == self.predicted

    @property
    def p_true(self) -> float:
        return self.probs.get(self.label, math.nan)

    @property
    def p_predicted(self) -> float:
        return self.probs.get(self.predicted, math.nan)

    @property
    def loss(self) -> float:
        """Cross-entropy of the true class: what the report's "top losses" ranks by."""
        return -math.log(max(self.p_true, 1e-12))


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
