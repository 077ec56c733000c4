"""Metrics and calibration for multi-label tasks: labels (N, L) of 0/1, one logit per label,
probability p = sigmoid(z) (the mean over test-time-augmentation views of sigmoid(z_v / T_l)).

Which labels count. A label needs MIN_POSITIVES positives and as many negatives in a split before
its AUC is averaged into a headline: the AUC of a label with 3 positives moves by a third of its
range when one image changes, and a macro mean that includes it is mostly that noise (chest X-ray
sets routinely hold labels with a handful of cases). Such a label is still listed, with its own
numbers where they are defined and a note saying it was not measured; a label with no positives
(or no negatives) has no AUC at all.

Headlines, over the measurable labels only:
  macro ROC-AUC  mean over labels of each label's AUC (every label weighs the same);
  micro ROC-AUC  one AUC over all (image, label) cells pooled (frequent labels weigh more);
  mAP            mean over labels of average precision (scikit-learn's step-wise area under the
                 precision-recall curve), which, unlike AUC, moves with prevalence.
Per label: AUC, AP, and sensitivity/specificity at an operating threshold picked on val by
Youden's J (`metrics.youden_threshold`) and held fixed on the evaluated split. Exact match is the
fraction of images whose whole 0/1 vector is right at those thresholds (0.5 where none was
picked). NLL is the binary cross-entropy averaged over every (image, label) cell.

ECE is class-wise: for each measurable label, 15 equal-width bins over that label's p (a p of
exactly 0 goes to the first bin, as in `metrics.reliability`), ECE_l = sum_b (n_b / N) *
|mean_{i in b} y_il - mean_{i in b} p_il|, then the mean over labels. The top-label ECE of
`metrics` folds p and 1 - p into one confidence, which for a rare label puts nearly every image
in the top bin and lets over-confidence at one end cancel under-confidence at the other.

Confidence intervals are 95% percentile bootstrap intervals over images (an image's labels stay
together, so the correlation between labels is kept). A resample is a vector of counts (how often
each image was drawn), and AUC, AP, sensitivity and specificity are computed as count-weighted
statistics from one sort per label, so 1000 resamples need no Python loop over resamples. A
resample that draws no positive (or no negative) of a label skips that label; its macro AUC and
mAP are the means over the labels it could measure.

Calibration is one temperature per label through the single-label rule itself: with two-column
logits [0, z], softmax([0, z / T]) = [1 - sigmoid(z / T), sigmoid(z / T)], so `calibrate` (fit T
on val, apply it only if its cross-fitted held-out NLL gain has a 95% CI above 0) runs unchanged on
each label, views included.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from medfit.evaluate.calibration import TooFewToCalibrate, calibrate
from medfit.evaluate.metrics import (
    ECE_BINS,
    json_safe,
    operating_metrics,
    percentile_ci,
    youden_threshold,
)
from medfit.inference.scores import macro_auc, measurable
from medfit.rundir import MIN_CALIBRATION_IMAGES

MIN_POSITIVES = 10
DEFAULT_THRESHOLD = 0.5  # for exact match, on a label that has no operating threshold
BOOT_CELLS = 2_000_000  # resamples x (image, label) cells the bootstrap holds at once


def _views(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return z[None] if z.ndim == 2 else z


def sigmoid_probs(logits: np.ndarray, temperatures: np.ndarray | None = None) -> np.ndarray:
    """(V, N, L) or (N, L) logits -> (N, L) probabilities: mean over views of sigmoid(z / T_l)
    (per-label temperature, default 1), what predict returns for a multi-label run."""
    z = _views(logits)
    t = np.ones(z.shape[2]) if temperatures is None else np.asarray(temperatures, dtype=float)
    return np.asarray(expit(z / t).mean(0))


def _class_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool)
    positives = y.sum(0)
    return positives, len(y) - positives


def _measurable(labels: np.ndarray, min_positives: int) -> np.ndarray:
    """Indices of the labels with >= min_positives positives and negatives (at least 1 each)."""
    return np.flatnonzero(measurable(np.asarray(labels), max(min_positives, 1)))


def choose_thresholds(labels: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """Per-label operating threshold chosen on val by Youden's J; None for a label without both
    classes (no ROC curve to pick a point from)."""
    y, p = np.asarray(labels), np.asarray(probs)
    return [youden_threshold(y[:, j], p[:, j]) for j in range(y.shape[1])]


def binary_ece(labels: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """One label's ECE over bins of p (see the module docstring); NaN on no images."""
    if len(p) == 0:
        return math.nan
    index = np.clip(np.ceil(p * bins).astype(int) - 1, 0, bins - 1)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=np.asarray(labels, dtype=float), minlength=bins)
    return float(np.abs(sum_y - sum_p).sum() / len(p))  # sum_b n_b/N |mean y - mean p|


