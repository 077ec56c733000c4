"""Rules about how well the kept weights fit: `underfitting` and `classes_never_predicted`.

Both read the history and config (`RunFacts`) and, when the probes ran, what the selected
checkpoint does on un-augmented training images (`ProbeResults`). Without probes `underfitting`
falls back to the history's train accuracy (augmented batches) and says so in its evidence;
`classes_never_predicted` prefers `medfit eval`'s predictions_<split>.csv over the probe's.

Multi-label runs: the fit is a macro ROC-AUC, measured by the probes on un-augmented training
images (or read from eval_train.json), against the val macro AUC that selected the epoch; the
history's label-wise train accuracy is never used. Without a train-side AUC only "still learning
when it stopped" can be judged (from the val macro AUC and the train BCE). `classes_never_predicted`
does not apply (multilabel.NOT_APPLICABLE).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from medfit.config import DEFAULT_LR, TrainConfig
from medfit.data.augment import PRESETS
from medfit.data.task import resolve_task
from medfit.diagnose.findings import Finding
from medfit.diagnose.own.facts import ClassPredictions, RunFacts
from medfit.diagnose.own.history_rules import CHANCE_LOSS_FRACTION, binomial_sigma, val_sigma
from medfit.diagnose.own.multilabel import macro_auc_sigma
from medfit.diagnose.own.probe_rules import aug_drop_threshold
from medfit.diagnose.own.probes import ProbeResults
from medfit.rundir import EpochRow

# --- underfitting ------------------------------------------------------------------------------
# The first full epoch is warmup; a fit can only be judged once the full stage has had 3 epochs.
MIN_FIT_EPOCHS = 3
# A network that has fit its data scores clearly better on images it trained on than on new ones:
# the train-val gap must exceed 2 sigma of the difference, sqrt(sigma_train² + sigma_val²).
NO_GAP_SIGMAS = 2.0
# The history's train accuracy is on augmented batches, with dropout on, averaged over an epoch in
# which the weights moved: it understates the fit, so from it only "not above val at all" counts.
HISTORY_NO_GAP = 0.0
# "Barely above the majority-class rate": within 3 sigma of it (noise of the train measurement),
# and at least 5 points, since on large sets sigma shrinks to nothing.
CHANCE_SIGMAS = 3.0
CHANCE_MARGIN_MIN = 0.05
# Above 90% on its own training images a model has fit most of them: no gap then means an easy
# task or label noise, not a weak fit (bench/results_suite.json: blood cells, train 0.947 clean vs
# val 0.948, test 0.83).
FIT_MAX_ACC = 0.90
# Fewer full epochs than this is a cause of its own: on blood cells one more full epoch (0 head +
# 4 full vs 1 + 3) moved val accuracy 0.68 -> 0.72-0.79 (bench/README.md).
MIN_FULL_EPOCHS = 5
# The peak LR counts as a cause at a third of the default or 3x above it: the measured steps
# around 3e-3 (1e-3 and 1e-2) cost 9 and 28 points of val accuracy (bench/README.md).
LR_FACTOR = 3.0
# medfit's own threshold for a class-weighted loss (training/recipe.py resolve_balance): at or
# below it the class weights are all near 1 and change nothing.
IMBALANCED_RATIO = 1.5
# A preset is strong when it rotates by 90° or more, flips vertically or crops to 70% of the area.
STRONG_AUG_DEGREES = 90.0
STRONG_AUG_CROP = 0.7
# Label smoothing from 0.2 raises the loss floor and caps confidence; 0.1 is medfit's default.
SMOOTHING_HIGH = 0.2
# Dropout above timm's own 0.2 for EfficientNet-Lite0 (medfit's default).
DROPOUT_HIGH = 0.3

# Cause weights order the fix list, strongest first. Measured on blood cells (64 px, 1k train,
# 1 head + 3 full epochs, 0.68 val acc at the defaults; bench/README.md) where we have numbers.
W_BN_FROZEN = 3.0  # frozen BN: 0.45-0.50 at any LR
W_BN_SMALL_BATCH = 3.0  # BN train at batch 4: 0.24 val acc (planted faults, 800 images)
W_LR_HIGH = 3.0  # 1e-2: 0.40
W_LR_LOW = 2.0  # 1e-3: 0.59
W_FEW_EPOCHS = 2.0  # one more full epoch: +0.04-0.11
W_LAYER_DECAY = 1.5  # 0.95 / 0.9: 0.63 / 0.60
# Unmeasured alone: any rotation, vertical flips and a 70% crop make every batch a harder task.
W_STRONG_AUG = 2.0
W_AUG_PROBE = 1.5  # added when the augmentation probe saw the preset remove signal
# A weighted loss (or balanced sampling) trades accuracy on frequent classes for rare ones.
W_BALANCING = 1.5
# Added when train accuracy is below the majority-class rate, the weighting's signature: an
# unweighted model that learned little predicts the majority class and scores at least its rate.
W_BELOW_MAJORITY = 1.5
W_NORMALIZE = 1.0  # 1/255 inputs: 0.69 vs 0.70 (bench/README.md, planted faults)
W_SMOOTHING = 1.0
W_DROPOUT = 0.5
MAX_FIXES = 4  # the fix line names the strongest causes; `numbers["causes"]` has them all

# "Still learning when it stopped": the selected epoch is the last full one and the train loss
# fell by at least this fraction over the last two epochs. Then the fit is held back by the
# budget, not the config. Seen on knee grades at 128 px: Lite0, 6 full epochs, best epoch the
# last, train loss 1.19 -> 1.13, clean train accuracy 0.686 (bench/results/knee.json).
STILL_FALLING = 0.03
# ... and the train loss is still at least half the chance loss (ln k): a model that far from
# its training labels has room to fit them (knee: 0.70 ln 5). A low loss with a gap to val is
# fitting, not underfitting, and a larger model would widen the gap.
STILL_HIGH_LOSS = 0.5
W_STILL_LEARNING = 2.5  # unmeasured alone: the budget ended before the curve levelled off
W_CAPACITY = 2.0  # knee: 0.550 (Lite0, 1,500 images) -> 0.635 with all 5,778 (bench/README.md)
# Multi-label (macro AUC; an AUC spans 0.5 = chance to 1). A fit of 0.90 on its own training
# images has ranked most positives above the negatives of their label: no gap then is an easy
# task or label noise. "Barely learned": within 3 SE, and at least 0.05, of 0.5. "Still
# learning": besides the selected epoch being the last and the train BCE still falling 3%, the
# val macro AUC rose over the last two epochs by at least 1 SE of its noise (a best epoch at the
# end by a hair is noise, not a rising curve).
FIT_MAX_AUC = 0.90
CHANCE_AUC = 0.5
CHANCE_AUC_MARGIN = 0.05
STILL_RISING_SIGMAS = 1.0
LARGER_BACKBONE = {  # the offline next sizes (../shared/weights/README.md)
    "tf_efficientnet_lite0": "tf_efficientnet_lite1",
    "tf_efficientnet_lite1": "tf_efficientnet_lite2",
}

# --- classes never predicted -------------------------------------------------------------------
# "Almost never": under 2% of the predictions, for a class that is at least 5% of the images (and
# 5 images): a class that small cannot be judged, and one that size should get a share near 5%.
RARE_PREDICTED = 0.02
MIN_SUPPORT_SHARE = 0.05
MIN_SUPPORT = 5


@dataclass(frozen=True)
class TrainFit:
    """How well the kept weights fit the training images, and how that was measured."""

    acc: float
    images: int
    probed: bool  # True: un-augmented training images (probe); False: the history's train_acc
    # Multi-label: acc is a macro AUC with this SE; source names where it was measured.
    sigma: float | None = None
    source: str = ""


class Cause(NamedTuple):
    weight: float
    key: str
    what: str
    fix: str


def train_fit(facts: RunFacts, probes: ProbeResults | None) -> TrainFit | None:
    measured = probes.clean_accuracy() if probes else None
    if measured is not None:
        return TrainFit(measured[0], measured[1], probed=True)
    last = facts.full[-1] if facts.full else None
    if last is None or not math.isfinite(last.train_acc):
        return None
    return TrainFit(last.train_acc, sum(facts.train_counts.values()), probed=False)


def majority_rate(facts: RunFacts) -> float:
    """The accuracy of always predicting the largest training class."""
    counts = facts.train_counts
    total = sum(counts.values())
    return max(counts.values()) / total if total else 1 / max(len(facts.classes), 2)


def underfitting(facts: RunFacts, probes: ProbeResults | None = None) -> Finding | None:
    """The kept weights have not fit their training data: no gap to val, or barely above chance."""
    if facts.multilabel:
        return _underfitting_multilabel(facts, probes)
    full = facts.full
    fit = train_fit(facts, probes)
    if len(full) < MIN_FIT_EPOCHS or fit is None or not fit.acc < FIT_MAX_ACC:
        return None
    val = facts.selected if fit.probed else full[-1]  # the epoch the train accuracy belongs to
    sigma = math.hypot(
        binomial_sigma(fit.acc, fit.images), binomial_sigma(val.val_acc, facts.n_val)
    )
    gap_needed = NO_GAP_SIGMAS * sigma if fit.probed else HISTORY_NO_GAP
    gap = fit.acc - val.val_acc
    majority = majority_rate(facts)
    margin = max(CHANCE_MARGIN_MIN, CHANCE_SIGMAS * binomial_sigma(majority, fit.images))
    ln_k = math.log(max(len(facts.classes), 2))
    loss_ratio = full[-1].train_loss / ln_k
    if not math.isfinite(gap_needed):  # no val images to measure noise on
        gap_needed = HISTORY_NO_GAP
    signs = {
        "no_gap": gap <= gap_needed,
        "chance_accuracy": fit.acc < majority + margin,
        "chance_loss": loss_ratio >= CHANCE_LOSS_FRACTION,
        "still_learning": loss_ratio >= STILL_HIGH_LOSS and still_learning(facts),
    }
    fired = [k for k, v in signs.items() if v]
    if not fired:
        return None
    causes = underfit_causes(facts, fit, majority, probes, signs["still_learning"])
    near_chance = signs["chance_accuracy"] or signs["chance_loss"]
    return Finding(
        rule="underfitting",
        severity="high" if near_chance else "medium",
        title=(
            "underfitting: the model has barely learned its training images"
            if near_chance
            else "underfitting: no gap between training and validation accuracy"
            if signs["no_gap"]
            else "underfitting: still learning when training stopped (longer, or a larger model)"
        ),
        evidence=_underfit_evidence(facts, fit, val, gap, gap_needed, majority, loss_ratio),
        fix=_fix_line(causes),
        numbers={
            "signs": fired,
            "train_acc": fit.acc,
            "train_acc_source": "probe" if fit.probed else "history",
            "train_images": fit.images,
            "val_acc": val.val_acc,
            "gap": gap,
            "gap_needed": gap_needed,
            "majority_rate": majority,
            "train_loss": full[-1].train_loss,
            "ln_k": ln_k,
            "full_epochs": len(full),
            "causes": [c.key for c in causes],
        },
        strength=1.5 + 0.5 * len(fired),
    )


def train_auc(facts: RunFacts, probes: ProbeResults | None) -> TrainFit | None:
    """Multi-label: the kept weights' macro AUC on their training images, from the probes
    (un-augmented, BatchNorm in eval mode) or eval_train.json; None when neither measured it."""
    measured = probes.clean_auc() if probes else None
    if measured is not None:
        auc, images, sigma = measured
        return TrainFit(auc, images, True, sigma, f"{images} un-augmented training images (probe)")
    metrics = facts.evals.get("train", {})
    value = metrics.get("macro_auc")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    auc = float(value)
    rows = [v for v in (metrics.get("per_label") or {}).values() if isinstance(v, dict)]
    positives = [int(v.get("positives") or 0) for v in rows]
    images = int(rows[0].get("positives") or 0) + int(rows[0].get("negatives") or 0) if rows else 0
    images = images or len(facts.train_paths)
    sigma = macro_auc_sigma(auc, positives, images)
    return TrainFit(auc, images, True, sigma, f"{images} training images (eval_train.json)")


def _underfitting_multilabel(facts: RunFacts, probes: ProbeResults | None) -> Finding | None:
    """`underfitting` for sigmoid outputs: train macro AUC (when measured) against val macro AUC,
    and a val macro AUC still rising when the budget ended."""
    full = facts.full
    if len(full) < MIN_FIT_EPOCHS:
        return None
    fit = train_auc(facts, probes)
    val = facts.selected
    val_auc = facts.val_score(val)
    curve = [facts.val_score(e) for e in full]
    if not math.isfinite(val_auc) or not all(math.isfinite(a) for a in curve[-3:]):
        return None
    ceiling = fit.acc if fit is not None else max(curve)
    if not ceiling < FIT_MAX_AUC:
        return None  # fit most of its images (or val says so: train is rarely below it)
    sigma_val = val_sigma(facts, val_auc)
    rise = curve[-1] - curve[-3]
    learning = (
        still_learning(facts)
        and math.isfinite(sigma_val)
        and rise >= STILL_RISING_SIGMAS * sigma_val
    )
    signs = {"no_gap": False, "chance_auc": False, "still_learning": learning}
    gap = gap_needed = math.nan
    if fit is not None:
        sigma_fit = fit.sigma if fit.sigma is not None else math.nan
        sigma = math.hypot(sigma_fit, sigma_val)
        gap, gap_needed = fit.acc - val_auc, NO_GAP_SIGMAS * sigma
        margin = (
            max(CHANCE_AUC_MARGIN, CHANCE_SIGMAS * sigma_fit)
            if sigma_fit > 0
            else CHANCE_AUC_MARGIN
        )
        signs["no_gap"] = math.isfinite(gap_needed) and gap <= gap_needed
        signs["chance_auc"] = fit.acc < CHANCE_AUC + margin
    fired = [k for k, v in signs.items() if v]
    if not fired:
        return None
    causes = underfit_causes(facts, fit, 0.0, probes, learning)
    near_chance = signs["chance_auc"]
    return Finding(
        rule="underfitting",
        severity="high" if near_chance else "medium",
        title=(
            "underfitting: the model has barely learned its training images"
            if near_chance
            else "underfitting: no gap between training and validation macro AUC"
            if signs["no_gap"]
            else "underfitting: still learning when training stopped (longer, or a larger model)"
        ),
        evidence=_underfit_evidence_multilabel(facts, fit, val, gap, gap_needed, curve),
        fix=_fix_line(causes),
        numbers={
            "signs": fired,
            "train_macro_auc": fit.acc if fit else None,
            "train_macro_auc_source": fit.source if fit else None,
            "val_macro_auc": val_auc,
            "auc_sigma": sigma_val,
            "gap": gap,
            "gap_needed": gap_needed,
            "val_macro_auc_last3": curve[-3:],
            "train_loss": full[-1].train_loss,
            "full_epochs": len(full),
            "causes": [c.key for c in causes],
        },
        strength=1.5 + 0.5 * len(fired),
    )


def _underfit_evidence_multilabel(
    facts: RunFacts,
    fit: TrainFit | None,
    val: EpochRow,
    gap: float,
    gap_needed: float,
    curve: list[float],
) -> str:
    full = facts.full
    if fit is not None:
        measured = (
            f"train macro AUC {fit.acc:.3f} on {fit.source} vs val macro AUC "
            f"{facts.val_score(val):.3f} at epoch {val.epoch} (gap {gap:+.3f}; 2 SE = "
            f"{gap_needed:.3f})"
        )
    else:
        measured = (
            f"val macro AUC {facts.val_score(val):.3f} at epoch {val.epoch}; no train-side AUC "
            "(the history's train accuracy is label-wise at p = 0.5: the probes measure the fit)"
        )
    return (
        f"{measured}; val macro AUC "
        + " -> ".join(f"{a:.3f}" for a in curve[-3:])
        + f" over the last 3 full epochs, best epoch {facts.best_epoch}; train BCE "
        f"{full[-3].train_loss:.3f} -> {full[-1].train_loss:.3f} after {len(full)} full epochs"
    )


def _underfit_evidence(
    facts: RunFacts,
    fit: TrainFit,
    val: EpochRow,
    gap: float,
    gap_needed: float,
    majority: float,
    loss_ratio: float,
) -> str:
    k, last = len(facts.classes), facts.full[-1]
    if fit.probed:
        measured = f"train accuracy {fit.acc:.3f} on {fit.images} un-augmented training images"
        needed = f"2 sigma = {gap_needed:.3f}"
    else:
        measured = (
            f"train accuracy {fit.acc:.3f} (history: augmented batches, dropout on, an epoch "
            "mean: it understates the fit; the probes measure it on clean images)"
        )
        needed = "not above val at all"
    return (
        f"{measured} vs val accuracy {val.val_acc:.3f} at epoch {val.epoch} (gap {gap:+.3f}; "
        f"{needed}); majority-class rate {majority:.3f} ({k} classes); train loss "
        f"{last.train_loss:.3f} = {loss_ratio:.2f} ln {k} after {len(facts.full)} full epochs"
    )


def still_learning(facts: RunFacts) -> bool:
    """The selected weights are the last full epoch's and the train loss was still falling."""
    full = facts.full
    if len(full) < MIN_FIT_EPOCHS or facts.best_epoch != full[-1].epoch:
        return False
    before, last = full[-3].train_loss, full[-1].train_loss
    return math.isfinite(before) and last <= (1 - STILL_FALLING) * before


