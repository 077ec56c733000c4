"""Rules over the val set and how the phases relate: small_val, finetune_shock (a phase that
continues the one before it) and a log that holds a re-run or a continued run."""

from __future__ import annotations

from fractions import Fraction

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.history import History, Phase
from medfit.diagnose.foreign.log_rules.context import (
    SMALL_VAL,
    Context,
    _finite,
    _in,
    finding,
    sigma,
)
from medfit.diagnose.foreign.log_rules.curves import SWING_SIGMAS

# Fine-tuning shock: the first epoch of a phase loses this much val accuracy (or 3 sigma) on the
# last epoch of the phase before it, while the training numbers carry on.
SHOCK = 0.10


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
