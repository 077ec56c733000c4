"""Multi-label runs (sigmoid outputs, several findings per image): the noise of a macro ROC-AUC,
the rules that only multi-label runs have, and the single-label rules that do not apply to them.

What changes for a multi-label run. The selection metric is the val macro ROC-AUC (the mean over
the labels with a positive and a negative in val); the history's train_acc/val_acc are label-wise
accuracies at p = 0.5 (share of correct image-label pairs), which sparse labels push towards 0.9
for any model, so no rule reads them. The rules read the val macro AUC and the losses instead, and
weigh AUC changes against the AUC's own noise:

Noise of an AUC (Hanley & McNeil 1982): for one label with n1 positives and n2 negatives and AUC A,
    SE² = (A(1-A) + (n1-1)(Q1 - A²) + (n2-1)(Q2 - A²)) / (n1 n2),  Q1 = A/(2-A), Q2 = 2A²/(1+A).
A macro mean of L labels, taking their errors as independent, has SE = sqrt(sum SE_l²) / L. The
per-label AUCs of an epoch are not logged, so every label is taken at the macro value: at 200 val
images a label with 5 positives has SE 0.13 at A = 0.65, one with 40 has 0.05, so the rare labels
carry most of the macro AUC's noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medfit.diagnose.findings import Finding
from medfit.diagnose.own.facts import RunFacts

# Positives a label needs in val before its AUC means much: `medfit eval` averages only labels
# with 10 (evaluate/multilabel.py MIN_POSITIVES) and `medfit check` flags fewer (check/multilabel.py
# MIN_EVAL_POSITIVES). With 5 positives one image moves the label's AUC by up to 0.2.
MIN_VAL_POSITIVES = 10
# The rare labels are a nuisance worth a medium finding when they carry half or more of the
# selection metric's noise variance: then most of what moves the val macro AUC between epochs
# is a handful of images, and the epoch kept is chosen by them.
RARE_NOISE_SHARE = 0.5

# Single-label rules that have no multi-label meaning, with the reason (kept in diagnosis.json).
NOT_APPLICABLE = {
    "class_imbalance": (
        "it compares accuracy with balanced accuracy; on a multi-label run both are label-wise at "
        "p = 0.5, where sparse labels make any model look accurate (rare labels are judged by "
        "rare_val_labels, each label's AUC by `medfit eval`)"
    ),
    "classes_never_predicted": (
        "it counts argmax predictions per class; a multi-label model calls each label at its own "
        "threshold (thresholds.json), and `medfit eval` reports each label's sensitivity there"
    ),
}


def auc_se(auc: float, positives: int, negatives: int) -> float:
    """Hanley-McNeil standard error of an AUC measured on `positives` and `negatives` images."""
    if positives < 1 or negatives < 1 or not math.isfinite(auc):
        return math.nan
    a = min(max(auc, 0.0), 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)
    return math.sqrt(max(var, 0.0) / (positives * negatives))


def macro_auc_sigma(auc: float, positives: Sequence[int], images: int) -> float:
    """Standard error of a macro AUC over the labels with a positive and a negative among
    `images` (each label taken at the macro value `auc`); NaN when no label is measurable."""
    ses = [auc_se(auc, p, images - p) for p in positives if 0 < p < images]
    if not ses or not all(math.isfinite(s) for s in ses):
        return math.nan
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


def val_auc_sigma(facts: RunFacts, auc: float) -> float:
    """The noise of this run's val macro AUC at `auc` (val positives per label, val images)."""
    return macro_auc_sigma(auc, list(facts.val_counts.values()), facts.n_val)


