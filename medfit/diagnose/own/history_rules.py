"""Rules over a run's history and config: each a pure function `RunFacts -> Finding | None`.

Every threshold is a named constant with the reason for its value. Thresholds that compare
accuracies are stated in units of the binomial noise of the validation set,
sigma = sqrt(p(1-p)/n_val): on 400 val images at p = 0.7 that is 0.023, so a 3-point change is
barely above noise while on 5,000 images it is far above it. `run_rules` applies them all and
adds check.json's findings (diagnose/check_rules.py).

Multi-label runs (`facts.multilabel`) are read on their val macro ROC-AUC (`facts.val_score`) and
their losses, never on the label-wise accuracies of their history; AUC changes are weighed in
units of the AUC's own noise (Hanley-McNeil, own/multilabel.py) instead of the binomial sigma.
Rules with no multi-label meaning (multilabel.NOT_APPLICABLE) return None for them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from medfit.config import default_lr
from medfit.data.augment import PRESETS
from medfit.diagnose.check_rules import check_findings, check_missing
from medfit.diagnose.findings import Finding
from medfit.diagnose.own.facts import RunFacts
from medfit.diagnose.own.multilabel import NOT_APPLICABLE, rare_val_labels, val_auc_sigma
from medfit.rundir import EpochRow

Rule = Callable[[RunFacts], Finding | None]

# --- overfitting -------------------------------------------------------------------------------
# A trend needs a minimum and at least one epoch after it; fewer full epochs say nothing.
MIN_TREND_EPOCHS = 3
# Val loss 10% above its minimum: an epoch-mean loss over hundreds of images moves a few percent
# from noise; 10% is a rise, 25% a clear one.
VAL_LOSS_RISE = 0.10
VAL_LOSS_RISE_HIGH = 0.25
# Train loss must still be falling (>= 5% lower than at the val-loss minimum): otherwise the val
# rise is not the model fitting the training set but something else (LR, instability).
TRAIN_LOSS_FALL = 0.05
# The train-val accuracy gap must have grown by 3 points and 2 sigma; at the end a gap of 15
# points on un-noisy data is the textbook picture (train_acc is on augmented batches, so the
# true gap is larger than the one measured).
GAP_GROWTH = 0.03
GAP_HIGH = 0.15
# Multi-label: no train-side score is logged per epoch (train_acc is label-wise at p = 0.5), so
# the widening gap is read on val: the val macro AUC must have fallen from its full-stage peak by
# 2 SE of its noise and at least 0.01 (on a large val set the SE shrinks to nothing); with a 25%
# val-loss rise, a fall of 3 SE is high. A val BCE that rises while the AUC holds is the model
# growing over-confident, which calibration fixes and AUC selection does not mind.
AUC_FALL_SIGMAS = 2.0
AUC_FALL_MIN = 0.01
AUC_FALL_SIGMAS_HIGH = 3.0

# --- validation instability --------------------------------------------------------------------
# Std of consecutive full-stage Δval_acc over the binomial sigma. If each epoch's val accuracy were
# an independent binomial draw around a constant true accuracy, the differences would have std
# √2·sigma ≈ 1.4 sigma (the same val images every epoch make real noise smaller still): medfit's
# defaults measured 1.37 on blood cells (bench/README.md). 2.0 is ~1.4x that noise level and what
# the forum recipe measured (2.04); 3.0 is twice the noise level.
JITTER_RATIO = 2.0
JITTER_RATIO_HIGH = 3.0
# Steady improvement is not instability: at least one epoch must lose 2 sigma (3 for high).
DROP_SIGMAS = 2.0
DROP_SIGMAS_HIGH = 3.0

# --- learning rate -----------------------------------------------------------------------------
# An epoch-mean train loss rising 30% from one full epoch to the next: with warmup and cosine
# decay a healthy run's loss falls or stays flat; a spike this large is the optimiser overshooting.
LOSS_SPIKE = 1.3
# "Stuck at chance": train loss within 10% of ln(K) (the loss of uniform predictions) after the
# whole full stage, i.e. the network predicts nothing.
CHANCE_LOSS_FRACTION = 0.9
# A decline from the best val accuracy by 3 sigma while the train loss does not fall: the run got
# worse as it trained, which is the LR (overfitting lowers train loss as val gets worse).
DECLINE_SIGMAS = 3.0
# Too low: an LR below the default, the full stage lowered train loss by under 5% and train
# accuracy stayed under 90% (a converged run is flat too, but at high train accuracy).
FLAT_LOSS_FALL = 0.05
FLAT_MAX_TRAIN_ACC = 0.90
# Multi-label: "converged" is a macro AUC of 0.9 (most positives ranked above the negatives of
# their label): eval_train.json's when the run was evaluated on train, else the best val macro AUC
# (which a model's fit of its own training images is rarely below).
FLAT_MAX_AUC = 0.90
# "Stuck at chance" for sigmoid outputs: the BCE of uniform predictions depends on the positive
# weights and label smoothing, but chance for an AUC is 0.5 on any data: a val macro AUC within
# 2 SE (and 0.02) of 0.5 after the full stage separates nothing.
CHANCE_AUC = 0.5
CHANCE_AUC_SIGMAS = 2.0
CHANCE_AUC_MARGIN = 0.02

# --- input pipeline ----------------------------------------------------------------------------
# Share of training time (epoch minus eval) spent waiting for data or augmenting. Above half,
# the model waits more than it computes; above 30% a faster pipeline buys a visible speed-up.
DATA_BOUND_SHARE = 0.5
DATA_BOUND_SHARE_LOW = 0.3

# --- normalisation -----------------------------------------------------------------------------
# timm configs state mean/std to 3-4 decimals; a difference past 0.01 is another convention
# (1/255 only, ImageNet vs 0.5/0.5), not rounding.
NORM_TOLERANCE = 0.01

# --- resolution --------------------------------------------------------------------------------
# Below half the weights' native input size, fine detail (granules, lung texture) is gone and the
# pretrained filters see objects at scales they never learned. Resolution was the largest single
# lever we measured: blood cells, 2,000 images, 64 px -> 0.74 val acc, 128 px -> 0.87.
LOW_RES_FRACTION = 0.5
# Only when the run leaves room: at 0.95 balanced accuracy resolution is not what limits it.
LOW_RES_MAX_SCORE = 0.95
# Upsampling adds no detail: a larger input is worth suggesting only when the images themselves
# are at least 25% larger per side (1.56x the pixels) than the current input.
LOW_RES_MIN_GAIN = 1.25

# --- imbalance ---------------------------------------------------------------------------------
# Accuracy above balanced accuracy by 5 points (and 2 sigma): the majority class carries the
# accuracy; 15 points: a minority class is largely missed.
IMBALANCE_GAP = 0.05
IMBALANCE_GAP_HIGH = 0.15
IMBALANCE_SIGMAS = 2.0

# --- augmentation ------------------------------------------------------------------------------
# Rotations beyond 45° or vertical flips turn an oriented scan (chest X-ray, OCT, MRI slice) into
# an image no scanner produces; grayscale medical data is almost always such a scan.
ORIENTED_MAX_DEGREES = 45.0


def binomial_sigma(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images."""
    if n <= 0 or not math.isfinite(p):
        return math.nan
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def val_sigma(facts: RunFacts, score: float) -> float:
    """The noise of the run's val score at `score`: the binomial sigma of an accuracy, or the
    Hanley-McNeil SE of a multi-label run's macro AUC."""
    return val_auc_sigma(facts, score) if facts.multilabel else binomial_sigma(score, facts.n_val)


