"""Rules over another tool's history: each reads a `Phase` (or two neighbours) and returns a
`Finding`, or None when it does not apply or cannot know.

Each rule checks its own preconditions first (the columns it needs exist, the phase is long
enough, the val size is known where noise matters) and stays silent otherwise: a rule that
cannot tell is worth nothing, one that is wrong costs the user a day. Rule ids are the checklist
kinds of bench/diagnose_wild/KEY_FORMAT.md. Accuracy changes are weighed in units of the
binomial noise of the validation set, sigma = sqrt(p(1-p)/n_val), when n_val is known (given,
read from the script, or inferred from the granularity of the accuracies: `infer_val_size`).

One module per family: context (what the rules share), curves (one phase's val curves), training
(fit, learning rate, input pipeline), phases (the val set, and how phases relate).
"""

from __future__ import annotations

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.log_rules.context import Context
from medfit.diagnose.foreign.log_rules.curves import (
    collapsed_predictions,
    overfitting,
    undertrained,
    val_instability,
    val_plateau,
)
from medfit.diagnose.foreign.log_rules.phases import finetune_shock, rerun, small_val
from medfit.diagnose.foreign.log_rules.training import (
    finetune_lr_high,
    input_bound,
    lr_too_high,
    lr_too_low,
    underfitting,
)

__all__ = ["Context", "log_findings"]


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
