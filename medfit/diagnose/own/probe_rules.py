"""Rules over the probe records (`medfit.diagnose.own.probes`): pure functions -> Finding | None."""

from __future__ import annotations

from medfit.config import default_lr
from medfit.diagnose.findings import Finding
from medfit.diagnose.own.history_rules import binomial_sigma
from medfit.diagnose.own.probes import AugProbe, BNProbe

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


def bn_mismatch(probe: BNProbe | None) -> Finding | None:
    """Train-mode (batch statistics) and eval-mode BatchNorm disagree on the same batches."""
    if probe is None or probe.policy != "train":
        return None  # with frozen BN the weights were trained on the running statistics
    gap = abs(probe.acc_batch_stats - probe.acc_eval)
    sigma = binomial_sigma(max(probe.acc_eval, probe.acc_batch_stats), probe.images)
    if gap < max(BN_ACC_GAP, SIGMAS * sigma):
        return None
    high = gap >= BN_ACC_GAP_HIGH
    small = probe.batch_size < 16
    fix = (
        f"`--bn frozen --lr {default_lr('frozen'):g}` (batch {probe.batch_size} is too small for "
        "batch statistics), or `--batch-size 16` or more"
        if small
        else f"`--bn frozen --lr {default_lr('frozen'):g}`; keep BN re-estimation on "
        "(`bn_recalibrate: true`) and the weights' normalisation (`--normalize weights`)"
    )
    return Finding(
        rule="bn_mismatch",
        severity="high" if high else "medium",
        title="BatchNorm behaves differently in training and evaluation",
        evidence=(
            f"on {probe.images} training images in batches of {probe.batch_size}: accuracy "
            f"{probe.acc_batch_stats:.3f} with batch statistics (as trained) vs "
            f"{probe.acc_eval:.3f} with running statistics (as validated/deployed); the two "
            f"modes agree on {probe.agreement:.0%} of the images"
        ),
        fix=fix,
        numbers={
            "acc_eval": probe.acc_eval,
            "acc_batch_stats": probe.acc_batch_stats,
            "agreement": probe.agreement,
            "batch_size": probe.batch_size,
            "images": probe.images,
        },
        strength=gap / BN_ACC_GAP,
    )


def aug_destroys_signal(probe: AugProbe | None) -> Finding | None:
    """The checkpoint recognises augmented training images far worse than the originals."""
    if probe is None:
        return None
    drop = probe.acc_clean - probe.acc_augmented
    sigma = binomial_sigma(probe.acc_clean, probe.images)
    if drop < max(AUG_DROP, SIGMAS * sigma):
        return None
    return Finding(
        rule="aug_destroys_signal",
        severity="high" if drop >= AUG_DROP_HIGH else "medium",
        title=f"augmentation `{probe.preset}` removes what the label depends on",
        evidence=(
            f"the selected weights classify {probe.acc_clean:.3f} of {probe.images} training "
            f"images correctly un-augmented but only {probe.acc_augmented:.3f} after the run's "
            f"`{probe.preset}` augmentation (-{drop:.3f}, {drop / sigma:.1f} sigma)"
        ),
        fix=(
            "a preset that keeps the label: `--aug xray` for chest X-rays (no flips, ±10°), "
            "`--aug oct`/`--aug mri` (no vertical flip), `--aug light` when unsure"
        ),
        numbers={
            "acc_clean": probe.acc_clean,
            "acc_augmented": probe.acc_augmented,
            "drop": drop,
            "images": probe.images,
            "preset": probe.preset,
        },
        strength=drop / AUG_DROP,
    )