def underfit_causes(
    facts: RunFacts,
    fit: TrainFit | None,
    majority: float,
    probes: ProbeResults | None = None,
    learning: bool = False,
) -> list[Cause]:
    """What in this run's config (or its budget, when it was still learning) holds the fit
    back, strongest first."""
    found = [
        _bn_cause(facts),
        _lr_cause(facts),
        None if facts.multilabel or fit is None else _balancing_cause(facts, fit, majority),
        _aug_cause(facts, probes),
        *(_budget_causes(facts) if learning else [_epochs_cause(facts)]),
        _layer_decay_cause(facts),
        _normalize_cause(facts),
        _smoothing_cause(facts),
        _dropout_cause(facts),
    ]
    return sorted((c for c in found if c), key=lambda c: -c.weight)


def _fix_line(causes: list[Cause]) -> str:
    if not causes:
        return (
            "nothing in the config holds the fit back: more full epochs (`--epochs 20`), a "
            "larger input if the images have the detail, or a larger backbone (`--model`)"
        )
    return "; ".join(f"`{c.fix}` ({c.what})" for c in causes[:MAX_FIXES])


def _bn_cause(facts: RunFacts) -> Cause | None:
    t = facts.config.train
    if t.bn == "train" and t.batch_size < t.bn_min_batch:
        what = f"BatchNorm trains on batch statistics of only {t.batch_size} images"
        fix = f"--bn frozen --lr {DEFAULT_LR['frozen']:g}"
        return Cause(W_BN_SMALL_BATCH, "bn_small_batch", what, fix)
    if t.bn != "frozen":
        return None
    batch = "" if t.batch_size >= t.bn_min_batch else f"--batch-size {t.bn_min_batch} "
    return Cause(
        W_BN_FROZEN,
        "bn_frozen",
        "frozen BatchNorm keeps ImageNet statistics the medical images do not have",
        f"{batch}--bn train --lr {DEFAULT_LR['train']:g}",
    )