def _finite(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(v) for v in values)


def _fmt(x: float) -> str:
    return f"{x:.3f}"


# --- rules -------------------------------------------------------------------------------------


def overfitting(facts: RunFacts) -> Finding | None:
    """Val loss rising from its minimum while train loss keeps falling and the gap grows."""
    full = facts.full
    if len(full) < MIN_TREND_EPOCHS:
        return None
    i_min = int(np.nanargmin([e.val_loss for e in full]))
    best, last = full[i_min], full[-1]
    if i_min == len(full) - 1 or best.val_loss <= 0:
        return None
    rise = last.val_loss / best.val_loss - 1
    train_fall = 1 - last.train_loss / best.train_loss if best.train_loss > 0 else 0.0
    if facts.multilabel:
        return _overfitting_multilabel(facts, i_min, rise, train_fall)
    gap_then, gap_now = best.train_acc - best.val_acc, last.train_acc - last.val_acc
    sigma = binomial_sigma(last.val_acc, facts.n_val)
    growth_needed = max(GAP_GROWTH, 2 * sigma) if math.isfinite(sigma) else GAP_GROWTH
    if rise < VAL_LOSS_RISE or train_fall < TRAIN_LOSS_FALL or gap_now - gap_then < growth_needed:
        return None
    high = rise >= VAL_LOSS_RISE_HIGH and gap_now >= GAP_HIGH
    fix = _overfitting_fix(facts, f"{i_min + 1}`: val loss was lowest after full epoch {i_min + 1}")
    return Finding(
        rule="overfitting",
        severity="high" if high else "medium",
        title="overfitting: val loss rises while train loss falls",
        evidence=(
            f"val loss {_fmt(best.val_loss)} at epoch {best.epoch} -> {_fmt(last.val_loss)} at "
            f"epoch {last.epoch} (+{rise:.0%}) while train loss fell {_fmt(best.train_loss)} -> "
            f"{_fmt(last.train_loss)}; train-val accuracy gap {gap_then:+.3f} -> {gap_now:+.3f}"
        ),
        fix=fix,
        numbers={
            **_loss_trend(best, last, rise, train_fall),
            "gap_at_min": gap_then,
            "gap_final": gap_now,
        },
        strength=rise / VAL_LOSS_RISE,
    )


