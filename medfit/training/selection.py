"""Which epoch's weights to keep, and when to stop: the smoothed `--select-metric`.

Like fastai's `TrackerCallback` / timm's `CheckpointSaver`: the tracker knows the metric and its
direction, remembers the best smoothed value and its epoch, and says when `patience` epochs have
passed without improvement. Saving the weights is the caller's job (medfit.training.fit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfit.rundir import EpochRow

# Every `--select-metric` choice (besides auto) and whether higher values are better.
HIGHER_IS_BETTER = {
    "accuracy": True,
    "balanced_accuracy": True,
    "macro_f1": True,
    "macro_auc": True,
    "val_loss": False,
}


def metric_value(row: EpochRow, metric: str) -> float:
    return row.val_loss if metric == "val_loss" else row.metric(metric)


def stage_window(history: Sequence[EpochRow], window: int) -> list[EpochRow]:
    """The last `window` epochs of the last row's stage: a full-stage score never averages in
    the head epochs (their frozen backbone scores lower and would read as a worse model)."""
    rows: list[EpochRow] = []
    for row in reversed(history):
        if row.stage != history[-1].stage or len(rows) >= max(window, 1):
            break
        rows.append(row)
    return rows[::-1]


def smoothed(history: Sequence[EpochRow], metric: str, window: int) -> float:
    """The mean of the last `window` epochs of the same stage: one lucky noisy epoch is not
    picked."""
    return float(np.mean([metric_value(row, metric) for row in stage_window(history, window)]))


class BestTracker:
    """The best smoothed value of `metric` so far, its epoch, and the early-stop rule."""

    def __init__(self, metric: str, smooth: int = 1, patience: int = 0, stop_at: float = 0.0):
        self.metric, self.smooth, self.patience, self.stop_at = metric, smooth, patience, stop_at
        self.reached = False  # an epoch's val accuracy reached `stop_at`
        self.higher = HIGHER_IS_BETTER[metric]
        self.best: float | None = None  # None until an epoch has been scored
        self.epoch = 0  # the best epoch (1-based); 0: none yet

    def update(self, history: Sequence[EpochRow]) -> bool:
        """Score the last row (sets its `selection_score`); True if it is the new best."""
        row = history[-1]
        score = smoothed(history, self.metric, self.smooth)
        row.selection_score = score
        if not self._beats(score):
            return False
        self.best, self.epoch = score, row.epoch
        return True

    def window_of(self, history: Sequence[EpochRow], epoch: int) -> int:
        """How many epochs the score of `epoch` (1-based) averaged; 0 for no such epoch."""
        upto = [row for row in history if row.epoch <= epoch]
        return len(stage_window(upto, self.smooth)) if upto and upto[-1].epoch == epoch else 0

    def _beats(self, score: float) -> bool:
        # A NaN score (a diverged epoch) never replaces a real one, but the first epoch always
        # counts: a run always has a best checkpoint.
        if self.best is None or math.isnan(self.best):
            return True
        return score > self.best if self.higher else score < self.best

    def should_stop(self, row: EpochRow) -> bool:
        """`patience` full-stage epochs without a new best (the head stage never stops a run),
        or this epoch's val accuracy reached `stop_at` (in either stage: the target is met)."""
        self.reached = self.stop_at > 0 and row.val_acc >= self.stop_at
        waited = row.epoch - self.epoch
        return self.reached or (
            self.patience > 0 and row.stage == "full" and waited >= self.patience
        )

    def why_stopped(self) -> str:
        if self.reached:
            return f"val accuracy reached --stop-at {self.stop_at:g}"
        return f"{self.metric} (smoothed) has not improved for {self.patience} epochs"

    def state_dict(self) -> dict[str, Any]:
        """The format of `best` in last.pt since the first medfit version."""
        return {"metric": self.best, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Also reads old checkpoints, whose unscored start was {"metric": -1.0, "epoch": 0}."""
        self.epoch = int(state["epoch"])
        self.best = float(state["metric"]) if self.epoch and state["metric"] is not None else None