def _peak_lr(facts: RunFacts) -> float:
    lr = facts.config.train.lr
    return float(lr) if isinstance(lr, float) else max((e.lr for e in facts.full), default=math.nan)


def _lr_cause(facts: RunFacts) -> Cause | None:
    default = DEFAULT_LR.get(facts.config.train.bn)
    lr = _peak_lr(facts)
    if default is None or not math.isfinite(lr):
        return None
    # Each further decade off the default adds a unit: 1e-5 (300x too low) outranks a balanced
    # loss, which a model that learns nothing cannot be blamed on first.
    decades = abs(math.log10(lr / default)) if lr > 0 else 3.0
    if lr < default / LR_FACTOR:
        what = f"peak LR {lr:g} is under a third of the default {default:g}"
        return Cause(W_LR_LOW + max(decades - 1, 0), "lr_low", what, f"--lr {default:g}")
    if lr >= default * LR_FACTOR:
        what = f"peak LR {lr:g} is 3x or more the default {default:g}"
        return Cause(W_LR_HIGH + max(decades - 1, 0), "lr_high", what, f"--lr {default:g}")
    return None


def imbalance_ratio(facts: RunFacts) -> float:
    counts = [n for n in facts.train_counts.values() if n]
    return max(counts) / min(counts) if counts else 1.0


