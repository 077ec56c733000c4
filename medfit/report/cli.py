"""The `report` subcommand, wired into `medfit.cli` by

    add_report_commands(sub)        # in build_parser()
    COMMANDS.update(REPORT_COMMANDS)

    medfit report RUN [--split test] [--no-gradcam] [--compare OTHER_RUN ...]

Heavy imports (matplotlib, torch, captum) happen inside the handler: `medfit --help` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from medfit.errors import MedfitError
from medfit.rundir import existing_run_dir

Handler = Callable[[argparse.Namespace], None]


def add_report_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `report` on the `medfit` subcommand parser."""
    p = sub.add_parser(
        "report", help="write RUN/report.html: curves, metrics with CIs, errors, Grad-CAM, checks"
    )
    p.add_argument("run")
    p.add_argument(
        "--split", help="which evaluation to show: train, val or test (default: the newest)"
    )
    p.add_argument(
        "--no-gradcam",
        dest="gradcam",
        action="store_false",
        help="skip the Grad-CAM overlays (they load the model; a few seconds on a CPU)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="OTHER_RUN",
        help="other run directories: plot val accuracy against training seconds beside RUN's",
    )


def cmd_report(args: argparse.Namespace) -> None:
    from medfit.data.sources import SPLITS

    if args.split is not None and args.split not in SPLITS:
        raise MedfitError(f"--split must be train, val or test, got {args.split!r}")
    existing_run_dir(args.run)
    from medfit.report.html import write_report

    write_report(args.run, split=args.split, gradcam=args.gradcam, compare=args.compare)


def refresh_report(run: str | Path, gradcam: bool, log: Callable[[str], None] = print) -> None:
    """Rewrite RUN/report.html after train/eval/diagnose; never fails the command that ran.

    The report is a view of the run directory: if it cannot be written, the run's own files are
    intact and `medfit report RUN` says why.
    """
    from medfit.report.html import write_report

    try:
        path = write_report(run, log=lambda _: None, gradcam=gradcam)
    except Exception as exc:
        log(f"warning: report.html not written ({exc}); run `medfit report {run}`")
    else:
        log(f"report: {path}")


REPORT_COMMANDS: dict[str, Handler] = {"report": cmd_report}
