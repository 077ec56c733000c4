"""`medfit diagnose RUN`: why the curves look like that — ranked findings with evidence and fixes.

from medfit.diagnose import diagnose_run
diagnosis = diagnose_run("runs/blood")          # also writes runs/blood/diagnosis.json
for f in diagnosis.findings: print(f.severity, f.title, f.fix)

Two wings: own/ for runs medfit trained (facts -> rules -> probes -> findings), foreign/ for another
tool's log and training script (log readers and log rules; script/ reads a script, script_rules/
judges it). Shared by both: findings.py (Finding, Diagnosis, ranking), check_rules.py (check.json
as findings) and cli.py (which picks the wing from what it is given).

The names below are loaded on first use, so that `medfit.diagnose.cli` (and `medfit --help`) does
not import torch and timm through `medfit.diagnose.own.run`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfit.diagnose.findings import Diagnosis, Finding
    from medfit.diagnose.own.run import diagnose_run

_EXPORTS = {
    "Diagnosis": "medfit.diagnose.findings",
    "Finding": "medfit.diagnose.findings",
    "diagnose_run": "medfit.diagnose.own.run",
}
__all__ = ["Diagnosis", "Finding", "diagnose_run"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medfit.diagnose' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