def _balancing_cause(facts: RunFacts, fit: TrainFit, majority: float) -> Cause | None:
    balance, ratio = facts.config.train.balance, imbalance_ratio(facts)
    if balance not in ("loss", "sqrt", "sampler") or ratio <= IMBALANCED_RATIO:
        return None
    below = fit.acc < majority
    how = {
        "loss": "class-weighted loss",
        "sqrt": "square-root class-weighted loss",
        "sampler": "class-balanced sampling",
    }[balance]
    what = f"{how} on {ratio:.1f}:1 classes"
    if below:
        what += f", and train accuracy is below the majority-class rate {majority:.3f}"
    return Cause(
        W_BALANCING + (W_BELOW_MAJORITY if below else 0.0), "balancing", what, "--balance none"
    )


def _aug_cause(facts: RunFacts, probes: ProbeResults | None) -> Cause | None:
    preset = PRESETS.get(facts.config.data.aug)
    if preset is None:
        return None
    parts = [f"rotations to ±{preset.degrees:g}°"] if preset.degrees >= STRONG_AUG_DEGREES else []
    parts += ["vertical flips"] if preset.vflip else []
    parts += [f"crops to {preset.crop:.0%} of the area"] if preset.crop <= STRONG_AUG_CROP else []
    if not parts:
        return None
    aug = probes.aug if probes else None
    drop = aug.acc_clean - aug.acc_augmented if aug else 0.0
    removes = aug is not None and drop >= aug_drop_threshold(aug)
    what = f"strong augmentation `{facts.config.data.aug}`: {', '.join(parts)}"
    if removes:
        what += f"; augmented training images score {drop:.3f} lower than clean ones"
    weight = W_STRONG_AUG + (W_AUG_PROBE if removes else 0.0)
    return Cause(weight, "strong_augmentation", what, "--aug light")


