"""Rules over another tool's history: each reads a `Phase` (or two neighbours) and returns a
`Finding`, or None when it does not apply or cannot know.

Each rule checks its own preconditions first (the columns it needs exist, the phase is long
enough, the val size is known where noise matters) and stays silent otherwise: a rule that
cannot tell is worth nothing, one that is wrong costs the user a day. Rule ids are the checklist
kinds of bench/diagnose_wild/KEY_FORMAT.md. Accuracy changes are weighed in units of the
binomial noise of the validation set, sigma = sqrt(p(1-p)/n_val), when n_val is known (given,
read from the script, or inferred from the granularity of the accuracies: `infer_val_size`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.advice import fix_for
from medfit.diagnose.foreign.history import History, Phase

# A trend needs a few epochs: fewer say nothing about overfitting or a plateau.
MIN_TREND_EPOCHS = 4
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
# Underfitting: the training set itself is not learned (train accuracy under 0.80 at the end)
# and the last third of the phase added under 0.02: more of the same will not fix it.
UNDERFIT_ACC = 0.80
FLAT_GAIN = 0.02
# Still improving at the end: val gained this much over the last 3 epochs and is at its best,
# or the val loss fell 3% over them to its lowest; either way the train loss fell 3% too.
STILL_GAIN = 0.01
STILL_LOSS_FALL = 0.03
# A loss spike: the epoch-mean train loss rises 50% and by a tenth of where the phase started.
LOSS_SPIKE = 1.5
# A train loss that climbs to 1.5x its minimum (3-epoch means) and stays there for 5 epochs: a
# healthy optimiser never makes the training loss worse for that long.
RISING_LOSS = 1.5
# Fine-tuning shock: the first epoch of a phase loses this much val accuracy (or 3 sigma) on the
# last epoch of the phase before it, while the training numbers carry on.
SHOCK = 0.10
# Val accuracy and val loss identical to 4 decimals over this many epochs: outputs not moving.
FROZEN_EPOCHS = 3
# A val set smaller than this cannot tell epochs apart (one image moves accuracy by 1%+).
SMALL_VAL = 100
# Fine-tuning every layer of a pretrained network with no head-only stage first: Adam-type LRs
# above 1e-4 and SGD (momentum) above 1e-3 move pretrained weights faster than the features survive
# (Keras' fine-tuning guide: Adam 1e-5 after a head stage; KEY_FORMAT.md). Ultralytics'
# optimizer=auto gives AdamW lr = 0.002 * 5 / (4 + classes) (at most 0.0017), else SGD 0.01.
ADAM_FULL_MAX = 1e-4
SGD_FULL_MAX = 1e-3
ULTRALYTICS_ADAMW_MAX = 0.002
# A fine-tuning step within 15% of a head-only step: the compute did not show in the time.
SAME_TIME = 1.15
# Seconds per step no GPU takes for an ImageNet-size CNN on a batch of 32 (a T4 does a ResNet50
# step in ~0.15 s): a device unknown from the script is a CPU at this speed.
CPU_STEP_S = 2.0
# Seconds per step above this on a GPU: a ResNet50 step on 32 images at 224 px takes ~0.1 s
# even on a T4, so the rest is waiting for the input pipeline.
SLOW_STEP_S = 0.15


@dataclass
class Context:
    """What the rules know beyond the history."""

    history: History
    n_val: int | None  # validation images (given, or from the script): every phase
    n_val_source: str  # "given with --val-size" | "from the script" | ""
    classes: int | None
    framework: str
    family: str | None  # architecture family, for advice
    pretrained: bool | None
    device: str | None
    early_stopping: bool | None  # None unknown
    fits: int | None = None  # training calls in the script (None: no script)
    bodies: list[str] | None = None  # each training call's trainable body (frozen|partial|all)
    pipeline: str | None = None  # the script's input pipeline (per_step_decode | cached | ...)
    inferred: dict[str, int] = field(default_factory=dict)  # phase name -> n from the log

    def val_size(self, phase: Phase) -> int | None:
        """The phase's val images: given/script, else inferred from its accuracies (the two
        phases of one job can validate on different sets)."""
        return self.n_val or self.inferred.get(phase.name)

    def __post_init__(self) -> None:
        """Each phase's val size from its own accuracies, else from all phases together (a
        phase with few distinct values borrows the others')."""
        if self.n_val is not None:
            return
        shared = infer_val_size(self.history.phases)
        for phase in self.history.phases:
            n = infer_val_size([phase]) or shared
            if n is not None:
                self.inferred[phase.name] = n

    def same_val_set(self, a: Phase, b: Phase) -> bool:
        """Whether two phases can be validated on one set: True unless their accuracies say
        otherwise (a phase whose values all fall on a coarser grid than the shared one, by a
        chance under 1 in 1,000, has its own smaller set)."""
        if self.n_val is not None:
            return True
        shared = infer_val_size([a, b])
        if shared is None:
            return not (a.name in self.inferred and b.name in self.inferred)
        for phase in (a, b):
            n = infer_val_size([phase])
            distinct = len({round(v, 6) for v in _finite(phase.column("val_acc"))})
            if n is not None and n < shared and (n / shared) ** distinct < 1e-3:
                return False
        return True


