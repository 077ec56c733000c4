"""`medfit check`'s findings (check.json) as diagnose findings, shared by both wings.

A medfit run reads its own RUN/check.json (`check_findings`, `check_missing`, among the history
rules of own/history_rules.py); a foreign run with `--data DIR` checks the folder and turns that
document into findings the same way (`check_findings_of`, foreign/run.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from medfit.diagnose.findings import Finding

if TYPE_CHECKING:
    from medfit.diagnose.own.facts import RunFacts

CHECK_SEVERITY = {"critical": "high", "warning": "medium", "info": "low"}
LEAKAGE_KEYS = ("exact_cross_split", "group_leak", "group_same_id", "near_hash", "near_embedding")
LABEL_KEYS = ("label_issues", "exact_conflicting")
# The class_imbalance rule judges imbalance by its effect on the metrics; check's count of it
# would only repeat that.
SKIPPED_CHECK_KEYS = ("imbalance",)


def check_findings(facts: RunFacts) -> list[Finding]:
    """`medfit check`'s verdict (leakage, duplicates, label noise, shortcuts) as findings."""
    if facts.check is None:
        return []
    last = facts.val_score(facts.history[-1]) if facts.history else None
    metric = "macro AUC" if facts.multilabel else "accuracy"
    return check_findings_of(facts.check, last, metric)


def check_findings_of(
    check: dict[str, Any], val_acc: float | None = None, metric: str = "accuracy"
) -> list[Finding]:
    """The findings of one check.json document; `val_acc` (the run's last val score, `metric`:
    accuracy, or a multi-label run's macro AUC) states what leakage does to it."""
    out = []
    for entry in check.get("verdict", []):
        key = str(entry.get("key", ""))
        if key in SKIPPED_CHECK_KEYS:
            continue
        rule = "leakage" if key in LEAKAGE_KEYS else "label_noise" if key in LABEL_KEYS else "data"
        severity = CHECK_SEVERITY.get(str(entry.get("severity")), "info")
        evidence = f"check.json (medfit check {check.get('root', 'DATA')}): {entry.get('title')}"
        if rule == "leakage" and val_acc is not None and math.isfinite(val_acc):
            evidence += (
                f"; this run's val {metric} ({val_acc:.3f}) partly scores "
                f"images the model trained on, so it overstates {metric} on new patients"
            )
        out.append(
            Finding(
                rule=rule,
                severity=severity,
                title=str(entry.get("title", key)),
                evidence=evidence,
                fix=str(entry.get("fix", "")),
                numbers={"check_key": key},
                strength=2.0 if rule == "leakage" else 1.0,
            )
        )
    return out


def check_missing(facts: RunFacts) -> Finding | None:
    """Without check.json nothing rules out leakage, duplicates or label noise."""
    if facts.check is not None:
        return None
    root = facts.config.data.root or "DATA"
    return Finding(
        rule="check_missing",
        severity="low",
        title="the data was not checked for leakage, duplicates or label noise",
        evidence=f"no check.json in {facts.path}",
        fix=f"`medfit check {root} --out {facts.path}`, then diagnose again",
        numbers={},
    )