def _epochs_cause(facts: RunFacts) -> Cause | None:
    n = len(facts.full)
    if n >= MIN_FULL_EPOCHS:
        return None
    epochs = max(2 * n, TrainConfig().epochs)
    return Cause(W_FEW_EPOCHS, "few_epochs", f"only {n} full epochs", f"--epochs {epochs}")


def _budget_causes(facts: RunFacts) -> list[Cause]:
    """Longer training and a larger backbone, for a run stopped while still learning."""
    n, last = len(facts.full), facts.full[-1]
    loss = f"best epoch {last.epoch} was the last; train loss still falling ({last.train_loss:.3f})"
    if facts.multilabel:
        loss += f" and val macro AUC still rising ({facts.val_score(last):.3f})"
    causes = [Cause(W_STILL_LEARNING, "still_learning", loss, f"--epochs {2 * n}")]
    name = facts.config.model.name
    larger = LARGER_BACKBONE.get(name)
    fix = f"--model {larger}" if larger else "--model <a larger backbone>"
    causes.append(Cause(W_CAPACITY, "capacity", f"{name} has not fit its training images", fix))
    return causes


def _layer_decay_cause(facts: RunFacts) -> Cause | None:
    decay = facts.config.train.layer_decay
    if decay >= 1.0:
        return None
    what = f"layer decay {decay:g} slows the early layers the medical images need to adapt"
    return Cause(W_LAYER_DECAY, "layer_decay", what, "--layer-decay 1.0")


