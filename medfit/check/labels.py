"""Label issues: images whose label disagrees with what the rest of the data says they are.

A quick model on frozen features (backbone embeddings, or thumbnail features with
`--features thumbnail`): standardise, PCA to at most 128 dimensions, multinomial logistic
regression (fitted in torch, on the GPU when there is one). Every image gets out-of-fold class
probabilities (5 folds; grouped by patient when ids are known, so a patient's other images cannot
vouch for a wrong label). Confident learning then picks the images whose given label is unlikely
(cleanlab's `find_label_issues` when installed: the maintained implementation,
`pip install "medfit[check]"`; else the same rule built in: an image is an issue when another
class clears that class's average self-confidence and beats the given one). They are ranked by
the probability of the given label, lowest first.

The probe is weak on purpose (seconds, not a training run), so its verdict is only as good as the
probe: its out-of-fold balanced accuracy comes with a 95% interval (normal approximation per class:
sqrt(sum_c r_c (1 - r_c) / n_c) / K for class recalls r_c over n_c images), and unless the lower
end clears chance by MIN_LIFT the images are not listed at all (`judged` false, `reason` says
why): a probe that cannot tell the classes apart flags its own errors, not wrong labels.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from medfit.check.context import Context

FOLDS = 5
MAX_DIMS = 128
C_L2 = 0.5  # inverse L2 strength, as sklearn's C
FIT_ROWS = 20_000  # rows the standardise + PCA step is fitted on
MIN_PER_CLASS = 5  # fewer images in a class than this: no label-issue check
# Lift over chance that the probe's balanced accuracy must clear at the lower end of its 95%
# interval before its disagreements are shown as label issues (the verdict's bar for a probe).
MIN_LIFT = 0.15


def _features(ctx: Context) -> tuple[np.ndarray | None, str]:
    if ctx.scan.embeddings is not None:
        return ctx.scan.embeddings, "backbone embeddings"  # float16; cast in chunks
    if ctx.options.features == "thumbnail":
        return ctx.scan.features, "thumbnail features (8x8 gray + colour statistics)"
    return None, ""


def reduce(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """Standardise + PCA to `dims`, fitted on at most FIT_ROWS rows and applied in chunks.

    Unsupervised, so fitting it on every fold's images leaks no label; memory stays at
    FIT_ROWS x D floats plus the N x dims result, whatever N is.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(len(x), min(len(x), FIT_ROWS), replace=False)
    steps: list[Any] = [StandardScaler()]
    if dims < x.shape[1]:  # thumbnail features (70) are kept whole
        steps.append(PCA(dims, svd_solver="randomized", random_state=seed))
    model = make_pipeline(*steps).fit(np.asarray(x[fit_rows], dtype=np.float32))
    chunks = [
        model.transform(np.asarray(x[i : i + 8192], dtype=np.float32))
        for i in range(0, len(x), 8192)
    ]
    return np.concatenate(chunks).astype(np.float32)


def out_of_fold_probs(
    x: np.ndarray,
    y: np.ndarray,
    groups: list[str | None] | None,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """(N, K) out-of-fold probabilities: standardise -> PCA -> logistic regression."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    counts = np.bincount(y)
    folds = max(2, min(FOLDS, int(counts[counts > 0].min())))
    dims = min(MAX_DIMS, x.shape[1], len(y) // 2)
    z = reduce(x, dims, seed)
    cv: Any = StratifiedKFold(folds, shuffle=True, random_state=seed)
    group_ids = None
    if groups is not None and all(g is not None for g in groups) and len(set(groups)) >= folds:
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        group_ids = np.array(groups)
    k = int(y.max()) + 1
    probs = np.zeros((len(y), k), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has only n members"
        for train, test in cv.split(z, y, group_ids):
            probs[test] = softmax_regression(z[train], y[train], z[test], k, device)
    return probs


def _one_blas_thread() -> Any:
    """BLAS limited to one thread: these products are small (<= 128 columns), and a spinning
    OpenBLAS pool on a busy machine made the probe 50x slower (14 s vs 0.3 s, 12k x 70)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def softmax_regression(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int, device: str
) -> np.ndarray:
    """Test-set probabilities of a multinomial logistic regression (L2, sklearn's C = C_L2).

    sklearn's lbfgs on a CPU; the same model in torch on a GPU, where 200,000 x 128 features fit
    in seconds (on a busy CPU, torch's thread pool makes small fits slower than sklearn).
    """
    if device.startswith("cuda"):
        return torch_softmax_regression(x_train, y_train, x_test, k, device)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C_L2, max_iter=500).fit(x_train, y_train)
    probs = np.zeros((len(x_test), k), dtype=np.float64)
    probs[:, model.classes_] = model.predict_proba(x_test)
    return probs


def torch_softmax_regression(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int, device: str
) -> np.ndarray:
    """`softmax_regression` as full-batch L-BFGS in torch (one matrix product per step)."""
    import torch

    torch.manual_seed(0)
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.int64)).to(device)
    weight = torch.zeros((xt.shape[1], k), device=device, requires_grad=True)
    bias = torch.zeros(k, device=device, requires_grad=True)
    l2 = 1.0 / (C_L2 * len(yt))  # sklearn: C * sum(loss) + ||W||^2 / 2, here divided by C * N
    if k == 2:  # sklearn fits one sigmoid w = w1 - w0; with w0 = -w1, ||W||^2 = ||w||^2 / 2
        l2 *= 2.0
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=200,
        history_size=10,
        tolerance_grad=1e-5,  # a probe: 4 significant digits of probability are plenty
        tolerance_change=1e-7,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ weight + bias, yt)
        loss = loss + 0.5 * l2 * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        xs = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)).to(device)
        return torch.softmax(xs @ weight + bias, dim=1).cpu().numpy().astype(np.float64)


