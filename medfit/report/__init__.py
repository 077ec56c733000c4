"""The self-contained HTML report of a run: `medfit report RUN` -> RUN/report.html.

    from medfit.report import write_report
    write_report("runs/blood")            # newest eval_<split>.json, Grad-CAM on <= 8 images

Everything the run directory holds is rendered; whatever is missing (no eval yet, no check.json,
no diagnosis.json) becomes a short note naming the command that produces it, never an error.
`write_report` is imported lazily so that `medfit.report.cli` (and `medfit --help`) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_report"]


def __getattr__(name: str) -> Any:
    if name == "write_report":
        from medfit.report.html import write_report

        return write_report
    raise AttributeError(f"module 'medfit.report' has no attribute {name!r}")