def _loss_trend(best: EpochRow, last: EpochRow, rise: float, train_fall: float) -> dict[str, float]:
    """The loss numbers of an overfitting finding (single- and multi-label alike)."""
    return {
        "min_val_loss_epoch": best.epoch,
        "min_val_loss": best.val_loss,
        "final_val_loss": last.val_loss,
        "val_loss_rise": rise,
        "train_loss_fall": train_fall,
    }


def _overfitting_fix(facts: RunFacts, epochs: str) -> str:
    aug = facts.config.data.aug
    stronger = _modality_preset(facts) if aug in ("none", "light") else aug
    return (
        f"medfit already keeps the best-scoring weights; to generalise: "
        f"{f'`--aug {stronger}`, ' if stronger != aug else ''}"
        f"fewer epochs (`--epochs {epochs}), more training images, `--weight-decay 0.1`"
    )


def _overfitting_multilabel(
    facts: RunFacts, i_min: int, rise: float, train_fall: float
) -> Finding | None:
    """Val BCE rising from its minimum while train BCE falls, and the val macro AUC falling from
    its peak by more than its noise (the multi-label form of the growing train-val gap)."""
    full = facts.full
    aucs = [facts.val_score(e) for e in full]
    if not _finite(aucs) or rise < VAL_LOSS_RISE or train_fall < TRAIN_LOSS_FALL:
        return None
    i_peak = int(np.argmax(aucs))
    peak, last = full[i_peak], full[-1]
    fall = aucs[i_peak] - aucs[-1]
    sigma = val_sigma(facts, aucs[i_peak])
    needed = max(AUC_FALL_MIN, AUC_FALL_SIGMAS * sigma) if math.isfinite(sigma) else AUC_FALL_MIN
    if i_peak == len(full) - 1 or fall < needed:
        return None
    high = (
        rise >= VAL_LOSS_RISE_HIGH and math.isfinite(sigma) and fall >= AUC_FALL_SIGMAS_HIGH * sigma
    )
    best = full[i_min]
    sigmas = f", {fall / sigma:.1f} SE" if sigma > 0 else ""
    return Finding(
        rule="overfitting",
        severity="high" if high else "medium",
        title="overfitting: val loss rises while train loss falls, and val macro AUC falls",
        evidence=(
            f"val BCE {_fmt(best.val_loss)} at epoch {best.epoch} -> {_fmt(last.val_loss)} at "
            f"epoch {last.epoch} (+{rise:.0%}) while train BCE fell {_fmt(best.train_loss)} -> "
            f"{_fmt(last.train_loss)}; val macro AUC peaked at {aucs[i_peak]:.3f} in epoch "
            f"{peak.epoch}, then {aucs[-1]:.3f} at epoch {last.epoch} (-{fall:.3f}{sigmas}; "
            f"noise ±{sigma:.3f} at {facts.n_val} val images)"
        ),
        fix=_overfitting_fix(
            facts, f"{i_peak + 1}`: val macro AUC was highest after full epoch {i_peak + 1}"
        ),
        numbers={
            **_loss_trend(best, last, rise, train_fall),
            "peak_val_macro_auc_epoch": peak.epoch,
            "peak_val_macro_auc": aucs[i_peak],
            "final_val_macro_auc": aucs[-1],
            "auc_fall": fall,
            "auc_sigma": sigma,
        },
        strength=rise / VAL_LOSS_RISE,
    )


