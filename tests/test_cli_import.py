"""`medfit --help` and `medfit VERB --help` import no heavy library.

Every verb's parser is built on each start, so one eager import anywhere under `medfit.cli` (a
package `__init__` was enough) made every `--help` cost torch + timm: ~10 s on a loaded 2-core
box. Each case runs in a fresh interpreter, where `sys.modules` shows what the import pulled in.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from medfit.cli import build_parser

HEAVY = ("torch", "timm", "torchvision", "sklearn", "matplotlib")

LAUNCHER = f"""
import sys
from medfit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {HEAVY!r}
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
"""


def _verbs() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_verb_is_covered() -> None:
    # A verb added without its parser here would silently escape the import check.
    assert {"train", "eval", "check", "diagnose", "report", "predict", "models"} <= set(_verbs())


@pytest.mark.parametrize("argv", [["--help"]] + [[verb, "--help"] for verb in _verbs()])
def test_help_imports_no_heavy_module(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    *help_text, loaded = proc.stdout.strip().splitlines()
    assert "usage: medfit" in "\n".join(help_text)
    assert loaded == "[]", f"medfit {' '.join(argv)} imported {loaded}"
