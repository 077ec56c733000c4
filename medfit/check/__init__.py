"""`medfit check`: the data doctor. Finds what makes a validation score wrong before training.

    from medfit.check import CheckOptions, run_check, render_text
    report = run_check(index, CheckOptions(group_pattern="kermany"))
    print(render_text(report)); report.write("runs/x/check.json")

One pass decodes every image once (in parallel, memory-bounded) and keeps small facts per image;
the sections are computed from those facts: inventory, exact and near duplicates (within and
across splits), group (patient) leakage, shortcuts, label issues, and a verdict on top. For
multi-label data (a manifest with several labels per image) `medfit.check.multilabel` adds label
frequency per split, rare labels and co-occurrence, and makes the label-issue probe one-vs-rest.
`medfit split` (see `medfit.check.split`) writes leakage-free splits as a manifest.

The names below are loaded on first use, so that `medfit --help` (which imports
`medfit.check.cli`) does not pay for numpy, Pillow and sklearn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfit.check.options import NEAR_DHASH_BITS, CheckOptions
    from medfit.check.render import render_text
    from medfit.check.run import CheckReport, StrictCheckFailed, run_check
    from medfit.check.split import SplitResult, make_split

_EXPORTS = {
    "NEAR_DHASH_BITS": "medfit.check.options",
    "CheckOptions": "medfit.check.options",
    "CheckReport": "medfit.check.run",
    "SplitResult": "medfit.check.split",
    "StrictCheckFailed": "medfit.check.run",
    "make_split": "medfit.check.split",
    "render_text": "medfit.check.render",
    "run_check": "medfit.check.run",
}
__all__ = [
    "NEAR_DHASH_BITS",
    "CheckOptions",
    "CheckReport",
    "SplitResult",
    "StrictCheckFailed",
    "make_split",
    "render_text",
    "run_check",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medfit.check' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