def val_instability(facts: RunFacts) -> Finding | None:
    """Epoch-to-epoch val accuracy (multi-label: val macro AUC) swings beyond what the val set's
    size explains."""
    full = facts.full
    if len(full) < MIN_TREND_EPOCHS or facts.n_val <= 0:
        return None
    if facts.multilabel:
        return _auc_instability(facts)
    acc = np.array([e.val_acc for e in full])
    sigma = binomial_sigma(float(acc[-1]), facts.n_val)
    swings = _swings(acc, sigma)
    if swings is None:
        return None
    jitter, ratio, worst_drop, high = swings
    return Finding(
        rule="val_instability",
        severity="high" if high else "medium",
        title="validation accuracy jumps more than the val set's noise explains",
        evidence=(
            f"std of epoch-to-epoch Δval acc {jitter:.3f} over {len(acc) - 1} full-stage steps vs "
            f"binomial noise {sigma:.3f} (n_val {facts.n_val}, p {acc[-1]:.3f}): {ratio:.1f}x "
            f"(pure noise ~1.4x); worst drop {worst_drop:.3f}; val acc "
            + " ".join(f"{a:.2f}" for a in acc)
        ),
        fix=_stability_fix(facts),
        numbers={
            "jitter": jitter,
            "binomial_sigma": sigma,
            "ratio": ratio,
            "worst_drop": worst_drop,
            "n_val": facts.n_val,
            "val_acc": acc.tolist(),
        },
        strength=ratio / JITTER_RATIO,
    )


def _swings(curve: np.ndarray, sigma: float) -> tuple[float, float, float, bool] | None:
    """(std of the epoch-to-epoch changes, that std / sigma, the worst drop, high severity) when
    the curve swings beyond its noise `sigma` (JITTER_RATIO and DROP_SIGMAS), else None."""
    if not sigma > 0:
        return None
    diffs = np.diff(curve)
    jitter = float(np.std(diffs))
    ratio, worst_drop = jitter / sigma, float(max(0.0, -diffs.min()))
    if ratio < JITTER_RATIO or worst_drop < DROP_SIGMAS * sigma:
        return None
    high = ratio >= JITTER_RATIO_HIGH and worst_drop >= DROP_SIGMAS_HIGH * sigma
    return jitter, ratio, worst_drop, high


def _auc_instability(facts: RunFacts) -> Finding | None:
    """`val_instability` on the val macro AUC, against its Hanley-McNeil noise."""
    auc = [facts.val_score(e) for e in facts.full]
    if not _finite(auc):
        return None
    sigma = val_sigma(facts, auc[-1])
    swings = _swings(np.array(auc), sigma)
    if swings is None:
        return None
    jitter, ratio, worst_drop, high = swings
    measured = [p for p in facts.val_counts.values() if 0 < p < facts.n_val]
    lo, hi = min(measured, default=0), max(measured, default=0)
    return Finding(
        rule="val_instability",
        severity="high" if high else "medium",
        title="validation macro AUC jumps more than the val set's noise explains",
        evidence=(
            f"std of epoch-to-epoch Δval macro AUC {jitter:.3f} over {len(auc) - 1} full-stage "
            f"steps vs its noise {sigma:.3f} (Hanley-McNeil SE at AUC {auc[-1]:.3f}, "
            f"{facts.n_val} val images, {lo}-{hi} positives per label): {ratio:.1f}x (pure "
            f"noise ~1.4x); worst drop {worst_drop:.3f}; val macro AUC "
            + " ".join(f"{a:.3f}" for a in auc)
        ),
        fix=_stability_fix(facts),
        numbers={
            "jitter": jitter,
            "auc_sigma": sigma,
            "ratio": ratio,
            "worst_drop": worst_drop,
            "n_val": facts.n_val,
            "val_macro_auc": auc,
        },
        strength=ratio / JITTER_RATIO,
    )


def _stability_fix(facts: RunFacts) -> str:
    """The usual causes, in the order they bite, limited to what this run's config shows."""
    t, fixes = facts.config.train, []
    if facts.config.model.normalize != "weights":
        fixes.append("`--normalize weights`")
    if t.bn == "train" and t.batch_size < t.bn_min_batch:
        fixes.append("`--bn frozen` (batch below 16)")
    if isinstance(t.lr, float) and t.lr > default_lr(t.bn):
        fixes.append(f"`--lr {default_lr(t.bn):g}`")
    elif isinstance(t.lr, float) and not fixes:
        # Nothing above explains the swings: the peak LR is the next lever. On PneumoniaMNIST
        # (64 px, 800 images) the default 3e-3 went 0.92 -> 0.79 -> 0.83 in val accuracy where
        # 1e-3 climbed 0.84 -> 0.89 -> 0.90 (bench/README.md, "medfit diagnose: planted faults").
        fixes.append(f"`--lr {t.lr / 3:.1g}` (a third of this run's peak LR)")
    if t.optimizer != "adamw":
        fixes.append("`--optimizer adamw`")
    if not t.ema:
        fixes.append("EMA on (drop `--no-ema`)")
    fixes.append("a larger val set (noise shrinks as 1/sqrt(n_val))")
    return "; ".join(fixes)


