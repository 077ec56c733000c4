"""Multi-label data (several findings per image, `Sample.targets`): what `check` adds for them.

- Label frequency per split: positives per label, images with no finding, images with 2+ labels.
- Rare labels: a label with fewer than MIN_EVAL_POSITIVES positives in val or test (its AUC there
  is noise: a handful of positives move it by tenths), or absent from a split (no AUC at all).
- Co-occurrence: images carrying both labels of each pair (all splits and train), the full
  matrix in check.json and the most frequent pairs on the terminal.
- Label issues: the single-label probe made one-vs-rest. Out-of-fold probabilities per label
  from a logistic regression per label on the same frozen features (standardise, PCA, L2; folds
  grouped by patient when ids are known, stratified by each image's rarest label), then
  cleanlab's `multilabel_classification.filter.find_label_issues` (n_jobs=1: never a fork of
  this threaded process) or, without cleanlab, the same one-vs-rest rule built in. Only labels
  whose out-of-fold AUC clears chance at the lower end of its 95% interval (Hanley & McNeil
  1982) by `labels.MIN_LIFT` are judged: a probe that cannot see a finding flags its own errors.

Duplicates and patient leakage need nothing here: for them an image's label is its set of labels
(`Context.label_name`), so two copies whose sets differ conflict.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from medfit.check.context import LABEL_JOIN, NO_FINDING, Context
from medfit.check.labels import (
    C_L2,
    FOLDS,
    MAX_DIMS,
    MIN_LIFT,
    MIN_PER_CLASS,
    _features,
    _one_blas_thread,
    judged_issues,
    reduce,
)

MIN_EVAL_POSITIVES = 10  # positives a label needs in val/test for its AUC there to mean much
EVAL_SPLITS = ("val", "test")
TOP_PAIRS = 10  # co-occurring pairs shown on the terminal (check.json keeps every pair)


def multilabel_summary(ctx: Context) -> dict[str, Any]:
    """The `multilabel` section of check.json: frequency, rare labels, co-occurrence."""
    frequency = label_frequency(ctx)
    return {
        "labels": list(ctx.classes),
        "min_eval_positives": MIN_EVAL_POSITIVES,
        "frequency": frequency,
        "rare": rare_labels(frequency, ctx.classes),
        "cooccurrence": cooccurrence(ctx),
    }


def label_frequency(ctx: Context) -> dict[str, dict[str, Any]]:
    """Per split: images, positives per label, images with no finding and with 2+ labels."""
    targets, splits = ctx.targets, ctx.splits
    out: dict[str, dict[str, Any]] = {}
    for split in ctx.present_splits():
        t = targets[splits == split]
        per_image = t.sum(axis=1)
        out[split] = {
            "images": len(t),
            "positives": {c: int(n) for c, n in zip(ctx.classes, t.sum(axis=0), strict=True)},
            "no_finding": int(np.sum(per_image == 0)),
            "two_or_more": int(np.sum(per_image >= 2)),
            "labels_per_image": round(float(per_image.mean()), 3) if len(t) else 0.0,
        }
    return out


def rare_labels(frequency: dict[str, dict[str, Any]], classes: list[str]) -> list[dict[str, Any]]:
    """Labels absent from val/test, or with fewer than MIN_EVAL_POSITIVES positives there, one
    entry per (label, split), labels in `classes` order."""
    flags = []
    for label in classes:
        for split in EVAL_SPLITS:
            if split not in frequency:
                continue
            n = frequency[split]["positives"][label]
            if n < MIN_EVAL_POSITIVES:
                problem = "absent" if n == 0 else "rare"
                flags.append({"label": label, "split": split, "positives": n, "problem": problem})
    return flags


def cooccurrence(ctx: Context) -> dict[str, Any]:
    """Images carrying both labels, per pair: the K x K matrices (diagonal: positives) over all
    splits and over train, and every co-occurring pair, most frequent first."""
    targets = ctx.targets.astype(np.int64)
    train = targets[ctx.splits == "train"]
    both_all = targets.T @ targets
    both_train = train.T @ train
    pairs: list[dict[str, Any]] = []
    k = len(ctx.classes)
    for i in range(k):
        for j in range(i + 1, k):
            if both_all[i, j]:
                pairs.append(
                    {
                        "a": ctx.classes[i],
                        "b": ctx.classes[j],
                        "images": int(both_all[i, j]),
                        "train": int(both_train[i, j]),
                    }
                )
    pairs.sort(key=lambda p: (-p["images"], p["a"], p["b"]))
    return {
        "labels": list(ctx.classes),
        "all": both_all.tolist(),
        "train": both_train.tolist(),
        "pairs": pairs,
    }


# --- label issues -----------------------------------------------------------------------------


def multilabel_label_issues(ctx: Context) -> dict[str, Any]:
    """The images whose label set the rest of the data disagrees with, with the probe's quality
    per label alongside (the `label_issues` section for multi-label data)."""
    x, source = _features(ctx)
    if x is None:
        return {"checked": False, "reason": "no features (--features none)"}
    rows = ctx.readable()
    y = ctx.targets[rows]
    positives = y.sum(axis=0)
    usable = np.flatnonzero((positives >= MIN_PER_CLASS) & (len(rows) - positives >= MIN_PER_CLASS))
    if len(usable) == 0:
        reason = f"needs a label with at least {MIN_PER_CLASS} readable images on and off"
        return {"checked": False, "reason": reason}
    keys = np.array([ctx.samples[r].label for r in rows])  # stratification key: rarest label
    groups = [ctx.groups[r] for r in rows]
    from medfit.check.embed import resolve_device

    device = resolve_device(ctx.options.device)
    with _one_blas_thread():
        probs = out_of_fold_ovr(x[rows], y[:, usable], keys, groups, ctx.options.seed, device)
    per_label: list[dict[str, Any]] = []
    for col, j in enumerate(usable):
        auc, (lo, hi) = auc_ci(y[:, j], probs[:, col])
        entry: dict[str, Any] = {
            "label": ctx.classes[j],
            "positives": int(positives[j]),
            "auc": round(auc, 4),
        }
        entry.update(auc_ci95=[round(lo, 4), round(hi, 4)], judged=lo >= 0.5 + MIN_LIFT)
        per_label.append(entry)
    judged = [col for col, e in enumerate(per_label) if e["judged"]]
    skipped = sorted(set(ctx.classes) - {ctx.classes[j] for j in usable}, key=ctx.classes.index)
    probe = {
        "multilabel": True,
        "features": source,
        "method": _implementation(),
        "probe_macro_auc": round(float(np.mean([e["auc"] for e in per_label])), 4),
        "chance": 0.5,
        "min_auc_lower": 0.5 + MIN_LIFT,
        "per_label": per_label,
        "judged_labels": [per_label[col]["label"] for col in judged],
        "too_few_labels": skipped,
    }
    if not judged:
        best = max(per_label, key=lambda e: e["auc"])
        lo, hi = best["auc_ci95"]
        reason = (
            f"cannot be judged: no label's out-of-fold probe AUC clears {0.5 + MIN_LIFT:.2f} at "
            f"the lower end of its 95% CI (best: {best['label']} {best['auc']:.2f}, CI "
            f"{lo:.2f}-{hi:.2f}; macro {probe['probe_macro_auc']:.2f}); its disagreements would be "
            "its own errors, not wrong labels"
        )
        return {"checked": False, "judged": False, "reason": reason, **probe}
    probe["judged_macro_auc"] = round(float(np.mean([per_label[c]["auc"] for c in judged])), 4)
    cols = usable[judged]
    y_j, p_j = y[:, cols], probs[:, judged]
    found = confident_multilabel_issues(y_j, p_j)
    add, remove = confident_flips(y_j, p_j)
    issues = []
    for i in found[: ctx.options.max_label_issues]:
        ref = ctx.ref(int(rows[i]))
        ref.update(_issue_detail(y_j[i], p_j[i], add[i], remove[i], [ctx.classes[c] for c in cols]))
        given = set(ref["labels"])
        suggested = (given | set(ref["add"])) - set(ref["remove"])
        ref["suggested"] = LABEL_JOIN.join(c for c in ctx.classes if c in suggested) or NO_FINDING
        issues.append(ref)
    return judged_issues(probe, len(found), len(rows), issues)


def out_of_fold_ovr(
    x: np.ndarray,
    y: np.ndarray,
    keys: np.ndarray,
    groups: list[str | None] | None,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """(N, K) out-of-fold probabilities, one logistic regression per label (one-vs-rest) on
    standardised, PCA-reduced features; folds grouped by patient when ids are known (an image
    without one is a group of its own), stratified by `keys`."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    dims = min(MAX_DIMS, x.shape[1], len(y) // 2)
    z = reduce(x, dims, seed)
    group_ids = None
    if groups is not None and any(g is not None for g in groups):
        group_ids = np.array([g if g is not None else f"\0{i}" for i, g in enumerate(groups)])
    n_units = len(np.unique(group_ids)) if group_ids is not None else len(y)
    folds = max(2, min(FOLDS, n_units))
    cv: Any = StratifiedKFold(folds, shuffle=True, random_state=seed)
    if group_ids is not None:
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    probs = np.zeros(y.shape, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has only n members"
        for train, test in cv.split(z, keys, group_ids):
            probs[test] = sigmoid_regression(z[train], y[train], z[test], device)
    return probs


def sigmoid_regression(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, device: str
) -> np.ndarray:
    """(len(x_test), K) probabilities of a binary logistic regression per label (L2, sklearn's
    C = labels.C_L2): sklearn's lbfgs on a CPU, all labels at once in torch on a GPU. A label
    constant in the training rows gets its smoothed rate there, (positives + 1) / (n + 2)."""
    y_train = np.asarray(y_train)
    k = y_train.shape[1]
    rate = (y_train.sum(axis=0) + 1.0) / (len(y_train) + 2.0)
    out = np.tile(rate, (len(x_test), 1)).astype(np.float64)
    fit = np.flatnonzero(y_train.min(axis=0) != y_train.max(axis=0))
    if len(fit) == 0 or k == 0:
        return out
    if device.startswith("cuda"):
        out[:, fit] = torch_sigmoid_regression(x_train, y_train[:, fit], x_test, device)
        return out
    from sklearn.linear_model import LogisticRegression

    for j in fit:
        model = LogisticRegression(C=C_L2, max_iter=500).fit(x_train, y_train[:, j])
        out[:, j] = model.predict_proba(x_test)[:, 1]
    return out


def torch_sigmoid_regression(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, device: str
) -> np.ndarray:
    """`sigmoid_regression` as one full-batch L-BFGS in torch: the labels' objectives are
    separate (each sklearn's divided by C * N), so their sum has the same minimum."""
    import torch

    torch.manual_seed(0)
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.float32)).to(device)
    weight = torch.zeros((xt.shape[1], yt.shape[1]), device=device, requires_grad=True)
    bias = torch.zeros(yt.shape[1], device=device, requires_grad=True)
    l2 = 1.0 / (C_L2 * len(yt))
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=200,
        history_size=10,
        tolerance_grad=1e-5,
        tolerance_change=1e-7,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="sum")
        loss = loss / len(yt) + 0.5 * l2 * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        xs = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)).to(device)
        return torch.sigmoid(xs @ weight + bias).cpu().numpy().astype(np.float64)


