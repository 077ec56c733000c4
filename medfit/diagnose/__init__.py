"""`medfit diagnose RUN`: why the curves look like that — ranked findings with evidence and fixes.

from medfit.diagnose import diagnose_run
diagnosis = diagnose_run("runs/blood")          # also writes runs/blood/diagnosis.json
for f in diagnosis.findings: print(f.severity, f.title, f.fix)

The names below are loaded on first use, so that `medfit.diagnose.cli` (and `medfit --help`) does
not import torch and timm through `medfit.diagnose.run`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfit.diagnose.findings import Diagnosis, Finding
    from medfit.diagnose.run import diagnose_run

_EXPORTS = {
    "Diagnosis": "medfit.diagnose.findings",
    "Finding": "medfit.diagnose.findings",
    "diagnose_run": "medfit.diagnose.run",
}
__all__ = ["Diagnosis", "Finding", "diagnose_run"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medfit.diagnose' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
