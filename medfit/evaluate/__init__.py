"""`medfit eval RUN`: honest held-out metrics with confidence intervals and calibration.

    from medfit.evaluate import run_eval
    result = run_eval("runs/blood", split="test", tta=False)   # also writes RUN/eval_test.json

`run_eval` is imported lazily so that `medfit.evaluate.cli` (and `medfit --help`) stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_eval"]


def __getattr__(name: str) -> Any:
    if name == "run_eval":
        from medfit.evaluate.runner import run_eval

        return run_eval
    raise AttributeError(f"module 'medfit.evaluate' has no attribute {name!r}")
