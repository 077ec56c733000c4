"""Rules over the probe records (`medfit.diagnose.own.probes`): pure functions -> Finding | None.

A multi-label record (`metric: "macro_auc"`) holds macro ROC-AUCs of the sigmoid outputs, with
their own SE (`sigma`, Hanley-McNeil): its gaps are judged on the AUC thresholds below, in units
of that SE, never on accuracy.
"""

from __future__ import annotations

from medfit.config import default_lr
from medfit.diagnose.findings import Finding
from medfit.diagnose.own.history_rules import binomial_sigma
from medfit.diagnose.own.probes import MACRO_AUC, AugProbe, BNProbe

# BatchNorm: the two modes may differ by batch noise. An accuracy gap of 10 points (and 3 sigma of
# the probe's binomial noise) means the running statistics no longer describe what the layers saw
# in training; 20 points means they are unusable. The share of identical answers is reported but
# does not trigger: a model near chance flips its argmax under any perturbation (bench: a 30%
# accurate run agreed on 55% of images with equal accuracy in both modes).
BN_ACC_GAP = 0.10
BN_ACC_GAP_HIGH = 0.20
# Augmentation: the model was trained on augmented images, so when the preset keeps the label
# it scores on them about as on the originals. 7 points (and 3 sigma) lower: the preset removes
# part of the signal; 15 points: much of it.
AUG_DROP = 0.07
AUG_DROP_HIGH = 0.15
SIGMAS = 3.0
# Multi-label (macro AUC): an AUC runs from 0.5 (chance) to 1, half the span an accuracy has from
# chance to perfect on two classes, so the AUC thresholds are half the accuracy ones.
BN_AUC_GAP = 0.05
BN_AUC_GAP_HIGH = 0.10
AUG_AUC_DROP = 0.035
AUG_AUC_DROP_HIGH = 0.075


def aug_drop_threshold(probe: AugProbe) -> float:
    """The drop from which the augmentation probe counts (accuracy or macro AUC)."""
    return AUG_AUC_DROP if probe.metric == MACRO_AUC else AUG_DROP


def bn_mismatch(probe: BNProbe | None) -> Finding | None:
    """Train-mode (batch statistics) and eval-mode BatchNorm disagree on the same batches."""
    if probe is None or probe.policy != "train":
        return None  # with frozen BN the weights were trained on the running statistics
    auc = probe.metric == MACRO_AUC
    gap = abs(probe.acc_batch_stats - probe.acc_eval)
    if auc:
        sigma = probe.sigma if probe.sigma is not None else float("nan")
    else:
        sigma = binomial_sigma(max(probe.acc_eval, probe.acc_batch_stats), probe.images)
    threshold, high_at = (BN_AUC_GAP, BN_AUC_GAP_HIGH) if auc else (BN_ACC_GAP, BN_ACC_GAP_HIGH)
    if not gap >= max(threshold, SIGMAS * sigma):
        return None  # NaN (no measurable label, no SE) never fires
    high = gap >= high_at
    small = probe.batch_size < 16
    fix = (
        f"`--bn frozen --lr {default_lr('frozen'):g}` (batch {probe.batch_size} is too small for "
        "batch statistics), or `--batch-size 16` or more"
        if small
        else f"`--bn frozen --lr {default_lr('frozen'):g}`; keep BN re-estimation on "
        "(`bn_recalibrate: true`) and the weights' normalisation (`--normalize weights`)"
    )
    if auc:
        evidence = (
            f"on {probe.images} training images in batches of {probe.batch_size}: macro AUC "
            f"{probe.acc_batch_stats:.3f} with batch statistics (as trained) vs "
            f"{probe.acc_eval:.3f} with running statistics (as validated/deployed), a gap of "
            f"{gap:.3f} ({gap / sigma:.1f} SE); the sigmoid outputs move by "
            f"{probe.mean_abs_dp or 0.0:.3f} on average and "
            f"{1 - probe.agreement:.0%} of the image-label calls at the run's thresholds flip"
        )
        numbers = {
            "macro_auc_eval": probe.acc_eval,
            "macro_auc_batch_stats": probe.acc_batch_stats,
            "auc_sigma": sigma,
            "call_agreement": probe.agreement,
            "mean_abs_dp": probe.mean_abs_dp,
        }
    else:
        evidence = (
            f"on {probe.images} training images in batches of {probe.batch_size}: accuracy "
            f"{probe.acc_batch_stats:.3f} with batch statistics (as trained) vs "
            f"{probe.acc_eval:.3f} with running statistics (as validated/deployed); the two "
            f"modes agree on {probe.agreement:.0%} of the images"
        )
        numbers = {
            "acc_eval": probe.acc_eval,
            "acc_batch_stats": probe.acc_batch_stats,
            "agreement": probe.agreement,
        }
    return Finding(
        rule="bn_mismatch",
        severity="high" if high else "medium",
        title="BatchNorm behaves differently in training and evaluation",
        evidence=evidence,
        fix=fix,
        numbers={**numbers, "batch_size": probe.batch_size, "images": probe.images},
        strength=gap / threshold,
    )


def aug_destroys_signal(probe: AugProbe | None) -> Finding | None:
    """The checkpoint recognises augmented training images far worse than the originals."""
    if probe is None:
        return None
    auc = probe.metric == MACRO_AUC
    drop = probe.acc_clean - probe.acc_augmented
    if auc:
        sigma = probe.sigma if probe.sigma is not None else float("nan")
    else:
        sigma = binomial_sigma(probe.acc_clean, probe.images)
    threshold = aug_drop_threshold(probe)
    if not drop >= max(threshold, SIGMAS * sigma):
        return None
    high_at = AUG_AUC_DROP_HIGH if auc else AUG_DROP_HIGH
    evidence = (
        f"the selected weights reach macro AUC {probe.acc_clean:.3f} on {probe.images} "
        f"un-augmented training images but only {probe.acc_augmented:.3f} after the run's "
        f"`{probe.preset}` augmentation (-{drop:.3f}, {drop / sigma:.1f} SE)"
        if auc
        else f"the selected weights classify {probe.acc_clean:.3f} of {probe.images} training "
        f"images correctly un-augmented but only {probe.acc_augmented:.3f} after the run's "
        f"`{probe.preset}` augmentation (-{drop:.3f}, {drop / sigma:.1f} sigma)"
    )
    return Finding(
        rule="aug_destroys_signal",
        severity="high" if drop >= high_at else "medium",
        title=f"augmentation `{probe.preset}` removes what the label depends on",
        evidence=evidence,
        fix=(
            "a preset that keeps the label: `--aug xray` for chest X-rays (no flips, ±10°), "
            "`--aug oct`/`--aug mri` (no vertical flip), `--aug light` when unsure"
        ),
        numbers={
            ("macro_auc_clean" if auc else "acc_clean"): probe.acc_clean,
            ("macro_auc_augmented" if auc else "acc_augmented"): probe.acc_augmented,
            "drop": drop,
            "images": probe.images,
            "preset": probe.preset,
        },
        strength=drop / threshold,
    )