def _normalize_cause(facts: RunFacts) -> Cause | None:
    if facts.config.model.normalize == "weights":
        return None
    what = "inputs not normalised as the weights expect"
    return Cause(W_NORMALIZE, "normalize", what, "--normalize weights")


def _smoothing_cause(facts: RunFacts) -> Cause | None:
    eps = facts.config.train.label_smoothing or 0.0
    if eps < SMOOTHING_HIGH:
        return None
    what = f"label smoothing {eps:g} caps the confidence the loss asks for"
    return Cause(W_SMOOTHING, "label_smoothing", what, "--label-smoothing 0.1")


def _dropout_cause(facts: RunFacts) -> Cause | None:
    rate = facts.config.model.drop_rate
    if rate < DROPOUT_HIGH:
        return None
    return Cause(W_DROPOUT, "dropout", f"dropout {rate:g} before the classifier", "--drop-rate 0.2")


# --- classes never predicted -------------------------------------------------------------------


def class_predictions(facts: RunFacts, probes: ProbeResults | None) -> ClassPredictions | None:
    """eval's predictions_<split>.csv when present, else the probe's pass over training images."""
    if facts.predictions is not None:
        return facts.predictions
    fit = probes.fit if probes else None
    if fit is None or len(fit.support) != len(facts.classes):
        return None
    return ClassPredictions(
        f"{fit.images} un-augmented training images (probe)",
        list(facts.classes),
        list(fit.support),
        list(fit.predicted),
        list(fit.correct),
    )


