"""Runs medfit did not train: another tool's training log and script, read as data.

    medfit diagnose fit_log.txt --script train.py

`read*` turn a log into phases of epochs (`history.History`), `log_rules/` judge the curves,
`script/` reads the training script statically and `script_rules/` says what in it holds the run
back, `datasets` and `known_rules` add what a recognised public data set is known for,
`run.diagnose_foreign` ranks them all, and `render` shows the result. Nothing here imports torch
or timm.
"""

from medfit.diagnose.foreign.read import read_history
from medfit.diagnose.foreign.render import render_foreign, render_html
from medfit.diagnose.foreign.run import ForeignDiagnosis, diagnose_foreign

__all__ = ["ForeignDiagnosis", "diagnose_foreign", "read_history", "render_foreign", "render_html"]
