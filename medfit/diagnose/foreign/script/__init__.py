"""Read a training script statically: what it does, as facts. The findings are script_rules/.

    from medfit.diagnose.foreign.script import medfit_command
    from medfit.diagnose.foreign.script_rules import read_script
    report = read_script("train.py", grayscale=True)
    print(report.framework, report.facts.backbone, report.facts.fits, medfit_command(report))

The script (a .py file, or a notebook's code cells exported with `# %% cell N` markers and its
IPython magics kept) is parsed with `ast` (source.py) and never imported or executed. It is
followed the way a reader follows it (interp.py, over calls.py and exprs.py): assignments in order
and per scope, the script's own helper functions run with their arguments, config dicts, YAML
written by a `%%writefile` cell and argparse defaults resolved. Library calls go to the handlers
that the library modules below register in registry.py; they build the values of values.py and
record what matters in `World`. gather.py reads the facts (facts.py) off a finished read, and
command.py turns them into the medfit command that trains the same data.

This package imports no torch or timm, and no reader step can raise on content: what cannot be
read becomes a line in `notes`.
"""

from __future__ import annotations

# The library modules register their handlers when imported, here and only here. The order is
# their priority where two answer the same call (pylib's `min` and `copy` before numpy's, fit_lib's
# `.trainable` setter before configs' `os.environ[...] =`): keep it.
# isort: off
from medfit.diagnose.foreign.script import (  # noqa: F401
    pylib,
    fit_lib,
    configs,
    data_lib,
    keras_lib,
    keras_data,
    transforms_lib,
    torch_lib,
    trainers_lib,
)

# isort: on
from medfit.diagnose.foreign.script.command import data_root, medfit_command
from medfit.diagnose.foreign.script.facts import FitCall, ScriptFacts
from medfit.diagnose.foreign.script.report import ScriptReport

__all__ = [
    "FitCall",
    "ScriptFacts",
    "ScriptReport",
    "data_root",
    "medfit_command",
]