def sigma(p: float, n: int | None) -> float:
    if not n or not math.isfinite(p):
        return 0.0
    p = min(max(p, 0.01), 0.99)
    return math.sqrt(p * (1 - p) / n)


def _finite(xs: list[float]) -> np.ndarray:
    a = np.asarray(xs, dtype=float)
    return a[np.isfinite(a)]


def _f(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "n/a"


def primary(phase: Phase) -> tuple[str, list[float], bool] | None:
    """The val score a reader would watch: accuracy, else AUC/F1/balanced accuracy (higher is
    better), else the val loss (lower is better)."""
    for name in ("val_acc", "val_balanced_acc", "val_f1", "val_auc"):
        if phase.has(name, 2):
            return name, phase.column(name), True
    if phase.has("val_loss", 2):
        return "val_loss", phase.column("val_loss"), False
    return None


def finding(
    rule: str, severity: str, title: str, evidence: str, ctx: Context, **numbers: object
) -> Finding:
    strength = float(numbers.pop("strength", 1.0))  # type: ignore[arg-type]
    return Finding(
        rule=rule,
        severity=severity,
        title=title,
        evidence=evidence,
        fix=fix_for(rule, ctx.framework, ctx.family, ctx.pretrained),
        numbers={**numbers, "source": "log"},
        strength=strength,
    )


# --- the val set --------------------------------------------------------------------------------


def infer_val_size(phases: list[Phase], max_n: int = 2000) -> int | None:
    """The smallest n with every val accuracy a multiple of 1/n, when the values make that
    unambiguous: enough distinct values that a chance fit is under 1 in 1,000."""
    values = sorted({round(v, 7) for p in phases for v in _finite(p.column("val_acc"))})
    values = [v for v in values if 0.0 < v < 1.0]
    if len(values) < 3:
        return None
    printed_4 = all(abs(v * 1e4 - round(v * 1e4)) < 1e-3 for v in values)
    tol = 5.1e-5 if printed_4 else 2e-6
    for n in range(2, max_n + 1):
        if all(abs(v * n - round(v * n)) <= tol * n for v in values):
            chance = min(1.0, 2 * tol * n) ** len(values)
            return n if chance < 1e-3 else None
    return None


def small_val(ctx: Context) -> Finding | None:
    sizes = [(ctx.val_size(p), p) for p in ctx.history.phases]
    small = [(n, p) for n, p in sizes if n is not None and n < SMALL_VAL]
    if not small:
        return None
    n, phase = min(small, key=lambda x: x[0])
    how = ctx.n_val_source or f"every val accuracy{_in(phase, ctx)} is a multiple of 1/{n}"
    selected = ctx.history.best_reported is not None or ctx.early_stopping
    return finding(
        "small_val",
        "high" if selected or n < 50 else "medium",
        f"the validation set has {n} images: too few to choose an epoch or a model",
        f"val size {n} ({how}): one image moves val accuracy by {float(Fraction(1, n)):.3f}, "
        f"and its 95% interval at 0.85 is ±{1.96 * sigma(0.85, n):.2f}"
        + ("; checkpoints/early stopping select on it" if selected else ""),
        ctx,
        n_val=n,
        strength=2.0,
    )


# --- curves -------------------------------------------------------------------------------------


def _smooth(x: np.ndarray) -> np.ndarray:
    """3-epoch running mean (the ends use what they have): one noisy epoch is not a trend."""
    return np.array([x[max(0, i - 1) : i + 2].mean() for i in range(len(x))])


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


def underfitting(phase: Phase, ctx: Context, last: bool) -> Finding | None:
    if not phase.has("train_acc", MIN_TREND_EPOCHS + 1):
        return None
    ta = _finite(phase.column("train_acc"))
    third = max(2, len(ta) // 3)
    end = float(np.mean(ta[-2:]))
    gain = float(np.max(ta[-third:]) - np.max(ta[:-third])) if len(ta) > third else 0.0
    chance = 1.0 / ctx.classes if ctx.classes else None
    va = _finite(phase.column("val_acc"))
    if end >= UNDERFIT_ACC or gain >= FLAT_GAIN:
        return None
    if len(va) and float(np.mean(va[-2:])) > end + 0.02:
        return None  # val above train: dropout/augmentation lower the train number, not capacity
    level = f" (chance {chance:.2f})" if chance else ""
    return finding(
        "underfitting",
        "high" if chance and end < chance + 0.1 else "medium",
        f"the model does not fit its training data{_in(phase, ctx)}: train accuracy {end:.2f}",
        f"train accuracy {ta[0]:.3f} -> {end:.3f}{level}; the last {third} epochs added "
        f"{gain:+.3f}: more epochs of the same will not fix it",
        ctx,
        phase=phase.name,
        train_acc=end,
        strength=(UNDERFIT_ACC - end) / 0.1,
    )


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


def lr_too_high(phase: Phase, ctx: Context) -> Finding | None:
    tl = np.array(phase.column("train_loss"), dtype=float)
    if not phase.has("train_loss", 2):
        return None
    signs = []
    nonfinite = [
        e
        for e, x in zip(phase.epochs, tl, strict=True)
        if np.isinf(x) or (np.isnan(x) and "train_loss" in phase.values)
    ]
    if nonfinite and "train_loss" in phase.values and any(not math.isnan(x) for x in tl):
        signs.append(f"train loss NaN/inf at epoch(s) {', '.join(map(str, nonfinite[:5]))}")
    finite = tl[np.isfinite(tl)]
    ep = np.array(phase.epochs)[np.isfinite(tl)]
    if len(finite) >= 3:
        span = float(finite.max() - finite.min())
        acc = np.array(phase.column("train_acc"), dtype=float)[np.isfinite(tl)]
        for i in range(1, len(finite)):
            before, after = float(finite[i - 1]), float(finite[i])
            jump = after >= LOSS_SPIKE * before and after - before >= 0.25 * span
            back = after >= float(finite[:i].min()) + 0.5 * span  # not just noise at the floor
            fell = not np.isfinite(acc[i]) or acc[i - 1] - acc[i] >= 0.05
            if before > 0 and jump and back and fell:
                signs.append(f"train loss {before:.3f} -> {after:.3f} at epoch {ep[i]}")
    if len(finite) >= 6:
        sm = _smooth(finite)
        i = int(np.argmin(sm))
        if len(finite) - 1 - i >= 5 and sm[-1] >= RISING_LOSS * sm[i]:
            signs.append(
                f"the train loss climbs from {finite[i]:.3f} (epoch {ep[i]}) to "
                f"{finite[-1]:.3f} over the following {len(finite) - 1 - i} epochs"
            )
    if not signs:
        return None
    return finding(
        "lr_too_high",
        "high" if nonfinite else "medium",
        f"the training loss jumps up{_in(phase, ctx)}: the optimiser overshoots",
        "; ".join(signs[:4]),
        ctx,
        phase=phase.name,
        strength=1.5 if nonfinite else 1.0,
    )


def lr_too_low(phase: Phase, ctx: Context) -> Finding | None:
    lr = _finite(phase.column("lr"))
    tl = _finite(phase.column("train_loss"))
    if len(tl) < 5 or not len(lr) or tl[0] <= 0:
        return None
    fall = float(1 - tl[-1] / tl[0])
    ta = _finite(phase.column("train_acc"))
    unfit = not len(ta) or ta[-1] < UNDERFIT_ACC
    # Adam at 1e-5 is the usual fine-tuning LR (its loss moves slowly by design); below ~2e-6
    # nothing moves in a few epochs.
    peak = float(np.max(lr))
    tiny = (peak <= 2e-6 and fall < 0.25) or (peak <= 1e-5 and fall < 0.02)
    if not (tiny and unfit and phase.epochs[0] <= 1):
        return None
    return finding(
        "lr_too_low",
        "medium",
        f"the learning rate ({np.max(lr):.0e}) is too small to move the weights{_in(phase, ctx)}",
        f"lr {np.max(lr):.1e} for {len(tl)} epochs; train loss {tl[0]:.3f} -> {tl[-1]:.3f} "
        f"({fall:.0%} lower)",
        ctx,
        phase=phase.name,
        strength=1.5,
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


def finetune_shock(before: Phase, after: Phase, ctx: Context) -> Finding | None:
    if not (before.has("val_acc") and after.has("val_acc")) or not continues(before, after):
        return None
    v0, v1 = _finite(before.column("val_acc"))[-1], _finite(after.column("val_acc"))[0]
    drop = float(v0 - v1)
    if not ctx.same_val_set(before, after):
        return None  # the phases validate on different sets: nothing to compare
    n0 = ctx.val_size(before)
    threshold = max(SHOCK, SWING_SIGMAS * sigma(float(v0), n0))
    if drop < threshold:
        return None
    return finding(
        "finetune_shock",
        "high",
        f"val accuracy collapses when {after.name} starts",
        f"val accuracy {v0:.3f} at the end of {before.name}, {v1:.3f} in the first epoch of "
        f"{after.name} (-{drop:.2f}) while training carries on from where it was",
        ctx,
        phase=after.name,
        strength=drop / SHOCK,
    )


def continues(before: Phase, after: Phase) -> bool:
    """Whether `after` continues `before`'s weights (fine-tuning) rather than starting over: its
    first training numbers are near the end of `before`, not near its start."""
    for name in ("train_acc", "train_loss"):
        b, a = _finite(before.column(name)), _finite(after.column(name))
        if len(b) >= 2 and len(a):
            return bool(abs(a[0] - b[-1]) < abs(a[0] - b[0]))
    return False


def same_start(first: Phase, other: Phase) -> bool:
    """`other` starts like `first` did (same planned length, first-epoch train loss within 10%):
    the same training run again, not a later stage or another experiment."""
    if first.planned != other.planned or not (first.has("train_loss") and other.has("train_loss")):
        return False
    a, b = _finite(first.column("train_loss"))[0], _finite(other.column("train_loss"))[0]
    return bool(a > 0 and abs(b - a) <= 0.1 * a)


def rerun(history: History, ctx: Context) -> Finding | None:
    """Phases of one log file that start over the way the first did: a re-run (a notebook cell
    run again), not stages of one training or another experiment."""
    phases = history.phases
    staged = ctx.fits is not None and ctx.fits >= len(phases)  # the script trains that often
    starts = [
        i
        for i in range(1, len(phases))
        if len(history.paths) == 1
        and not staged
        and phases[i].epochs[:1] == phases[0].epochs[:1]
        and phases[i].planned == phases[0].planned
        and same_start(phases[0], phases[i])
        and not continues(phases[i - 1], phases[i])
    ]
    first = history.phases[0].epochs[0] if history.phases and history.phases[0].epochs else 0
    late = first > 1 or (first == 1 and history.framework in ("keras",) and "CSV" in history.format)
    if starts:
        names = ", ".join(history.phases[i].name for i in starts)
        how = "starts over the way the first run did (the same training run again)"
        return finding(
            "resumed_or_pretrained_run",
            "low",
            f"the log holds {len(starts) + 1} runs of the same training, not one",
            f"{names} counts from epoch {phases[starts[0]].epochs[0]} again and {how}: the curves "
            "and the final model come from the last run",
            ctx,
            strength=0.5,
        )
    if late:
        return finding(
            "resumed_or_pretrained_run",
            "low",
            f"the history starts at epoch {first}: a continued run",
            f"the first epoch in the file is {first}; the epochs before it (and the weights they "
            "left) are not in this history",
            ctx,
            strength=0.5,
        )
    return None


def finetune_lr_high(history: History, ctx: Context) -> Finding | None:
    """The LR a trainer logs per epoch, for the trainers that fine-tune every layer of a
    pretrained network from the first step (no head-only stage): Ultralytics (`optimizer=auto`
    picks AdamW below 10k iterations, SGD above) and the Hugging Face Trainer (AdamW). Keras and
    the rest log an LR without saying which layers train: the script decides those."""
    if ctx.framework not in ("ultralytics", "hf") or ctx.pretrained is False:
        return None
    lrs = [x for p in history.phases for x in _finite(p.column("lr"))]
    if not lrs:
        return None
    peak = max(lrs)
    sgd = ctx.framework == "ultralytics" and peak > ULTRALYTICS_ADAMW_MAX
    limit = SGD_FULL_MAX if sgd else ADAM_FULL_MAX
    if peak <= limit:  # 1e-4 itself is the usual full fine-tuning LR for Adam
        return None
    optimizer = "SGD" if sgd else "AdamW"
    source = next(p.source["lr"] for p in history.phases if "lr" in p.source)
    return finding(
        "finetune_lr_high",
        "medium",
        f"{optimizer} at {peak:.1e} on every layer of a pretrained network from the first step",
        f"{source} peaks at {peak:.2e} ({optimizer}); {ctx.framework} trains all layers with no "
        f"head-only stage, where fine-tuning LRs for {optimizer} stay below {limit:.0e}: the "
        "random head's first gradients reach the pretrained features at full size",
        ctx,
        lr=peak,
        strength=peak / limit,
    )


def _step_time(phase: Phase) -> float | None:
    """Median seconds per step (or per epoch, when the log gives no steps), without the first
    epoch (graph tracing, cache filling)."""
    for series in (phase.step_s, phase.epoch_s):
        values = _finite(series[1:] if len(series) > 1 else series)
        if len(values):
            return float(np.median(values))
    return None


def input_bound(history: History, ctx: Context) -> Finding | None:
    """Training waits for its input pipeline. The clearest evidence is a fine-tuning phase that
    takes no longer per step than the head-only phase before it: backpropagating through the
    whole backbone costs 2-3x the compute of a frozen one, so equal times mean the data sets the
    pace. Else a GPU run whose script decodes images per step and whose steps are slow."""
    if ctx.device == "cpu" or ctx.pipeline in ("cached", "in_memory"):
        return None  # on a CPU the model's compute is the bottleneck; a cache feeds fast
    phases = history.phases
    bodies = ctx.bodies if ctx.bodies and len(ctx.bodies) == len(phases) else None
    for i in range(1, len(phases)):
        if bodies is None or bodies[i - 1] != "frozen" or bodies[i] not in ("partial", "all"):
            continue
        head, full = _step_time(phases[i - 1]), _step_time(phases[i])
        cpu_like = _finite(phases[i].step_s).size and head is not None and head >= CPU_STEP_S
        if head and full and full <= SAME_TIME * head and not cpu_like:
            unit = "step" if _finite(phases[i].step_s).size else "epoch"
            return finding(
                "input_bound",
                "medium",
                "training waits for data: fine-tuning the backbone costs no more time than the "
                "frozen head stage",
                f"{head:.3g} s per {unit} with the backbone frozen ({phases[i - 1].name}), "
                f"{full:.3g} s with it trainable ({phases[i].name}): backpropagating through "
                "the backbone should cost 2-3x more, so the input pipeline sets the pace",
                ctx,
                step_s=[head, full],
                strength=1.5,
            )
    if ctx.device != "gpu" or ctx.pipeline != "per_step_decode":
        return None
    steps = [s for p in phases for s in _finite(p.step_s)[1:]]  # epoch 1 traces, fills caches
    if len(steps) < 2 or (median := float(np.median(steps))) < SLOW_STEP_S:
        return None
    return finding(
        "input_bound",
        "medium",
        "the GPU waits for data: images are decoded and augmented on the CPU each step",
        f"median {median * 1000:.0f} ms per step after the first epoch on a GPU run whose "
        "script decodes every image on every step",
        ctx,
        step_s=median,
        strength=median / SLOW_STEP_S,
    )


def stopped_early(phase: Phase, ctx: Context) -> bool:
    """The phase ended before the epochs it planned ("Epoch 17/25" last), or the script uses
    early stopping: what came after the best epoch was the stopper's patience."""
    planned_end = phase.planned is not None and phase.epochs[-1] < phase.planned
    return planned_end or bool(ctx.early_stopping)


def _in(phase: Phase, ctx: Context) -> str:
    return f" ({phase.name})" if len(ctx.history.phases) > 1 else ""


def log_findings(ctx: Context) -> list[Finding]:
    """Every log rule on every phase, and across neighbouring phases; unranked."""
    found: list[Finding | None] = [
        small_val(ctx),
        rerun(ctx.history, ctx),
        input_bound(ctx.history, ctx),
        finetune_lr_high(ctx.history, ctx),
    ]
    phases = ctx.history.phases
    for i, phase in enumerate(phases):
        last = i == len(phases) - 1
        found += [
            overfitting(phase, ctx),
            val_plateau(phase, ctx),
            val_instability(phase, ctx),
            underfitting(phase, ctx, last),
            lr_too_high(phase, ctx),
            lr_too_low(phase, ctx),
            collapsed_predictions(phase, ctx),
        ]
        if last:
            found.append(undertrained(phase, ctx))
        if i:
            found.append(finetune_shock(phases[i - 1], phase, ctx))
    return _one_per_rule([f for f in found if f is not None])


def _one_per_rule(found: list[Finding]) -> list[Finding]:
    """The strongest finding of each rule; the phases it also holds in are named in it."""
    best: dict[str, Finding] = {}
    also: dict[str, list[str]] = {}
    for f in found:
        if f.rule not in best or f.strength > best[f.rule].strength:
            if f.rule in best:
                also.setdefault(f.rule, []).append(str(best[f.rule].numbers.get("phase", "")))
            best[f.rule] = f
        else:
            also.setdefault(f.rule, []).append(str(f.numbers.get("phase", "")))
    out = []
    for rule, f in best.items():
        more = [p for p in also.get(rule, []) if p]
        if more:
            f = Finding(
                f.rule,
                f.severity,
                f.title,
                f"{f.evidence}; also in {', '.join(more)}",
                f.fix,
                f.numbers,
                f.strength,
            )
        out.append(f)
    return out
