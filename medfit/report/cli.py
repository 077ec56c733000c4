"""The `report` subcommand, wired into `medfit.cli` by

    add_report_commands(sub)        # in build_parser()
    COMMANDS.update(REPORT_COMMANDS)

    medfit report RUN [--split test] [--no-gradcam] [--label NAME] [--member K]
                      [--compare OTHER_RUN ...]

Heavy imports (matplotlib, torch, captum) happen inside the handler: `medfit --help` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

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
        "--label",
        metavar="NAME",
        help="multi-label runs: the label whose Grad-CAM is drawn, on test images that have it "
        "(default: the measured label with the most positives)",
    )
    p.add_argument(
        "--member",
        type=int,
        metavar="K",
        help="k-fold runs: draw fold K's Grad-CAM alone, on the ensemble's images and predicted "
        "classes (default: the mean of the members' maps)",
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

    write_report(
        args.run,
        split=args.split,
        gradcam=args.gradcam,
        compare=args.compare,
        label=getattr(args, "label", None),
        member=getattr(args, "member", None),
    )


REPORT_COMMANDS: dict[str, Handler] = {"report": cmd_report}
