"""What the log rules share: `Context` (what they know beyond the history), the val set's size
inferred from the granularity of its accuracies (`infer_val_size`), its binomial noise (`sigma`),
the val score a reader watches (`primary`) and how a finding is written (`finding`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.advice import fix_for
from medfit.diagnose.foreign.history import History, Phase

# A trend needs a few epochs: fewer say nothing about overfitting or a plateau.
MIN_TREND_EPOCHS = 4
# A val set smaller than this cannot tell epochs apart (one image moves accuracy by 1%+).
SMALL_VAL = 100


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


def _smooth(x: np.ndarray) -> np.ndarray:
    """3-epoch running mean (the ends use what they have): one noisy epoch is not a trend."""
    return np.array([x[max(0, i - 1) : i + 2].mean() for i in range(len(x))])


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


def _in(phase: Phase, ctx: Context) -> str:
    return f" ({phase.name})" if len(ctx.history.phases) > 1 else ""


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