def auc_ci(y: np.ndarray, p: np.ndarray) -> tuple[float, tuple[float, float]]:
    """ROC-AUC of scores `p` for 0/1 `y` and its 95% interval (Hanley & McNeil 1982), clipped
    to [0, 1]; both classes must be present."""
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p))
    n1, n0 = int(np.sum(y == 1)), int(np.sum(y == 0))
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    half = 1.96 * float(np.sqrt(max(var, 0.0)))
    return auc, (max(0.0, auc - half), min(1.0, auc + half))


def _implementation() -> str:
    """What `confident_multilabel_issues` runs: cleanlab when installed, else the built-in rule."""
    try:
        from cleanlab import __version__ as version
    except ImportError:
        return "confident learning (built in, one-vs-rest)"
    return f"cleanlab {version} multilabel find_label_issues"


def confident_multilabel_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows whose label set is likely wrong, most likely first: cleanlab's multi-label
    find_label_issues when installed, else `builtin_multilabel_issues`."""
    try:
        from cleanlab.multilabel_classification.filter import find_label_issues
    except ImportError:
        return builtin_multilabel_issues(y, probs)
    labels = [np.flatnonzero(row).tolist() for row in y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # n_jobs=1: cleanlab's default forks a multiprocessing.Pool from this threaded process
        # (see labels.confident_issues); one-vs-rest per label is small work anyway.
        found = find_label_issues(
            labels=labels, pred_probs=probs, return_indices_ranked_by="self_confidence", n_jobs=1
        )
    return np.asarray(found, dtype=np.int64)


def confident_flips(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(add, remove) boolean (N, K): confident learning's rule per label, one-vs-rest. A label is
    confidently on where its probability reaches the label's mean over its positives, confidently
    off where 1 - p reaches the mean of 1 - p over its negatives."""
    on = np.array([probs[y[:, j] == 1, j].mean() for j in range(y.shape[1])])
    off = np.array([(1 - probs[y[:, j] == 0, j]).mean() for j in range(y.shape[1])])
    add = (y == 0) & (probs >= on[None, :])
    remove = (y == 1) & (1 - probs >= off[None, :])
    return add, remove


def builtin_multilabel_issues(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows with a confidently wrong label (`confident_flips`), ranked by their least
    self-confident label (the probability of the given value), lowest first."""
    add, remove = confident_flips(y, probs)
    rows = np.flatnonzero((add | remove).any(axis=1))
    self_conf = np.where(y == 1, probs, 1 - probs).min(axis=1)
    return rows[np.argsort(self_conf[rows], kind="stable")]


def _issue_detail(
    y: np.ndarray, p: np.ndarray, add: np.ndarray, remove: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """What looks wrong in one flagged image: labels to add and to remove (the confident rule;
    else its least self-confident label), their probabilities, and that label's p_given."""
    self_conf = np.where(y == 1, p, 1 - p)
    worst = int(np.argmin(self_conf))
    if not add.any() and not remove.any():
        add, remove = add.copy(), remove.copy()
        (remove if y[worst] else add)[worst] = True
    changed = np.flatnonzero(add | remove)
    return {
        "add": [names[j] for j in np.flatnonzero(add)],
        "remove": [names[j] for j in np.flatnonzero(remove)],
        "p": {names[j]: round(float(p[j]), 4) for j in changed},
        "p_given": round(float(self_conf[worst]), 4),
    }