def classes_never_predicted(
    facts: RunFacts, probes: ProbeResults | None = None, underfit: Finding | None = None
) -> Finding | None:
    """Classes with a real share of the images that the kept weights (almost) never predict."""
    if facts.multilabel:
        return None  # argmax counts per class (multilabel.NOT_APPLICABLE)
    preds = class_predictions(facts, probes)
    if preds is None or preds.images == 0:
        return None
    n = preds.images
    missed = [
        i
        for i, (support, predicted) in enumerate(zip(preds.support, preds.predicted, strict=True))
        if support >= max(MIN_SUPPORT, MIN_SUPPORT_SHARE * n) and predicted < RARE_PREDICTED * n
    ]
    if not missed:
        return None
    never = [i for i in missed if preds.predicted[i] == 0]
    how = "(almost) never" if never else "almost never"
    how = "never" if len(never) == len(missed) else how
    names = [preds.classes[i] for i in missed]
    share = sum(preds.support[i] for i in missed) / n
    return Finding(
        rule="classes_never_predicted",
        severity="high" if never else "medium",
        title=f"the model {how} predicts {', '.join(names)}",
        evidence=_missed_evidence(preds, missed),
        fix=_missed_fix(facts, names, underfit),
        numbers={
            "source": preds.source,
            "images": n,
            "classes": names,
            "support": {preds.classes[i]: preds.support[i] for i in missed},
            "predicted": dict(zip(preds.classes, preds.predicted, strict=True)),
            "recall": {preds.classes[i]: _recall(preds, i) for i in missed},
            "missed_share": share,
        },
        strength=1.0 + share,
    )


def _recall(preds: ClassPredictions, i: int) -> float:
    return preds.correct[i] / preds.support[i] if preds.support[i] else math.nan


def _missed_evidence(preds: ClassPredictions, missed: list[int]) -> str:
    n = preds.images
    per_class = "; ".join(
        f"{preds.classes[i]}: {preds.support[i]} images ({preds.support[i] / n:.0%}), predicted "
        f"{preds.predicted[i]} times, recall {_recall(preds, i):.2f}"
        for i in missed
    )
    spread = ", ".join(f"{c} {p}" for c, p in zip(preds.classes, preds.predicted, strict=True))
    return f"{preds.source}, {n} images: {per_class}; predictions per class: {spread}"


def _missed_fix(facts: RunFacts, names: list[str], underfit: Finding | None) -> str:
    """The changes that bring the missed classes back, in the order the config suggests them."""
    t, fixes = facts.config.train, []
    ratio = imbalance_ratio(facts)
    if t.balance == "none" and ratio > IMBALANCED_RATIO:
        fixes.append(
            f"`--balance sqrt` or `--balance loss` (train classes {ratio:.1f}:1 with no "
            "balancing: the rare ones are outvoted)"
        )
    if underfit is not None:
        options = ", ".join(re.findall(r"`[^`]+`", underfit.fix)) or underfit.fix
        fixes.append(f"the model is underfit, so its fixes first (`underfitting`): {options}")
    if resolve_task(getattr(facts.config.data, "task", "auto"), facts.classes) == "ordinal":
        fixes.append(_ordinal_fix(facts, names))
    if t.select_metric == "accuracy" and ratio > IMBALANCED_RATIO:
        fixes.append("`--select-metric balanced_accuracy` (accuracy rewards ignoring a class)")
    if not fixes:
        fixes.append(
            f"more full epochs (`--epochs {max(2 * len(facts.full), TrainConfig().epochs)}`); "
            "look at the missed classes' images (`medfit check` flags label noise)"
        )
    return "; ".join(fixes)


def _ordinal_fix(facts: RunFacts, names: list[str]) -> str:
    """Middle grades differ from their neighbours in fine detail: more epochs and more pixels."""
    epochs = max(2 * len(facts.full), TrainConfig().epochs)
    size, src = facts.preprocess.img_size, facts.source_size
    target = min(src, facts.native_size or src) if src is not None else None
    if src is not None and target is not None and target > size:
        pixels = f"`--img-size {target}` (the images are {src} px)"
    elif src is not None:
        pixels = f"no more resolution: the images are {src} px, already under the {size} px input"
    else:
        pixels = f"a larger `--img-size` if the images have more than {size} px"
    return (
        f"ordinal grades ({', '.join(names)} differ from their neighbours in fine detail): "
        f"`--epochs {epochs}`; {pixels}"
    )


def fit_findings(facts: RunFacts, probes: ProbeResults | None = None) -> list[Finding]:
    """The fit rules on one run; `probes` None (or skipped) falls back to the history."""
    underfit = underfitting(facts, probes)
    missed = classes_never_predicted(facts, probes, underfit)
    return [f for f in (underfit, missed) if f is not None]
