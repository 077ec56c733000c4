"""Read a training script statically and say what in it holds the run back.

    from medfit.diagnose.foreign.script import read_script, medfit_command
    report = read_script("train.py", grayscale=True)
    for f in report.findings: print(f.rule, f.severity, f.evidence)

The script (a .py file, or a notebook's code cells exported with `# %% cell N` markers and its
IPython magics kept) is parsed with `ast` and never imported or executed. It is followed the way a
reader follows it (interp.py): assignments in order and per scope, the script's own helper
functions run with their arguments, config dicts, YAML written by a `%%writefile` cell and
argparse defaults resolved. Each rule (rules_*.py) checks its preconditions and stays silent, or
asks a question (rule "question", severity info, `numbers["about"]` = the kind) when only the user
can tell. Each finding's `rule` is a problem kind of bench/diagnose_wild/KEY_FORMAT.md; its
evidence starts with `train.py:LINE:`; `numbers` carries source/file/line/why, the fix in the
script's framework (`keras_fix` or `framework_fix`) and the medfit option that does it right.

This package imports no torch or timm, and no reader step can raise on content: what cannot be
read becomes a line in `notes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.command import data_root, medfit_command
from medfit.diagnose.foreign.script.facts import FitCall, ScriptFacts

__all__ = [
    "FitCall",
    "ScriptFacts",
    "ScriptReport",
    "data_root",
    "medfit_command",
    "read_script",
]


@dataclass
class ScriptReport:
    path: Path
    framework: str  # keras | pytorch | lightning | hf | ultralytics | fastai | timm | unknown
    findings: list[Finding]
    notes: list[str]
    facts: ScriptFacts = field(default_factory=ScriptFacts)


def read_script(path: str | Path, grayscale: bool | None = None) -> ScriptReport:
    """Findings and facts for a training script (never executed). `grayscale` (from the data,
    when known) helps decide whether flips and rotations destroy labels. Raises MedfitError only
    for a file that cannot be read as text (missing, a folder, binary, too large)."""
    from medfit.diagnose.foreign.script.read import read

    return read(Path(path).expanduser(), grayscale)
