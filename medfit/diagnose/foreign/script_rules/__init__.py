"""What in a training script holds the run back: the rules over what script/ read.

    from medfit.diagnose.foreign.script_rules import read_script
    report = read_script("train.py", grayscale=True)
    for f in report.findings: print(f.rule, f.severity, f.evidence)

`read_script` (read.py) reads the script (script/: source -> interpreter -> facts) and runs every
rule on it (rules.py: rules_input, rules_train, rules_data, over the shared context.py). Each rule
checks its preconditions and stays silent, or asks a question (rule "question", severity info,
`numbers["about"]` = the kind) when only the user can tell. Each finding's `rule` is a problem kind
of bench/diagnose_wild/KEY_FORMAT.md; its evidence starts with `train.py:LINE:`; `numbers`
carries source/file/line/why, the fix in the script's framework (`keras_fix` or `framework_fix`)
and the medfit option that does it right.
"""

from __future__ import annotations

from medfit.diagnose.foreign.script_rules.read import read_script

__all__ = ["read_script"]