def bn_small_batch(facts: RunFacts) -> Finding | None:
    """BatchNorm statistics from batches too small to estimate them (config only)."""
    t = facts.config.train
    if t.bn != "train" or t.batch_size >= t.bn_min_batch:
        return None
    return Finding(
        rule="bn_small_batch",
        severity="medium",
        title=f"BatchNorm trains on batch statistics of only {t.batch_size} images",
        evidence=(
            f"bn policy train with --batch-size {t.batch_size} (< {t.bn_min_batch}): batch "
            "mean/variance are noisy estimates, so the network learns on statistics its eval "
            "mode (running averages) does not reproduce (Wu & He 2018, fig. 1)"
        ),
        fix=(
            f"`--bn frozen --lr {default_lr('frozen'):g}` (or `--bn auto`), or "
            f"`--batch-size {t.bn_min_batch}` or more"
        ),
        numbers={"batch_size": t.batch_size, "bn_min_batch": t.bn_min_batch},
        strength=t.bn_min_batch / max(t.batch_size, 1),
    )


def normalization(facts: RunFacts) -> Finding | None:
    """Input mean/std that differ from the pretrained weights' own."""
    if facts.expected_mean is None or facts.expected_std is None:
        return None
    used_mean, used_std = facts.preprocess.mean, facts.preprocess.std
    pairs = [
        *zip(used_mean, facts.expected_mean, strict=False),
        *zip(used_std, facts.expected_std, strict=False),
    ]
    diff = max(abs(a - b) for a, b in pairs) if pairs else 0.0
    if diff <= NORM_TOLERANCE and len(used_mean) == len(facts.expected_mean):
        return None
    lo, hi = _input_range(used_mean[0], used_std[0])
    want_lo, want_hi = _input_range(facts.expected_mean[0], facts.expected_std[0])
    unit = facts.config.model.normalize == "unit"
    fix = (
        "`--normalize weights` (the default)"
        if unit
        else "retrain with the weights' own mean/std (a WEIGHTS.json beside a weights file "
        "overrides timm's config)"
    )
    return Finding(
        rule="normalization",
        severity="high",
        title="input normalisation does not match the pretrained weights",
        evidence=(
            f"inputs normalised with mean {_vec(used_mean)} std {_vec(used_std)} "
            f"({'1/255 only' if unit else 'preprocess.json'}): pixel values span "
            f"[{lo:.2f}, {hi:.2f}]; the weights were trained on mean {_vec(facts.expected_mean)} "
            f"std {_vec(facts.expected_std)}, i.e. [{want_lo:.2f}, {want_hi:.2f}]"
        ),
        fix=fix,
        numbers={
            "used_mean": list(used_mean),
            "used_std": list(used_std),
            "expected_mean": list(facts.expected_mean),
            "expected_std": list(facts.expected_std),
            "max_abs_diff": diff,
        },
        strength=1 + diff / NORM_TOLERANCE / 10,
    )


def _input_range(mean: float, std: float) -> tuple[float, float]:
    return (0 - mean) / std, (1 - mean) / std


