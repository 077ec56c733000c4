"""Classification and calibration metrics from labels (N,) and probabilities (N, K).

Every classification number comes from scikit-learn. Expected calibration error (ECE) is the
top-label version over B = 15 equal-width confidence bins:

    conf_i = max_k p_ik,  correct_i = [argmax_k p_ik == y_i],
    bin b = (b/B, (b+1)/B]  (a confidence of exactly 0 goes to the first bin),
    ECE = sum_b (n_b / N) * | mean_{i in b} correct_i - mean_{i in b} conf_i |.

Ordinal (disease-grade) tasks add two numbers computed on the grade ranks r (0 = lowest grade):
quadratic weighted kappa (scikit-learn's `cohen_kappa_score(weights="quadratic")`; 1 = perfect,
0 = chance agreement; NaN when only one grade occurs among labels and predictions together) and
the mean absolute grade error, mean_i |r(pred_i) - r(y_i)| in grade steps.

Balanced accuracy is the mean recall over the classes present among the labels (scikit-learn's
definition, computed without its "y_pred contains classes not in y_true" warning, which every
bootstrap resample that misses a rare class would raise).

Two-class tasks add an operating point: the second class is "positive", an image is called
positive when its probability p >= threshold, and the threshold is picked on val by Youden's J
(the ROC point maximising sensitivity + specificity - 1; ties go to the highest threshold) unless
given. On the evaluated split it reports sensitivity TP/(TP+FN), specificity TN/(TN+FP), PPV
TP/(TP+FP) and NPV TN/(TN+FN) (NaN when the denominator is 0); their CIs resample the evaluated
images with the threshold held fixed.

Confidence intervals are 95% percentile bootstrap intervals: resample the N images with
replacement `n_boot` times (seeded), recompute the metric, take the 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)

ECE_BINS = 15
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "auc")
ORDINAL = ("quadratic_kappa", "mean_abs_error")
OPERATING = ("sensitivity", "specificity", "ppv", "npv")


def headline_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 (over all K classes) and one-vs-rest AUC."""
    predicted = probs.argmax(1)
    classes = np.arange(probs.shape[1])
    return {
        "accuracy": float(accuracy_score(labels, predicted)) if len(labels) else math.nan,
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "macro_f1": float(
            f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
        ),
        "auc": roc_auc(labels, probs)[0],
    }


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in `labels` (NaN when there are no labels)."""
    present = np.unique(labels)
    if len(present) == 0:
        return math.nan
    return float(recall_score(labels, predicted, labels=present, average="macro", zero_division=0))


def ordinal_metrics(
    labels: np.ndarray, predicted: np.ndarray, ranks: list[int]
) -> dict[str, float]:
    """Quadratic weighted kappa and mean absolute grade error; ranks[c] is class c's grade rank."""
    rank = np.asarray(ranks, dtype=int)
    true_rank = rank[np.asarray(labels, dtype=int)]
    pred_rank = rank[np.asarray(predicted, dtype=int)]
    if len(true_rank) == 0:
        return {"quadratic_kappa": math.nan, "mean_abs_error": math.nan}
    return {
        "quadratic_kappa": quadratic_kappa(true_rank, pred_rank, len(ranks)),
        "mean_abs_error": float(np.mean(np.abs(pred_rank - true_rank))),
    }


def quadratic_kappa(true_rank: np.ndarray, pred_rank: np.ndarray, k: int) -> float:
    """Quadratic weighted kappa over ranks 0..k-1; NaN when a single rank is all there is (the
    chance-expected disagreement is then 0, and scikit-learn would warn and divide by it)."""
    if len(np.union1d(true_rank, pred_rank)) < 2:
        return math.nan
    return float(cohen_kappa_score(true_rank, pred_rank, labels=np.arange(k), weights="quadratic"))


def point_metrics(
    labels: np.ndarray, probs: np.ndarray, ranks: list[int] | None = None
) -> dict[str, float]:
    """The headline metrics, plus the ordinal ones when the classes have grade ranks."""
    out = headline_metrics(labels, probs)
    if ranks is not None:
        out.update(ordinal_metrics(labels, probs.argmax(1), ranks))
    return out


def roc_auc(labels: np.ndarray, probs: np.ndarray) -> tuple[float, str | None]:
    """Macro one-vs-rest ROC-AUC and a note when classes are absent (NaN if fewer than 2 left).

    Binary: the AUC of the positive (second) column. Multi-class with every class present:
    `roc_auc_score(..., multi_class="ovr")`. Classes absent from the labels have no ROC curve, so
    the macro mean is taken over the present classes only, and the note says which were left out.
    """
    k = probs.shape[1]
    present = np.unique(labels)
    if len(present) < 2:
        return math.nan, "AUC undefined: fewer than 2 classes present in the labels"
    if k == 2:
        return float(roc_auc_score(labels, probs[:, 1])), None
    if len(present) == k:
        scores = probs / probs.sum(1, keepdims=True)
        return float(roc_auc_score(labels, scores, multi_class="ovr", labels=np.arange(k))), None
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in present]
    missing = sorted(set(range(k)) - set(present.tolist()))
    return float(np.mean(aucs)), f"AUC averaged over present classes only; absent: {missing}"