def rare_val_labels(facts: RunFacts) -> Finding | None:
    """Labels with too few val positives to steer selection: the val macro AUC that picks the
    kept epoch is mostly their noise (or, for a label with none, ignores it)."""
    if not facts.multilabel or facts.n_val <= 0 or not facts.history:
        return None
    n, counts = facts.n_val, facts.val_counts
    absent = [c for c, p in counts.items() if p == 0]
    rare = [c for c, p in counts.items() if 0 < p < MIN_VAL_POSITIVES and p < n]
    if not rare and not absent:
        return None
    scores = [s for s in (facts.val_score(e) for e in facts.history) if math.isfinite(s)]
    auc = facts.val_score(facts.selected)
    auc = auc if math.isfinite(auc) else (scores[-1] if scores else 0.5)
    measured = [c for c, p in counts.items() if 0 < p < n]
    var = {c: auc_se(auc, counts[c], n - counts[c]) ** 2 for c in measured}
    total = sum(var.values())
    share = sum(var[c] for c in rare) / total if total > 0 else 0.0
    sigma = math.sqrt(total) / len(measured) if measured else math.nan
    steady = [c for c in measured if c not in rare]
    sigma_steady = macro_auc_sigma(auc, [counts[c] for c in steady], n)
    parts = []
    if rare:
        listed = ", ".join(f"{c} {counts[c]}" for c in sorted(rare, key=counts.__getitem__))
        parts.append(
            f"{len(rare)} of the {len(measured)} labels the val macro AUC averages have fewer "
            f"than {MIN_VAL_POSITIVES} positives among {n} val images ({listed}) and carry "
            f"{share:.0%} of its noise variance"
        )
    if absent:
        parts.append(
            f"{', '.join(absent)} "
            + (
                "has no positive in val, so selection never looks at it"
                if len(absent) == 1
                else "have no positive in val, so selection never looks at them"
            )
        )
    parts.append(_noise_vs_moves(facts, sigma, sigma_steady, auc))
    check = _check_rare_title(facts)
    if check:
        parts.append(f"medfit check says the same: {check}")
    return Finding(
        rule="rare_val_labels",
        severity="medium" if rare and share >= RARE_NOISE_SHARE else "low",
        title=(
            f"{len(rare) + len(absent)} label(s) are too rare in val to steer the macro-AUC "
            "selection"
        ),
        evidence="; ".join(parts),
        fix=(
            f"give val at least {MIN_VAL_POSITIVES} positives of each label: move whole patients "
            "from train to val (the manifest's split column, or a larger `--val-fraction` when "
            "medfit splits val off train), or merge rare findings into broader labels; "
            f"`medfit check {facts.config.data.root or 'DATA'}` lists the rare labels per split; "
            "meanwhile judge the run by `medfit eval`'s macro AUC over labels with "
            f"{MIN_VAL_POSITIVES}+ positives and its 95% CI"
        ),
        numbers={
            "val_images": n,
            "rare": {c: counts[c] for c in rare},
            "absent": absent,
            "measured_labels": len(measured),
            "rare_noise_share": share,
            "val_macro_auc": auc,
            "auc_sigma": sigma,
            "auc_sigma_without_rare": sigma_steady,
        },
        strength=1.0 + share,
    )


def _noise_vs_moves(facts: RunFacts, sigma: float, sigma_steady: float, auc: float) -> str:
    """How the selection metric's noise compares with what it moved in the full stage."""
    noise = f"the val macro AUC's noise is ±{sigma:.3f} (1 SE at {auc:.3f}, Hanley-McNeil)"
    if math.isfinite(sigma_steady):
        noise += f", ±{sigma_steady:.3f} over the other labels alone"
    full = [s for s in (facts.val_score(e) for e in facts.full) if math.isfinite(s)]
    if len(full) < 2 or not sigma > 0:
        return noise
    lo, hi = min(full), max(full)
    moved = (
        f"over the {len(full)} full epochs it ranged {lo:.3f}-{hi:.3f} ({(hi - lo) / sigma:.1f} SE)"
    )
    if hi - lo < 2 * sigma:
        moved += ", so which epoch was kept rests on differences under twice that noise"
    return f"{noise}; {moved}"


def _check_rare_title(facts: RunFacts) -> str | None:
    """check.json's own rare-label entry (its title), which this finding replaces."""
    for entry in (facts.check or {}).get("verdict", []):
        if entry.get("key") == "rare_labels":
            return str(entry.get("title", ""))
    return None