def _vec(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def lr_too_high(facts: RunFacts) -> Finding | None:
    """NaN steps, loss spikes, collapse to chance, or a decline after an early best."""
    full = facts.full
    if not full:
        return None
    signs, numbers = _lr_high_signs(facts, full)
    if not signs:
        return None
    lr = facts.config.train.lr
    lr_value = float(lr) if isinstance(lr, float) else full[0].lr
    strong = {"non_finite", "chance", "decline"} & set(numbers["signs"])
    return Finding(
        rule="lr_too_high",
        severity="high" if strong else "medium",
        title=f"learning rate too high ({lr_value:g})",
        evidence="; ".join(signs),
        fix=f"`--lr {lr_value / 10:.0e}` (10x lower) or `--lr auto` (range test)",
        numbers={**numbers, "lr": lr_value},
        strength=1.0 + len(strong),
    )


def _lr_high_signs(facts: RunFacts, full: list[EpochRow]) -> tuple[list[str], dict[str, Any]]:
    signs: list[str] = []
    kinds: list[str] = []
    skipped = sum(e.skipped_steps for e in facts.history)
    if skipped:
        signs.append(f"{skipped} optimizer step(s) skipped for non-finite loss")
        kinds.append("non_finite")
    spikes = [
        (a, b) for a, b in itertools.pairwise(full) if b.train_loss > LOSS_SPIKE * a.train_loss
    ]
    if spikes:
        a, b = spikes[0]
        signs.append(
            f"train loss jumped {_fmt(a.train_loss)} -> {_fmt(b.train_loss)} "
            f"(epoch {a.epoch} -> {b.epoch})"
        )
        kinds.append("spike")
    chance = math.log(max(len(facts.classes), 2))
    last = full[-1]
    t = facts.config.train
    above_default = isinstance(t.lr, float) and t.lr > default_lr(t.bn)
    if facts.multilabel:
        at_chance = _auc_at_chance(facts, last) if above_default else None
        if at_chance:
            signs.append(at_chance)
            kinds.append("chance")
    elif above_default and last.train_loss >= CHANCE_LOSS_FRACTION * chance:
        signs.append(
            f"train loss {_fmt(last.train_loss)} after the full stage, no better than "
            f"uniform guessing (ln({len(facts.classes)}) = {chance:.3f}), at {t.lr:g} > the "
            f"default {default_lr(t.bn):g}"
        )
        kinds.append("chance")
    decline = _early_best_decline(facts, full)
    if decline:
        signs.append(decline)
        kinds.append("decline")
    if facts.multilabel:
        return signs, {"signs": kinds, "skipped_steps": skipped, "chance_auc": CHANCE_AUC}
    return signs, {"signs": kinds, "skipped_steps": skipped, "chance_loss": chance}


def _auc_at_chance(facts: RunFacts, last: EpochRow) -> str | None:
    """Multi-label: the last full epoch's val macro AUC is within noise of 0.5."""
    auc = facts.val_score(last)
    sigma = val_sigma(facts, CHANCE_AUC)
    margin = max(CHANCE_AUC_MARGIN, CHANCE_AUC_SIGMAS * sigma) if sigma > 0 else CHANCE_AUC_MARGIN
    if not math.isfinite(auc) or auc >= CHANCE_AUC + margin:
        return None
    t = facts.config.train
    return (
        f"val macro AUC {auc:.3f} after the full stage, within {margin:.3f} of chance (0.5: "
        f"the model separates no label), at {t.lr:g} > the default {default_lr(t.bn):g}"
    )


def _early_best_decline(facts: RunFacts, full: list[EpochRow]) -> str | None:
    """Best val accuracy (multi-label: macro AUC) early, then a 3-sigma decline while the train
    loss did not fall."""
    if len(full) < MIN_TREND_EPOCHS:
        return None
    scores = [facts.val_score(e) for e in full]
    if facts.multilabel and not _finite(scores):
        return None
    i_best = int(np.nanargmax(scores))
    best, last = full[i_best], full[-1]
    sigma = val_sigma(facts, scores[i_best])
    early = i_best < len(full) // 2 + (len(full) % 2)
    drop = scores[i_best] - scores[-1]
    train_not_falling = last.train_loss >= best.train_loss * (1 - TRAIN_LOSS_FALL)
    if early and drop >= DECLINE_SIGMAS * sigma and train_not_falling:
        name = "val macro AUC" if facts.multilabel else "val acc"
        return (
            f"{name} peaked at {scores[i_best]:.3f} in epoch {best.epoch}, then fell to "
            f"{scores[-1]:.3f} ({drop / sigma:.1f} sigma) while train loss did not improve"
        )
    return None


def lr_too_low(facts: RunFacts) -> Finding | None:
    """A flat train loss at low train accuracy with an LR at or below the default."""
    full = facts.full
    t = facts.config.train
    # At or above the default (the measured best on blood cells) a flat loss has another cause.
    if len(full) < 2 or not isinstance(t.lr, float) or t.lr >= default_lr(t.bn):
        return None
    first, last = full[0], full[-1]
    fall = 1 - last.train_loss / first.train_loss if first.train_loss > 0 else 0.0
    if facts.multilabel:
        return _lr_too_low_multilabel(facts, fall) if fall < FLAT_LOSS_FALL else None
    if fall >= FLAT_LOSS_FALL or last.train_acc >= FLAT_MAX_TRAIN_ACC:
        return None
    return Finding(
        rule="lr_too_low",
        severity="medium",
        title=f"learning rate too low ({t.lr:g}): the loss hardly moves",
        evidence=(
            f"train loss {_fmt(first.train_loss)} -> {_fmt(last.train_loss)} over {len(full)} "
            f"full epochs ({fall:.1%} lower) with train accuracy {last.train_acc:.3f}"
        ),
        fix=f"`--lr {min(t.lr * 10, default_lr(t.bn)):.0e}` or `--lr auto` (range test)",
        numbers={"lr": t.lr, "train_loss_fall": fall, "final_train_acc": last.train_acc},
        strength=1 + (FLAT_LOSS_FALL - fall) / FLAT_LOSS_FALL,
    )


def _lr_too_low_multilabel(facts: RunFacts, fall: float) -> Finding | None:
    """`lr_too_low` for sigmoid outputs: a flat BCE while the fit is still short of a 0.9 AUC."""
    t, full = facts.config.train, facts.full
    train_auc = facts.evals.get("train", {}).get("macro_auc")
    if isinstance(train_auc, (int, float)) and math.isfinite(train_auc):
        score, source = float(train_auc), "train macro AUC (eval_train.json)"
    else:
        aucs = [a for a in (facts.val_score(e) for e in full) if math.isfinite(a)]
        if not aucs:
            return None
        score, source = max(aucs), "best val macro AUC (no train-side AUC is logged)"
    if score >= FLAT_MAX_AUC:
        return None
    assert isinstance(t.lr, float)
    return Finding(
        rule="lr_too_low",
        severity="medium",
        title=f"learning rate too low ({t.lr:g}): the loss hardly moves",
        evidence=(
            f"train BCE {_fmt(full[0].train_loss)} -> {_fmt(full[-1].train_loss)} over "
            f"{len(full)} full epochs ({fall:.1%} lower) with {source} {score:.3f}"
        ),
        fix=f"`--lr {min(t.lr * 10, default_lr(t.bn)):.0e}` or `--lr auto` (range test)",
        numbers={
            "lr": t.lr,
            "train_loss_fall": fall,
            "macro_auc": score,
            "macro_auc_source": source,
        },
        strength=1 + (FLAT_LOSS_FALL - fall) / FLAT_LOSS_FALL,
    )


def low_resolution(facts: RunFacts) -> Finding | None:
    """Input far below the weights' native size while the images themselves have more detail and
    the model still leaves room to improve."""
    native, size, src = facts.native_size, facts.preprocess.img_size, facts.source_size
    if not native or size >= LOW_RES_FRACTION * native or not facts.history:
        return None
    if src is not None and src < LOW_RES_MIN_GAIN * size:
        return None  # the input already holds (nearly) all the detail the images have
    if facts.multilabel:
        aucs = [a for a in (facts.val_score(e) for e in facts.history) if math.isfinite(a)]
        best, score = (max(aucs) if aucs else math.nan), "val macro AUC"
    else:
        best, score = max(e.val_balanced_accuracy for e in facts.history), "val balanced accuracy"
    if not best < LOW_RES_MAX_SCORE:
        return None
    suggest = min(native, 2 * size, src or native)
    own = (
        f"the training images are {src} px (median longer side), so up to {suggest} px adds "
        "real detail"
        if src is not None
        else "the images' own size is unknown (training files not readable from here)"
    )
    return Finding(
        rule="low_resolution",
        severity="medium",
        title=f"input {size} px is under half the {native} px the weights were trained at",
        evidence=(
            f"best {score} {best:.3f} at {size} px; {own}; on blood cells (2,000 "
            "train images) 64 -> 128 px moved val accuracy 0.74 -> 0.87"
        ),
        fix=(
            f"`--img-size {suggest}` (an epoch costs about {(suggest / size) ** 2:.1f}x as much; "
            "the cache is rebuilt once)"
        ),
        numbers={
            "img_size": size,
            "native_size": native,
            "source_size": src,
            "suggested_size": suggest,
            ("best_val_macro_auc" if facts.multilabel else "best_val_balanced_accuracy"): best,
        },
        strength=min(native, src or native) / size,
    )


def aug_orientation(facts: RunFacts) -> Finding | None:
    """Vertical flips or large rotations on grayscale (oriented) scans."""
    preset = PRESETS.get(facts.config.data.aug)
    if preset is None or not facts.grayscale:
        return None
    if not preset.vflip and preset.degrees <= ORIENTED_MAX_DEGREES:
        return None
    what = (
        [f"rotations up to ±{preset.degrees:g}°"] if preset.degrees > ORIENTED_MAX_DEGREES else []
    )
    what += ["vertical flips"] if preset.vflip else []
    return Finding(
        rule="aug_orientation",
        severity="medium",
        title=f"augmentation `{facts.config.data.aug}` turns oriented scans upside down",
        evidence=(
            f"the training images are grayscale (X-ray/OCT/MRI-like, which have an up and a "
            f"down) and the preset applies {' and '.join(what)}: the model must learn images no "
            "scanner produces, and orientation cues are destroyed"
        ),
        fix="`--aug xray` (chest X-ray: no flips, ±10°), or `--aug oct` / `--aug mri`",
        numbers={"preset": facts.config.data.aug, "degrees": preset.degrees, "vflip": preset.vflip},
        strength=1.0 + preset.degrees / 90,
    )


def data_bound(facts: RunFacts) -> Finding | None:
    """Waiting for batches plus augmenting them takes a large share of training time."""
    train_s = sum(max(e.epoch_s - e.eval_s, 0.0) for e in facts.history)
    data_s = sum(e.data_s for e in facts.history)
    aug_s = sum(e.augment_s for e in facts.history)
    if train_s <= 0:
        return None
    share = (data_s + aug_s) / train_s
    if share < DATA_BOUND_SHARE_LOW:
        return None
    t = facts.config.train
    if data_s >= aug_s:
        fix = f"`--workers {max(t.workers * 2, 2)}` (prefetch threads); keep --cache-dir local"
    else:
        fix = (
            "augmentation runs on the training device: use a GPU (`--device cuda`), or a "
            "lighter preset on CPU (`--aug light`)"
        )
    return Finding(
        rule="data_bound",
        severity="medium" if share >= DATA_BOUND_SHARE else "low",
        title=f"training is input-bound: {share:.0%} of training time is data wait + augmentation",
        evidence=(
            f"data wait {data_s:.1f} s + augmentation {aug_s:.1f} s of {train_s:.1f} s training "
            f"time over {len(facts.history)} epochs (compute {train_s - data_s - aug_s:.1f} s)"
        ),
        fix=fix,
        numbers={"data_s": data_s, "augment_s": aug_s, "train_s": train_s, "share": share},
        strength=share / DATA_BOUND_SHARE_LOW,
    )


def class_imbalance(facts: RunFacts) -> Finding | None:
    """Accuracy well above balanced accuracy: the majority class carries the score."""
    if facts.multilabel:
        return None  # label-wise accuracies (multilabel.NOT_APPLICABLE)
    last = facts.history[-1]
    gap = last.val_acc - last.val_balanced_accuracy
    sigma = binomial_sigma(last.val_acc, facts.n_val)
    needed = max(IMBALANCE_GAP, IMBALANCE_SIGMAS * sigma) if math.isfinite(sigma) else IMBALANCE_GAP
    if not math.isfinite(gap) or gap < needed:
        return None
    t = facts.config.train
    stronger = {"none": "sqrt", "sqrt": "loss"}.get(t.balance, "sampler")
    fixes = [f"`--balance {stronger}`"]
    if t.select_metric == "accuracy":
        fixes.append("`--select-metric balanced_accuracy`")
    counts = facts.train_counts
    ratio = max(counts.values()) / max(min(counts.values()), 1) if counts else math.nan
    return Finding(
        rule="class_imbalance",
        severity="high" if gap >= IMBALANCE_GAP_HIGH else "medium",
        title="class imbalance hides behind accuracy",
        evidence=(
            f"final val accuracy {last.val_acc:.3f} vs balanced accuracy "
            f"{last.val_balanced_accuracy:.3f} (gap {gap:.3f}); train classes "
            + ", ".join(f"{c} {n}" for c, n in counts.items())
            + f" ({ratio:.1f}:1), balance {t.balance}, selected on {t.select_metric}"
        ),
        fix=" and ".join(fixes) + "; judge the run by balanced accuracy",
        numbers={
            "val_acc": last.val_acc,
            "val_balanced_accuracy": last.val_balanced_accuracy,
            "gap": gap,
            "train_counts": counts,
            "imbalance_ratio": ratio,
        },
        strength=gap / IMBALANCE_GAP,
    )


def _modality_preset(facts: RunFacts) -> str:
    """medfit's auto choice: oriented-scan preset for grayscale, any-rotation for colour."""
    return "xray" if facts.grayscale else "microscopy"


HISTORY_RULES: tuple[Rule, ...] = (
    overfitting,
    val_instability,
    bn_small_batch,
    normalization,
    lr_too_high,
    lr_too_low,
    low_resolution,
    aug_orientation,
    data_bound,
    class_imbalance,
    check_missing,
    rare_val_labels,
)


def run_rules(facts: RunFacts) -> list[Finding]:
    found = [f for rule in HISTORY_RULES if (f := rule(facts)) is not None]
    checked = check_findings(facts)
    if any(f.rule == "rare_val_labels" for f in found):  # it quotes check's rare-label entry
        checked = [f for f in checked if f.numbers.get("check_key") != "rare_labels"]
    return found + checked


def not_applicable(facts: RunFacts) -> dict[str, str]:
    """The rules skipped for this run, with why (diagnosis.json "not_applicable")."""
    return dict(NOT_APPLICABLE) if facts.multilabel else {}
