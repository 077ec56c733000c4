"""The `diagnose` subcommand, wired into `medfit.cli` by

    add_diagnose_commands(sub)        # in build_parser()
    COMMANDS.update(DIAGNOSE_COMMANDS)

    medfit diagnose RUN [--no-probes] [--json PATH]

Heavy imports (torch, timm) happen inside the handler so `medfit --help` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], None]


def add_diagnose_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `diagnose` on the `medfit` subcommand parser."""
    p = sub.add_parser(
        "diagnose", help="why the curves look like that: ranked findings with evidence and fixes"
    )
    p.add_argument("run", help="a run directory (from medfit train)")
    p.add_argument(
        "--no-probes",
        dest="probes",
        action="store_false",
        help="history and config only; do not load the checkpoint",
    )
    p.add_argument(
        "--json", metavar="PATH", help="write the diagnosis here (default RUN/diagnosis.json)"
    )
    p.add_argument("--device", default="auto", help="probe device: auto | cpu | cuda | mps")


def cmd_diagnose(args: argparse.Namespace) -> None:
    from medfit.diagnose.run import diagnose_run
    from medfit.report.cli import refresh_report

    diagnose_run(args.run, probes=args.probes, json_path=args.json, device=args.device)
    if args.json is None:  # the report reads RUN/diagnosis.json
        refresh_report(args.run, gradcam=False)


DIAGNOSE_COMMANDS: dict[str, Handler] = {"diagnose": cmd_diagnose}
