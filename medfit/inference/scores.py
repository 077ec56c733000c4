"""What a multi-label model's outputs score, for training's epoch rows and eval alike.

Multi-label outputs are one independent logit per label (probability = sigmoid): an image may
have any number of findings. These scores live here, below training and evaluation, so that the
metric that selects the epoch is the one `medfit eval` reports.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable 1 / (1 + exp(-z))."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def measurable(labels: np.ndarray, min_positives: int = 1) -> np.ndarray:
    """(L,) bool: labels with at least `min_positives` positives and as many negatives."""
    positives = labels.sum(0)
    return (positives >= min_positives) & (len(labels) - positives >= min_positives)


def macro_auc(labels: np.ndarray, probs: np.ndarray, min_positives: int = 1) -> float:
    """Mean ROC-AUC over the labels `measurable` here (labels (N, L) 0/1, probs (N, L)); NaN
    when none is. Selection uses min_positives=1: every label with a positive in val counts."""
    keep = np.flatnonzero(measurable(labels, min_positives))
    if len(keep) == 0:
        return math.nan
    return float(np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in keep]))


def multilabel_epoch_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """An epoch row's val metrics for a multi-label run: macro ROC-AUC (what selects), and at
    p >= 0.5 the label-wise accuracy (share of correct image-label pairs), the mean per-label
    balanced accuracy and the macro F1 (context only: 0.5 is not a chosen operating point)."""
    called = probs >= 0.5
    keep = np.flatnonzero(measurable(labels))
    balanced = [balanced_accuracy_score(labels[:, j], called[:, j]) for j in keep]
    return {
        "macro_auc": macro_auc(labels, probs),
        "accuracy": float((called == labels.astype(bool)).mean()),
        "balanced_accuracy": float(np.mean(balanced)) if balanced else math.nan,
        "macro_f1": float(f1_score(labels, called.astype(int), average="macro", zero_division=0)),
    }


def scaled_thresholds(
    thresholds: list[float], temperatures: float | tuple[float, ...] | np.ndarray | None
) -> list[float]:
    """Thresholds on uncalibrated sigmoid outputs moved onto temperature-scaled ones: p >= t
    exactly when sigmoid(logit(p) / T) >= sigmoid(logit(t) / T), so the same images are called
    whichever probabilities a user reads (RUN/thresholds.json holds the uncalibrated ones)."""
    if temperatures is None:
        return list(thresholds)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-12, 1 - 1e-12)
    logit = np.log(t) - np.log1p(-t)
    return sigmoid(logit / np.asarray(temperatures, dtype=np.float64)).tolist()
