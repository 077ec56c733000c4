"""Rules over the training side: underfitting, the learning rate (lr_too_high, lr_too_low, a
trainer's finetune_lr_high) and a training that waits for its input pipeline (input_bound)."""

from __future__ import annotations

import math

import numpy as np

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.history import History, Phase
from medfit.diagnose.foreign.log_rules.context import (
    MIN_TREND_EPOCHS,
    Context,
    _finite,
    _in,
    _smooth,
    finding,
)

# Underfitting: the training set itself is not learned (train accuracy under 0.80 at the end)
# and the last third of the phase added under 0.02: more of the same will not fix it.
UNDERFIT_ACC = 0.80
FLAT_GAIN = 0.02
# A loss spike: the epoch-mean train loss rises 50% and by a tenth of where the phase started.
LOSS_SPIKE = 1.5
# A train loss that climbs to 1.5x its minimum (3-epoch means) and stays there for 5 epochs: a
# healthy optimiser never makes the training loss worse for that long.
RISING_LOSS = 1.5
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
