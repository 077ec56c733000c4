"""`medfit --help` and `medfit VERB --help` import no heavy library.

Every verb's parser is built on each start, so one eager import anywhere under `medfit.cli` (a
package `__init__` was enough) made every `--help` cost torch + timm: ~10 s on a loaded 2-core
box. Each case runs in a fresh interpreter, where `sys.modules` shows what the import pulled in.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

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


# Refused before torch loads (a bound, a path, a port): the answer comes in a fraction of a second
# instead of after the ~8 s torch + timm import.
REFUSED = [
    ["train", "{data}", "--epochs", "-3"],
    ["train", "{data}", "--img-size", "0"],
    ["train", "{data}", "--lr", "nan"],
    ["train", "{data}", "--out", "/etc/passwd"],
    ["train", "{data}", "--seeds", "2", "--label-smoothing", "1.5"],
    ["train", "/no/such/data"],
    ["lr-find", "{data}", "--batch-size", "0"],
    ["eval", "/no/such/run"],
    ["predict", "/no/such/run", "x.png"],
    ["predict", "{data}", "x.png", "--batch-size", "0"],
    ["export", "/no/such/run"],
    ["serve", "/no/such/run"],
    ["serve", "/no/such/run", "--port", "70000"],
    ["report", "/no/such/run"],
]


@pytest.mark.parametrize("argv", REFUSED, ids=" ".join)
def test_a_refused_option_imports_no_heavy_module(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    argv = [a.format(data=tmp_path) for a in argv]
    launcher = LAUNCHER.replace("    main(sys.argv[1:])", "    print('exit', main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", launcher, *argv], capture_output=True, text=True, timeout=120
    )
    *_, code, loaded = proc.stdout.strip().splitlines()
    assert code == "exit 2", proc.stderr
    assert proc.stderr.startswith("medfit: error: ") and proc.stderr.count("\n") == 1
    assert loaded == "[]", f"medfit {' '.join(argv)} imported {loaded} before refusing"
