"""The output of `medfit diagnose`: ranked findings, saved as RUN/diagnosis.json.

Schema (the HTML report renders it; keep it stable):
    {"run": str,
     "findings": [{"rule", "severity": high|medium|low|info, "title", "evidence", "fix",
                   "numbers": {...}}],
     "probes": {...},
     "not_applicable": {rule: why}}    # only when rules were skipped (multi-label runs)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfit.files import atomic_write_bytes

SEVERITIES = ("high", "medium", "low", "info")


@dataclass(frozen=True)
class Finding:
    """One cause, the numbers that show it, and the concrete change that addresses it.

    `strength` orders findings of equal severity: how far past its threshold the evidence is
    (1.0 = at the threshold). It is not part of the JSON schema.
    """

    rule: str
    severity: str
    title: str
    evidence: str
    fix: str
    numbers: dict[str, Any] = field(default_factory=dict)
    strength: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "title": self.title,
            "evidence": self.evidence,
            "fix": self.fix,
            "numbers": {k: _plain(v) for k, v in self.numbers.items()},
        }


@dataclass
class Diagnosis:
    run: Path
    findings: list[Finding]
    probes: dict[str, Any]
    # Rules that have no meaning for this run and were not applied, with why (multi-label runs).
    not_applicable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "run": str(self.run),
            "findings": [f.to_dict() for f in self.findings],
            "probes": _plain(self.probes),
        }
        if self.not_applicable:
            out["not_applicable"] = dict(self.not_applicable)
        return out

    def write(self, path: Path) -> Path:
        """Atomically (a reader never sees half a file), strict JSON (NaN -> null)."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(path, lambda f: f.write(text.encode()))
        return path

    def top(self, n: int = 3) -> list[Finding]:
        return self.findings[:n]


def rank(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, the strongest evidence first."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), -f.strength))


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render(diagnosis: Diagnosis) -> str:
    """The terminal view: one block per finding, most serious first."""
    if not diagnosis.findings:
        return f"{diagnosis.run}: no findings; the curves look healthy."
    lines = [f"diagnosis of {diagnosis.run}: {len(diagnosis.findings)} finding(s)"]
    for i, f in enumerate(diagnosis.findings, 1):
        lines.append(f"{i}. [{f.severity}] {f.title}  ({f.rule})")
        lines.append(f"   evidence: {f.evidence}")
        lines.append(f"   fix: {f.fix}")
    return "\n".join(lines)