def per_class_auc(labels: np.ndarray, probs: np.ndarray) -> list[float]:
    """One-vs-rest AUC of each class; NaN for a class that is absent (or the only one present)."""
    out = []
    for c in range(probs.shape[1]):
        positive = labels == c
        ok = 0 < positive.sum() < len(labels)
        out.append(float(roc_auc_score(positive, probs[:, c])) if ok else math.nan)
    return out


def reliability(
    labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Per-bin mean confidence, accuracy and count (top label; equal-width bins on [0, 1])."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    index = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        rows.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "confidence": float(conf[members].mean()) if n else None,
                "accuracy": float(correct[members].mean()) if n else None,
                "count": n,
            }
        )
    return rows


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Top-label ECE (see the module docstring for the formula)."""
    total = len(labels)
    if total == 0:
        return math.nan
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability(labels, probs, bins)
            if row["count"]
        )
    )


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))


def bootstrap_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    ranks: list[int] | None = None,
) -> dict[str, list[float | None]]:
    """95% percentile bootstrap CI of each headline metric, and of the ordinal ones when `ranks`
    is given ([None, None] when undefined)."""
    rng = np.random.default_rng(seed)
    names = HEADLINE + (ORDINAL if ranks is not None else ())
    samples: dict[str, list[float]] = {name: [] for name in names}
    n = len(labels)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        for name, value in point_metrics(labels[idx], probs[idx], ranks).items():
            samples[name].append(value)
    return {name: percentile_ci(values) for name, values in samples.items()}


def youden_threshold(labels: np.ndarray, p_positive: np.ndarray) -> float | None:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 on these images (label
    1 positive); None when both classes are not present. Clipped to [0, 1]: scikit-learn's
    first ROC threshold is +inf (nothing called positive)."""
    if len(np.unique(labels)) < 2:
        return None
    fpr, tpr, thresholds = roc_curve(labels, p_positive)
    best = int(np.argmax(tpr - fpr))  # argmax takes the first, i.e. the highest, on ties
    return float(min(thresholds[best], 1.0))


def operating_metrics(
    labels: np.ndarray, p_positive: np.ndarray, threshold: float
) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV when p >= threshold is called positive."""
    positive = np.asarray(labels) == 1
    called = np.asarray(p_positive) >= threshold
    tp, fn = int(np.sum(called & positive)), int(np.sum(~called & positive))
    fp, tn = int(np.sum(called & ~positive)), int(np.sum(~called & ~positive))
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def operating_point(
    labels: np.ndarray,
    p_positive: np.ndarray,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """`operating_metrics` on these images with 95% bootstrap CIs (threshold held fixed) and the
    confusion counts."""
    labels = np.asarray(labels)
    out: dict[str, Any] = {
        "threshold": threshold,
        **operating_metrics(labels, p_positive, threshold),
    }
    called = np.asarray(p_positive) >= threshold
    out["counts"] = {
        "tp": int(np.sum(called & (labels == 1))),
        "fp": int(np.sum(called & (labels != 1))),
        "tn": int(np.sum(~called & (labels != 1))),
        "fn": int(np.sum(~called & (labels == 1))),
    }
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in OPERATING}
    for _ in range(n_boot if len(labels) else 0):
        idx = rng.integers(0, len(labels), len(labels))
        for name, value in operating_metrics(labels[idx], p_positive[idx], threshold).items():
            samples[name].append(value)
    out["ci95"] = (
        {name: percentile_ci(values) for name, values in samples.items()} if n_boot else {}
    )
    return out


def percentile_ci(values: list[float]) -> list[float | None]:
    """[2.5th, 97.5th] percentile of the finite values; [None, None] when there are none."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return [None, None]
    return [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))]


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def classification_report(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    n_boot: int = 1000,
    seed: int = 0,
    ranks: list[int] | None = None,
) -> dict[str, Any]:
    """Everything `medfit eval` reports for one set of probabilities; `ranks` (each class's grade
    rank) marks an ordinal task and adds quadratic kappa and the mean absolute grade error."""
    k = len(classes)
    predicted = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(k), zero_division=0
    )
    aucs = per_class_auc(labels, probs)
    per_class = {
        name: {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
            "auc": aucs[c],
        }
        for c, name in enumerate(classes)
    }
    auc, note = roc_auc(labels, probs)
    report: dict[str, Any] = {**point_metrics(labels, probs, ranks), "auc": auc, "auc_note": note}
    if ranks is not None:
        report["task"] = "ordinal"
    report["ci95"] = bootstrap_ci(labels, probs, n_boot, seed, ranks) if n_boot > 0 else {}
    report["per_class"] = per_class
    report["confusion_matrix"] = confusion_matrix(labels, predicted, labels=np.arange(k)).tolist()
    report["ece"] = expected_calibration_error(labels, probs)
    report["nll"] = nll(labels, probs)
    report["reliability"] = reliability(labels, probs)
    return report
