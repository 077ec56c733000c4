"""Shared pieces of the deploy tests: one tiny trained run per test session, a CLI runner.

Not a conftest (the shared conftest belongs to everyone): each deploy test module wraps
`trained_run` in its own session fixture; the run is built once per session on disk under
pytest's base temp and reused by every module (a few seconds of training on 24 images).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import medfit
from medfit.errors import MedfitError
from tests.test_train import FAST, make_dataset

# Deploy tests need a valid run, not a good model: 1 full epoch on 8 + 4 images per class.
RUN_OPTIONS = {**FAST, "head_epochs": 0, "epochs": 1}


def trained_run(factory: pytest.TempPathFactory) -> Path:
    """The session's tiny run (train/val of two classes, 40 px gray PNGs, xray preset)."""
    root = factory.getbasetemp() / "deploy-tiny-run"
    run = root / "run"
    if (run / "summary.json").is_file():
        return run
    data = make_dataset(root / "data", per_class=8)
    medfit.train(
        data, out=str(run), cache_dir=str(root / "cache"), log=lambda _: None, **RUN_OPTIONS
    )
    return run


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of the run that a test may change (config, calibration, checkpoint)."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("tb", "export"))
    return dest


def set_aug(run: Path, preset: str) -> None:
    config = run / "config.yaml"
    text = config.read_text()
    old = next(line for line in text.splitlines() if line.strip().startswith("aug:"))
    config.write_text(text.replace(old, f"  aug: {preset}"))


def val_images(run: Path) -> list[Path]:
    """The run's val files (absolute paths, sorted by class) from its split.csv."""
    rows = csv.DictReader((run / "split.csv").read_text().splitlines())
    return [Path(r["path"]) for r in rows if r["split"] == "val"]


def run_cli(argv: Sequence[str]) -> int:
    """`medfit <deploy command> ...` as medfit.cli.main runs it: MedfitError -> one line, 2."""
    from medfit.deploy.cli import DEPLOY_COMMANDS, add_deploy_commands

    parser = argparse.ArgumentParser(prog="medfit")
    add_deploy_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    try:
        DEPLOY_COMMANDS[args.command](args)
    except MedfitError as exc:
        print(f"medfit: error: {exc}", file=sys.stderr)
        return 2
    return 0
