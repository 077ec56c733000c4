"""medfit command line: the dispatcher. Each verb's parser and handler live beside its code
(training/cli.py, evaluate/cli.py, deploy/cli.py, check/cli.py, diagnose/cli.py, report/cli.py,
model/cli.py); this module registers them, runs one, and turns errors and signals into lines.

    medfit train DATA --model tf_efficientnet_lite0 --img-size 128 --epochs 10 --out runs/blood
    medfit train --resume runs/blood
    medfit lr-find DATA --out runs/lr
    medfit predict RUN IMAGE_OR_DIR ... [--out preds.csv]
    medfit demo [--data PATH]
    medfit models '*efficientnet*'
    medfit check DATA [--strict] ; medfit split DATA --by group --out split.csv
    medfit eval RUN [--split test] [--tta]
    medfit export RUN --format onnx ; medfit serve RUN

User mistakes (MedfitError) print one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from medfit.check.cli import CHECK_COMMANDS, add_check_commands
from medfit.data.parallel import no_fork_by_default
from medfit.deploy.cli import DEPLOY_COMMANDS, add_deploy_commands
from medfit.diagnose.cli import DIAGNOSE_COMMANDS, add_diagnose_commands
from medfit.errors import MedfitError
from medfit.evaluate.cli import EVAL_COMMANDS, add_eval_commands
from medfit.model.cli import MODEL_COMMANDS, add_model_commands
from medfit.report.cli import REPORT_COMMANDS, add_report_commands
from medfit.rundir import last_locked_run
from medfit.training.cli import TRAIN_COMMANDS, add_train_commands


def _version() -> str:
    """The installed distribution's version (a source tree that is not installed says so)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medfit")
    except PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"medfit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_train_commands(sub)
    p = sub.add_parser(
        "demo",
        help="train and test on the bundled PneumoniaMNIST, offline (minutes on a CPU)",
    )
    p.add_argument(
        "--data", help="train/val/test folders to use instead of the bundled PneumoniaMNIST"
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=3, help="full epochs after the head epoch")

    add_eval_commands(sub)
    add_deploy_commands(sub)
    add_check_commands(sub)
    add_diagnose_commands(sub)
    add_report_commands(sub)

    add_model_commands(sub)
    return parser


def cmd_demo(args: argparse.Namespace) -> None:
    from medfit.demo import run_demo

    run_demo(args.data, args.out, args.epochs)


COMMANDS = {
    **TRAIN_COMMANDS,
    "demo": cmd_demo,
    **MODEL_COMMANDS,
    **DEPLOY_COMMANDS,
    **CHECK_COMMANDS,
    **EVAL_COMMANDS,
    **DIAGNOSE_COMMANDS,
    **REPORT_COMMANDS,
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same cleanup (run lock, temp files) runs."""


def _terminate_handler(owner: int) -> Any:
    """Raise `Terminated` in this process; a forked worker that inherited it dies as usual."""

    def handle(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    return handle


def _on_sigterm(handler: Any) -> Any:
    """Install `handler` for SIGTERM; the previous one, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal.signal works on the main thread only (tests call main elsewhere)
    return signal.signal(signal.SIGTERM, handler)


def interrupted_message(command: str, terminated: bool) -> str:
    """One line after Ctrl-C / SIGTERM: the run to resume when this process started one."""
    how = "terminated" if terminated else "interrupted"
    run = last_locked_run() if command == "train" else None
    if run is not None and (run / "config.yaml").is_file():
        return f"medfit: {how}; resume with: medfit train --resume {run}"
    if command == "train":
        return f"medfit: {how} before the run directory was written; nothing to resume"
    return f"medfit: {how}"


def main(argv: Sequence[str] | None = None) -> int:
    no_fork_by_default()
    args = build_parser().parse_args(argv)
    previous = _on_sigterm(_terminate_handler(os.getpid()))
    try:
        COMMANDS[args.command](args)
    except MedfitError as exc:
        print(f"medfit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(interrupted_message(args.command, terminated), file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
