"""Rules over one phase's val curves: overfitting, val_plateau, val_instability, undertrained and
collapsed_predictions (outputs that stopped changing)."""

from __future__ import annotations

import math

import numpy as np

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.history import Phase
from medfit.diagnose.foreign.log_rules.context import (
    MIN_TREND_EPOCHS,
    SMALL_VAL,
    Context,
    _finite,
    _in,
    _smooth,
    finding,
    primary,
    sigma,
)

# Val loss (3-epoch mean) 20% above its minimum (50%: high), each of the last 3 epochs above it
# by half that, while the train loss fell another 10% since: the textbook overfitting picture.
# An epoch-mean val loss moves 10-15% from noise alone when it is small or the val set is.
VAL_LOSS_RISE = 0.20
VAL_LOSS_RISE_HIGH = 0.50
TRAIN_LOSS_FALL = 0.10
VAL_LOSS_NO_TRAIN = 0.50  # no train loss to compare with: the rise alone must be large
VAL_LOSS_DOUBLE = 1.0  # a val set under SMALL_VAL images: only a doubling is beyond its noise
# Late train-val accuracy gap (mean of the last 3 epochs): 0.10 is a gap a senior reader calls
# overfitting when val no longer improves; train accuracy on augmented batches understates it.
GAP = 0.10
GAP_HIGH = 0.20
# A plateau wastes epochs when the best val score came this many epochs (or this share of the
# phase, at least PLATEAU_MIN) before the end; "improving" means beating it by more than noise.
PLATEAU_EPOCHS = 10
PLATEAU_SHARE = 1 / 3
PLATEAU_MIN = 5  # the share alone would call 3 epochs of a 9-epoch run a plateau
# Swings: a drop of at least 3 sigma (and 0.03) with the val size known, else 0.10, at least
# twice; or a val loss that jumps 30% and falls back 20% the next epoch, at least twice.
SWING = 0.10
SWING_SIGMAS = 3.0
MIN_SWING = 0.03
MIN_SWINGS = 2
LOSS_SPIKE_UP = 1.3
LOSS_SPIKE_BACK = 1.2
# Still improving at the end: val gained this much over the last 3 epochs and is at its best,
# or the val loss fell 3% over them to its lowest; either way the train loss fell 3% too.
STILL_GAIN = 0.01
STILL_LOSS_FALL = 0.03
# Val accuracy and val loss identical to 4 decimals over this many epochs: outputs not moving.
FROZEN_EPOCHS = 3


def _loss_rise(vl: np.ndarray, min_after: int = 3) -> tuple[int, float, bool] | None:
    """(index of the smoothed val-loss minimum, the rise of the smoothed end over it, whether
    each of the last 3 epochs sits above the minimum by half that threshold's margin)."""
    sv = _smooth(vl)
    i = int(np.argmin(sv))
    if len(vl) - 1 - i < min_after or sv[i] <= 0:
        return None
    rise = float(sv[-1] / sv[i] - 1)
    return i, rise, bool(np.all(vl[-3:] > sv[i] * (1 + rise / 2)))