def mean_ece(labels: np.ndarray, probs: np.ndarray, min_positives: int = MIN_POSITIVES) -> float:
    """Mean class-wise ECE over the measurable labels; NaN when none is."""
    keep = _measurable(labels, min_positives)
    if len(keep) == 0:
        return math.nan
    return float(np.mean([binary_ece(labels[:, j], probs[:, j]) for j in keep]))


def binary_nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Binary cross-entropy averaged over every (image, label) cell (p clipped to 1e-12)."""
    y = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(probs, dtype=float), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _ratio_rows(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), math.nan), where=den > 0)


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of one label under each row of `weights` (B, M) (image counts of a resample):
    sum over positive-negative pairs of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2), over the
    weighted pair count. One sort serves every row; NaN where a row has no positive or no
    negative weight."""
    order = np.argsort(scores, kind="mergesort")
    s, positive = scores[order], np.asarray(y, dtype=bool)[order]
    w = weights[:, order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    ends = np.r_[starts[1:], len(s)]
    w_neg = w * ~positive
    cum = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w_neg, axis=1)], axis=1)
    below = cum[:, starts[group]]
    tied = cum[:, ends[group]] - below
    w_pos = w * positive
    pairs = w_pos.sum(1) * w_neg.sum(1)
    return _ratio_rows((w_pos * (below + 0.5 * tied)).sum(1), pairs)