def confident_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, str]:
    """Indices of likely label errors, most likely first, and which implementation found them."""
    try:
        from cleanlab import __version__ as version
        from cleanlab.filter import find_label_issues
    except ImportError:
        return builtin_confident_issues(labels, probs), "confident learning (built in)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # n_jobs=1: cleanlab's default forks a multiprocessing.Pool from this process, which
        # runs torch's threads; a fork copies none of them and a child can block forever on a
        # lock one held (it hung `medfit check` in CI). The matrices here are small.
        found = find_label_issues(
            labels=labels, pred_probs=probs, return_indices_ranked_by="self_confidence", n_jobs=1
        )
    return np.asarray(found, dtype=np.int64), f"cleanlab {version} find_label_issues"


def builtin_confident_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Confident learning's core rule (Northcutt et al. 2021), ranked by self-confidence."""
    k = probs.shape[1]
    thresholds = np.array(
        [probs[labels == j, j].mean() if np.any(labels == j) else 1.0 for j in range(k)]
    )
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -1.0)
    confident = masked.argmax(axis=1)
    issue = above.any(axis=1) & (confident != labels)
    rows = np.flatnonzero(issue)
    return rows[np.argsort(probs[rows, labels[rows]], kind="stable")]


def balanced_accuracy_ci(
    y: np.ndarray, predicted: np.ndarray, k: int
) -> tuple[float, tuple[float, float]]:
    """Mean recall over the k classes and its 95% normal-approximation interval, clipped to
    [0, 1] (every class has at least MIN_PER_CLASS images here)."""
    recalls = np.array([np.mean(predicted[y == c] == c) for c in range(k)])
    sizes = np.array([np.sum(y == c) for c in range(k)])
    balanced = float(recalls.mean())
    half = 1.96 * float(np.sqrt(np.sum(recalls * (1 - recalls) / sizes))) / k
    return balanced, (max(0.0, balanced - half), min(1.0, balanced + half))


def label_issues(ctx: Context) -> dict[str, Any]:
    """The likely mislabeled images, with the probe's quality alongside."""
    x, source = _features(ctx)
    if x is None:
        return {"checked": False, "reason": "no features (--features none)"}
    rows = ctx.readable()
    y_all = ctx.labels[rows]
    present = np.unique(y_all)
    counts = np.bincount(y_all)
    if len(present) < 2 or counts[present].min() < MIN_PER_CLASS:
        reason = f"needs at least {MIN_PER_CLASS} readable images in each of 2+ classes"
        return {"checked": False, "reason": reason}
    # Labels re-indexed to 0..K'-1 over the classes present (cleanlab needs every class seen).
    y = np.searchsorted(present, y_all)
    groups = [ctx.groups[r] for r in rows]
    from medfit.check.embed import resolve_device

    device = resolve_device(ctx.options.device)
    with _one_blas_thread():
        probs = out_of_fold_probs(x[rows], y, groups, ctx.options.seed, device)
    found, method = confident_issues(y, probs)
    predicted = probs.argmax(axis=1)
    accuracy = float(np.mean(predicted == y))
    balanced, ci = balanced_accuracy_ci(y, predicted, len(present))
    chance = 1.0 / len(present)
    probe = {
        "features": source,
        "method": method,
        "probe_accuracy": round(accuracy, 4),
        "probe_balanced_accuracy": round(balanced, 4),
        "probe_ci95": [round(ci[0], 4), round(ci[1], 4)],
        "chance": round(chance, 4),
    }
    if ci[0] < chance + MIN_LIFT:
        stronger = "a larger --embed-size or more images"
        if ctx.scan.embeddings is None:
            stronger = "--features backbone, or more images"
        reason = (
            f"cannot be judged: the probe's balanced accuracy is {balanced:.2f} (95% CI "
            f"{ci[0]:.2f}-{ci[1]:.2f}) against chance {chance:.2f}; its {len(found)} "
            f"disagreement(s) would be its own errors, not wrong labels (needs the CI above "
            f"{chance + MIN_LIFT:.2f}: {stronger})"
        )
        return {"checked": False, "judged": False, "reason": reason, **probe}
    issues = []
    for i in found[: ctx.options.max_label_issues]:
        ref = ctx.ref(int(rows[i]))
        suggested = int(np.argmax(probs[i]))
        ref.update(
            suggested=ctx.classes[int(present[suggested])],
            p_given=round(float(probs[i, y[i]]), 4),
            p_suggested=round(float(probs[i, suggested]), 4),
        )
        issues.append(ref)
    return judged_issues(probe, len(found), len(rows), issues)


def judged_issues(
    probe: dict[str, Any], n_found: int, n_rows: int, issues: list[dict[str, Any]]
) -> dict[str, Any]:
    """The label-issues section when the probe was good enough to judge (single- or
    multi-label): the probe's numbers, how many images were flagged, and the issues listed."""
    return {
        "checked": True,
        "judged": True,
        **probe,
        "issues_total": n_found,
        "issue_rate": round(n_found / n_rows, 4),
        "issues": issues,
    }