def overfitting(phase: Phase, ctx: Context) -> Finding | None:
    """Val loss rising while the train loss falls, or a late train-val accuracy gap. On a val
    set under SMALL_VAL images only a doubling of the val loss counts (anything less is its
    noise); without a train loss (Hugging Face logs it per step) a 50% rise with val accuracy
    not improving."""
    n_val = ctx.val_size(phase)
    if len(phase) < MIN_TREND_EPOCHS:
        return None
    small = n_val is not None and n_val < SMALL_VAL
    evidence, strength, severity = [], 1.0, "medium"
    comparable = ctx.framework != "ultralytics"  # its val/loss is not on the train loss's scale
    vl_all, tl_all = np.array(phase.column("val_loss")), np.array(phase.column("train_loss"))
    has_train = phase.has("train_loss", MIN_TREND_EPOCHS)
    if comparable and phase.has("val_loss", MIN_TREND_EPOCHS):
        ok = np.isfinite(vl_all) & (np.isfinite(tl_all) if has_train else True)
        vl, tl, ep = vl_all[ok], tl_all[ok], np.array(phase.epochs)[ok]
        needed = VAL_LOSS_DOUBLE if small else VAL_LOSS_RISE if has_train else VAL_LOSS_NO_TRAIN
        found = _loss_rise(vl) if len(vl) >= MIN_TREND_EPOCHS else None
        if found is not None:
            i, rise, persistent = found
            fall = float(1 - tl[-1] / tl[i]) if has_train and tl[i] > 0 else None
            va = _finite(phase.column("val_acc"))
            acc_flat = not len(va) or float(np.max(va[-3:])) <= float(np.max(va)) + 1e-9
            train_ok = fall >= TRAIN_LOSS_FALL if fall is not None else acc_flat
            if rise >= needed and persistent and train_ok:
                train = (
                    f" while the train loss fell from {tl[i]:.3f} to {tl[-1]:.3f}"
                    if fall is not None
                    else " while val accuracy did not improve"
                )
                evidence.append(
                    f"val loss rose from {vl[i]:.3f} (epoch {ep[i]}) to {vl[-1]:.3f}{train}"
                )
                strength = max(strength, rise / needed)
                severity = "high" if rise >= VAL_LOSS_RISE_HIGH and not small else severity
    if (
        not small
        and phase.has("train_acc", MIN_TREND_EPOCHS)
        and phase.has("val_acc", MIN_TREND_EPOCHS)
    ):
        ta, va = np.array(phase.column("train_acc")), np.array(phase.column("val_acc"))
        ok = np.isfinite(ta) & np.isfinite(va)
        ta, va = ta[ok], va[ok]
        gap = float(np.mean(ta[-3:]) - np.mean(va[-3:]))
        noise = 2 * sigma(float(va[-1]), n_val)
        no_gain = float(np.max(va[-3:])) <= float(np.max(va)) + 1e-9 and len(va) >= 6
        if gap >= max(GAP, noise) and (no_gain or evidence):
            evidence.append(
                f"train accuracy {np.mean(ta[-3:]):.3f} vs val {np.mean(va[-3:]):.3f} over the "
                f"last 3 epochs (gap {gap:.2f})"
            )
            strength = max(strength, gap / GAP)
            severity = "high" if gap >= GAP_HIGH else severity
    if not evidence:
        return None
    return finding(
        "overfitting",
        severity,
        f"overfitting{_in(phase, ctx)}: the model fits the training set, not the validation set",
        "; ".join(evidence),
        ctx,
        phase=phase.name,
        strength=strength,
    )


def _plateau_start(
    values: list[float], higher: bool, n_val: int | None
) -> tuple[int, int, float] | None:
    """(start, best, delta): the first epoch index from which no later epoch beats it by more
    than noise, the best index, and that noise margin; None with too few values."""
    v = np.array(values, dtype=float)
    v = np.where(np.isfinite(v), v if higher else -v, np.nan)
    if np.sum(np.isfinite(v)) < MIN_TREND_EPOCHS:
        return None
    top = float(np.nanmax(v))
    delta = max(0.005, sigma(abs(top), n_val)) if higher else 0.01 * abs(top)
    filled = np.where(np.isfinite(v), v, -np.inf)
    start = next(i for i in range(len(v)) if filled[i:].max() <= filled[i] + delta)
    return start, int(np.argmax(filled)), delta