def weighted_ap(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's definition, sum_k (R_k - R_k-1) P_k over the distinct
    scores from the highest down) under each row of `weights`; NaN where a row lacks a class."""
    order = np.argsort(-scores, kind="mergesort")
    s, positive = scores[order], np.asarray(y, dtype=bool)[order]
    w = weights[:, order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie group
    tp = np.cumsum(w * positive, axis=1)[:, last]
    fp = np.cumsum(w * ~positive, axis=1)[:, last]
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    gained = np.diff(tp, axis=1, prepend=0.0)
    ap = _ratio_rows((gained * precision).sum(1), tp[:, -1])
    ap[fp[:, -1] == 0] = math.nan
    return ap


def _finite_row_mean(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(1)
    return _ratio_rows(total, finite.sum(1).astype(float))


def _resample_counts(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """(draws, n): how often each image was drawn in each resample of n with replacement."""
    idx = rng.integers(0, n, (draws, n))
    flat = (np.arange(draws)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=draws * n).reshape(draws, n).astype(float)


def _bootstrap(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: list[float | None],
    measured: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Per-resample values: per-label "auc", "ap", "sensitivity", "specificity" (n_boot, L) and
    "macro_auc", "micro_auc", "map" (n_boot,). Resamples are drawn in chunks of BOOT_CELLS."""
    n, n_labels = y.shape
    out = {
        key: np.full((n_boot, n_labels), math.nan)
        for key in ("auc", "ap", "sensitivity", "specificity")
    }
    micro = np.full(n_boot, math.nan)
    positives, negatives = _class_counts(y)
    both = np.flatnonzero((positives > 0) & (negatives > 0))
    fixed = [j for j, t in enumerate(thresholds) if t is not None]
    truth = y.astype(bool)
    called = np.zeros_like(truth)
    for j in fixed:
        called[:, j] = p[:, j] >= thresholds[j]
    flat_y, flat_p = truth[:, measured].ravel(), p[:, measured].ravel()
    chunk = max(1, min(n_boot, BOOT_CELLS // (n * max(1, len(measured)))))
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        w = _resample_counts(rng, n, min(chunk, n_boot - start))
        rows = slice(start, start + len(w))
        for col in both:
            out["auc"][rows, col] = weighted_auc(truth[:, col], p[:, col], w)
            out["ap"][rows, col] = weighted_ap(truth[:, col], p[:, col], w)
        if fixed:
            tp, pos = w @ (called & truth)[:, fixed], w @ truth[:, fixed]
            tn, neg = w @ (~called & ~truth)[:, fixed], w @ ~truth[:, fixed]
            out["sensitivity"][rows, fixed] = _ratio_rows(tp, pos)
            out["specificity"][rows, fixed] = _ratio_rows(tn, neg)
        if len(measured):
            micro[rows] = weighted_auc(flat_y, flat_p, np.repeat(w, len(measured), axis=1))
    return {
        **out,
        "macro_auc": _finite_row_mean(out["auc"][:, measured]),
        "micro_auc": micro,
        "map": _finite_row_mean(out["ap"][:, measured]),
    }


def _rarity(positives: int, negatives: int, min_positives: int) -> str | None:
    """Why a label is too rare to measure, or None when it is not."""
    if positives < min_positives:
        return f"{positives} positive(s) in this split (needs {min_positives})"
    if negatives < min_positives:
        return f"{negatives} negative(s) in this split (needs {min_positives})"
    return None


def _ci(samples: np.ndarray) -> list[float | None]:
    return percentile_ci(samples.tolist())


def multilabel_report(
    labels: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    thresholds: list[float | None],
    n_boot: int = 1000,
    seed: int = 0,
    min_positives: int = MIN_POSITIVES,
) -> dict[str, Any]:
    """Everything eval reports for one multi-label split (keys in the module docstring's terms:
    task, macro_auc, micro_auc, map, ci95, measured_labels, too_rare, per_label, exact_match,
    n_images, ece, nll, min_positives). Undefined numbers are None, so the report is strict JSON
    as it stands."""
    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    if y.shape != p.shape or y.ndim != 2 or not len(names) == y.shape[1] == len(thresholds):
        raise ValueError(
            f"labels {y.shape}, probs {p.shape}, {len(names)} names and {len(thresholds)} "
            "thresholds must agree on (N, L)"
        )
    min_positives = max(min_positives, 1)
    measured = _measurable(y, min_positives)
    positives, negatives = _class_counts(y)
    cut = np.array([DEFAULT_THRESHOLD if t is None else t for t in thresholds])
    boot = _bootstrap(y, p, thresholds, measured, n_boot, seed) if n_boot > 0 else None
    per_label: dict[str, Any] = {}
    too_rare: dict[str, str] = {}
    for j, name in enumerate(names):
        pos, neg = int(positives[j]), int(negatives[j])
        entry: dict[str, Any] = {"positives": pos, "negatives": neg, "auc": None, "ap": None}
        if pos and neg:
            entry["auc"] = float(roc_auc_score(y[:, j], p[:, j]))
            entry["ap"] = float(average_precision_score(y[:, j], p[:, j]))
        entry["threshold"] = thresholds[j]
        entry["sensitivity"] = entry["specificity"] = None
        notes = []
        threshold = thresholds[j]
        if threshold is not None:
            operating = operating_metrics(y[:, j], p[:, j], threshold)
            entry["sensitivity"] = operating["sensitivity"]
            entry["specificity"] = operating["specificity"]
        else:
            notes.append("no operating threshold: sensitivity and specificity not reported")
        entry["ci95"] = (
            {key: _ci(boot[key][:, j]) for key in ("auc", "ap", "sensitivity", "specificity")}
            if boot is not None
            else {}
        )
        rarity = _rarity(pos, neg, min_positives)
        if rarity is not None:
            too_rare[name] = rarity
            notes.insert(0, f"too rare to measure: {rarity}")
        entry["note"] = "; ".join(notes) or None
        per_label[name] = entry
    measured_names = [names[j] for j in measured]
    report: dict[str, Any] = {
        "task": "multilabel",
        "macro_auc": macro_auc(y, p, min_positives),
        "micro_auc": (
            float(roc_auc_score(y[:, measured].ravel(), p[:, measured].ravel()))
            if len(measured)
            else math.nan
        ),
        "map": (
            float(np.mean([per_label[name]["ap"] for name in measured_names]))
            if len(measured)
            else math.nan
        ),
        "ci95": (
            {key: _ci(boot[key]) for key in ("macro_auc", "micro_auc", "map")}
            if boot is not None
            else {}
        ),
        "measured_labels": measured_names,
        "too_rare": too_rare,
        "min_positives": min_positives,
        "per_label": per_label,
        "exact_match": float(np.mean(((p >= cut) == (y == 1)).all(1))) if len(y) else math.nan,
        "n_images": len(y),
        "ece": mean_ece(y, p, min_positives),
        "nll": binary_nll(y, p) if y.size else math.nan,
    }
    return dict(json_safe(report))


def _num(value: Any, digits: int = 3) -> str:
    missing = value is None or (isinstance(value, float) and not math.isfinite(value))
    return "-" if missing else f"{value:.{digits}f}"


def _ci_text(ci: Any, open_: str = "(95% CI ", close: str = ")") -> str:
    if not ci or ci[0] is None:
        return ""
    return f" {open_}{ci[0]:.2f}-{ci[1]:.2f}{close}"


def report_lines(report: dict[str, Any]) -> list[str]:
    """Human lines for the terminal: the macro/micro/mAP headline with CIs, a fixed-width table
    (label, positives, AUC [CI], AP, sensitivity and specificity @ threshold), and a line naming
    the labels too rare to measure, with their counts."""
    ci, need = report.get("ci95", {}), report.get("min_positives", MIN_POSITIVES)
    k = len(report["measured_labels"])
    if k:
        lines = [
            f"macro ROC-AUC {_num(report['macro_auc'])}{_ci_text(ci.get('macro_auc'))} over "
            f"{k} label{'s' if k != 1 else ''}; "
            f"micro {_num(report['micro_auc'])}{_ci_text(ci.get('micro_auc'))}; "
            f"mAP {_num(report['map'])}{_ci_text(ci.get('map'))}"
        ]
    else:
        lines = [
            f"macro ROC-AUC not measured: no label has {need} positives and {need} negatives "
            f"among these {report['n_images']} images"
        ]
    rows = report["per_label"]
    width = max(5, *(len(name) for name in rows))
    lines.append(
        f"  {'label':<{width}}  {'pos':>5}  {'AUC [95% CI]':<17}  {'AP':>5}"
        f"  {'sens':>4}  {'spec':>4}  @ threshold"
    )
    for name, row in rows.items():
        auc = _num(row["auc"]) + _ci_text(row.get("ci95", {}).get("auc"), "[", "]")
        lines.append(
            f"  {name:<{width}}  {row['positives']:>5}  {auc:<17}  {_num(row['ap']):>5}"
            f"  {_num(row['sensitivity'], 2):>4}  {_num(row['specificity'], 2):>4}"
            f"  @ {_num(row['threshold'])}" + ("  (too rare)" if name in report["too_rare"] else "")
        )
    if report["too_rare"]:
        short_of_negatives = False
        named = []
        for name in report["too_rare"]:
            row = rows[name]
            if row["positives"] < need:
                named.append(f"{name} ({row['positives']})")
            else:
                short_of_negatives = True
                named.append(f"{name} ({row['negatives']} negatives)")
        what = "positives or negatives" if short_of_negatives else "positives"
        lines.append(f"not measured (fewer than {need} {what}): " + ", ".join(named))
    return lines


def calibrate_multilabel(
    logits: np.ndarray, labels: np.ndarray, names: list[str] | None = None
) -> dict[str, Any]:
    """One temperature per label, each through `calibration.calibrate` on the two-column logits
    [0, z_l] (see the module docstring): T_l is fitted on val and applied only if its cross-fitted
    held-out NLL gain has a 95% CI above 0, else T_l = 1 and `reasons` says why. Labels with
    fewer than MIN_POSITIVES positives (or negatives) are never fitted: their T would be set by a
    handful of images. Raises TooFewToCalibrate below MIN_CALIBRATION_IMAGES images.

    `reasons` is keyed by label name (`names`) or by the label's index as a string; a label
    never fitted has fitted_temperature None. NLL (per image per label) and class-wise ECE
    (mean over labels with MIN_POSITIVES of each class) before and after are on the val logits.
    Logits can be (V, N, L) or (N, L)."""
    z, y = _views(logits), np.asarray(labels).astype(int)
    if y.ndim != 2 or z.shape[1:] != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} must agree on (N, L)")
    n, n_labels = y.shape
    if n < MIN_CALIBRATION_IMAGES:
        raise TooFewToCalibrate(
            f"temperatures not fitted: {n} readable val image(s), and a stable fit of T needs at "
            f"least {MIN_CALIBRATION_IMAGES} (with fewer, T often lands on its search bound); "
            "make more val images readable or add some"
        )
    keys = list(names) if names is not None else [str(j) for j in range(n_labels)]
    if len(keys) != n_labels:
        raise ValueError(f"{len(keys)} names for {n_labels} labels")
    positives, negatives = _class_counts(y)
    temperatures: list[float] = []
    fitted: list[float | None] = []
    applied: list[bool] = []
    gains: list[float | None] = []
    gain_cis: list[list[float] | None] = []
    reasons: dict[str, str] = {}
    for j, key in enumerate(keys):
        rarity = _rarity(int(positives[j]), int(negatives[j]), MIN_POSITIVES)
        if rarity is not None:
            temperatures.append(1.0)
            fitted.append(None)
            applied.append(False)
            gains.append(None)
            gain_cis.append(None)
            reasons[key] = f"too rare: {rarity} among {n} val images; not fitted (T = 1)"
            continue
        two_column = np.stack([np.zeros_like(z[..., j]), z[..., j]], axis=-1)
        result = calibrate(two_column, y[:, j])
        temperatures.append(float(result["temperature"]))
        fitted.append(float(result["fitted_temperature"]))
        applied.append(bool(result["applied"]))
        gains.append(float(result["held_out_nll_gain"]))
        gain_cis.append([float(v) for v in result["held_out_nll_gain_ci95"]])
        if not result["applied"]:
            reasons[key] = result["reason"]
    before, after = sigmoid_probs(z), sigmoid_probs(z, np.array(temperatures))
    return {
        "temperatures": temperatures,
        "fitted_temperatures": fitted,
        "applied": applied,
        "reasons": reasons,
        "labels": keys,
        "held_out_nll_gain": gains,
        "held_out_nll_gain_ci95": gain_cis,
        "fitted_on": "val",
        "n_images": n,
        "nll_before": binary_nll(y, before),
        "nll_after": binary_nll(y, after),
        "ece_before": mean_ece(y, before),
        "ece_after": mean_ece(y, after),
    }