def val_plateau(phase: Phase, ctx: Context) -> Finding | None:
    """Epochs spent after the val score stopped improving — by either the score or the val
    loss (whichever a checkpoint monitors: one still improving means the run still moves)."""
    score = primary(phase)
    span = phase.epochs[-1] - phase.epochs[0] + 1 if phase.epochs else 0
    if score is None or span < 2 * MIN_TREND_EPOCHS:
        return None
    name, values, higher = score
    n_val = ctx.val_size(phase)
    found = _plateau_start(values, higher, n_val)
    if found is None:
        return None
    start, best, delta = found
    if name != "val_loss" and phase.has("val_loss", MIN_TREND_EPOCHS):
        loss = _plateau_start(phase.column("val_loss"), False, None)
        start = max(start, loss[0]) if loss else start
    ep = phase.epochs
    wasted = ep[-1] - ep[start]  # in epochs, not rows: an elided stretch ("...") still ran
    # Without the script, early stopping is unknown: its patience (3-10 epochs) looks like this.
    share_ok = ctx.early_stopping is False and wasted >= max(
        PLATEAU_MIN, PLATEAU_SHARE * len(values)
    )
    if wasted < PLATEAU_EPOCHS and not share_ok:
        return None
    if stopped_early(phase, ctx):
        return None  # early stopping ended it: the epochs after the best are its patience
    train = np.array(phase.column("train_loss"), dtype=float)
    still = ""
    before, end = float(train[start]), float(train[-1])
    if math.isfinite(before) and before > 0 and end < before * (1 - TRAIN_LOSS_FALL):
        still = f"; the train loss kept falling ({before:.3f} -> {end:.3f})"
    return finding(
        "val_plateau",
        "medium",
        f"{name} stopped improving {wasted} epochs before the end{_in(phase, ctx)}",
        f"{name} {values[best]:.4f} at epoch {ep[best]}; from epoch {ep[start]} on no epoch "
        f"improved on it by more than {delta:.3f}"
        + (" (nor the val loss)" if name != "val_loss" and phase.has("val_loss") else "")
        + f" (epochs {ep[start + 1]}-{ep[-1]}){still}",
        ctx,
        phase=phase.name,
        wasted_epochs=wasted,
        best_epoch=int(ep[best]),
        strength=wasted / PLATEAU_EPOCHS,
    )


def val_instability(phase: Phase, ctx: Context) -> Finding | None:
    """Val accuracy dropping by more than its noise again and again (3 sigma with the val size
    known, else 0.10), or the val loss spiking up and back while the train loss moves smoothly
    (a loss is a mean over every image: its spikes are the model, whatever the val size)."""
    if len(phase) < MIN_TREND_EPOCHS:
        return None
    n_val = ctx.val_size(phase)
    if n_val is not None and n_val < SMALL_VAL:
        return None  # swings of a tiny val set are its size (small_val says so), not the model
    evidence, count = [], 0
    va = _finite(phase.column("val_acc"))
    if len(va) >= MIN_TREND_EPOCHS:
        noise = SWING_SIGMAS * sigma(float(np.median(va)), n_val)
        threshold = max(noise, MIN_SWING) if n_val else SWING
        d = np.diff(va[1:])  # the first epoch of a phase is a start, not a swing
        drops = d[d <= -threshold]
        if len(drops) >= MIN_SWINGS:
            count = len(drops)
            weighed = f"{SWING_SIGMAS:g} sigma for {n_val} val images" if n_val else "size unknown"
            evidence.append(
                f"{len(drops)} drops of val accuracy by {threshold:.2f} or more ({weighed}): "
                + " ".join(f"{x:.2f}" for x in va[:30])
                + (" ..." if len(va) > 30 else "")
            )
    spikes = _loss_spikes(phase)
    if spikes:
        count = max(count, len(spikes))
        evidence.append(
            f"val loss spikes up and back at epoch(s) {', '.join(map(str, spikes[:6]))} while "
            "the train loss moves smoothly"
        )
    if not evidence:
        return None
    return finding(
        "val_instability",
        "high" if count >= 3 else "medium",
        f"validation results swing from epoch to epoch{_in(phase, ctx)}",
        "; ".join(evidence),
        ctx,
        phase=phase.name,
        drops=count,
        strength=count / MIN_SWINGS,
    )


def _loss_spikes(phase: Phase) -> list[int]:
    """Epochs (after the first two) where the val loss jumps LOSS_SPIKE_UP and falls back by
    LOSS_SPIKE_BACK the next epoch, counted only when the train loss never does the same."""
    vl, tl = np.array(phase.column("val_loss")), np.array(phase.column("train_loss"))
    if not (np.isfinite(vl).sum() >= MIN_TREND_EPOCHS + 2 and np.isfinite(tl).sum() >= 3):
        return []

    def spikes(x: np.ndarray) -> list[int]:
        return [
            i
            for i in range(2, len(x) - 1)
            if np.isfinite(x[i - 1 : i + 2]).all()
            and x[i] >= LOSS_SPIKE_UP * x[i - 1]
            and x[i + 1] * LOSS_SPIKE_BACK <= x[i]
        ]

    if spikes(tl):
        return []  # the whole run jumps: that is the LR (lr_too_high), not val
    found = spikes(vl)
    return [phase.epochs[i] for i in found] if len(found) >= MIN_SWINGS else []


def undertrained(phase: Phase, ctx: Context) -> Finding | None:
    """The last phase ended at its planned length while still improving: the val score gained
    more than its noise over the last epochs and is at its best, or the val loss is at its
    minimum and still falling; and the train loss still falls."""
    if len(phase) < 2 or stopped_early(phase, ctx):
        return None
    k = min(3, len(phase))  # the last k epochs (a 2-epoch fine-tune phase counts)
    signs = []
    score = primary(phase)
    if score is not None and score[0] != "val_loss":
        name, values, _ = score
        v = _finite(values)
        if len(v) >= k:
            gain = float(v[-1] - v[-k])
            needed = max(STILL_GAIN, 2 * sigma(float(v[-1]), ctx.val_size(phase)))
            if gain >= needed and v[-1] >= v.max() - 1e-9:
                signs.append(f"{name} {v[-k]:.4f} -> {v[-1]:.4f} over the last {k} epochs")
    vl = _finite(phase.column("val_loss"))
    if len(vl) >= k and vl[-1] <= vl.min() + 1e-12 and vl[-1] <= vl[-k] * (1 - STILL_LOSS_FALL):
        signs.append(f"val loss {vl[-k]:.4f} -> {vl[-1]:.4f}, its lowest at the last epoch")
    train = _finite(phase.column("train_loss"))
    falling = len(train) < k or train[-1] < train[-k] * (1 - STILL_LOSS_FALL)
    if not signs or not falling:
        return None
    end = f"{phase.epochs[-1]}" + (f" of {phase.planned}" if phase.planned else "")
    return finding(
        "undertrained",
        "medium",
        f"still improving when training stopped{_in(phase, ctx)}: more epochs would help",
        "; ".join(signs) + f" (the last epoch is {end}, no early stop)",
        ctx,
        phase=phase.name,
        strength=1.0 + 0.5 * len(signs),
    )


def collapsed_predictions(phase: Phase, ctx: Context) -> Finding | None:
    """Val accuracy and val loss (or train accuracy and train loss) identical to 4 decimals over
    several epochs: the network's outputs do not change at all."""
    for split in ("val", "train"):
        acc, loss = phase.column(f"{split}_acc"), phase.column(f"{split}_loss")
        run, best = 1, (1, 0)
        for i in range(1, len(acc)):
            same = all(
                math.isfinite(x[i])
                and math.isfinite(x[i - 1])
                and round(x[i], 4) == round(x[i - 1], 4)
                for x in (acc, loss)
            )
            run = run + 1 if same else 1
            best = max(best, (run, i))
        if best[0] >= FROZEN_EPOCHS:
            run_len, end = best
            start = end - run_len + 1
            return finding(
                "collapsed_predictions",
                "high",
                f"the network's outputs stopped changing{_in(phase, ctx)}",
                f"{split} accuracy {acc[end]:.4f} and {split} loss {loss[end]:.4f} identical for "
                f"epochs {phase.epochs[start]}-{phase.epochs[end]}: every prediction is the same "
                "from epoch to epoch (constant inputs, dead activations, or no weight updates)",
                ctx,
                phase=phase.name,
                strength=run_len / FROZEN_EPOCHS,
            )
    return None


def stopped_early(phase: Phase, ctx: Context) -> bool:
    """The phase ended before the epochs it planned ("Epoch 17/25" last), or the script uses
    early stopping: what came after the best epoch was the stopper's patience."""
    planned_end = phase.planned is not None and phase.epochs[-1] < phase.planned
    return planned_end or bool(ctx.early_stopping)
