"""The `eval` subcommand, wired into `medfit.cli` by

    add_eval_commands(sub)        # in build_parser()
    COMMANDS.update(EVAL_COMMANDS)

    medfit eval RUN [--data DATA] [--split test] [--tta] [--bootstrap 1000]

Heavy imports (torch, scikit-learn) happen inside the handler so `medfit --help` stays instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from medfit.errors import MedfitError
from medfit.rundir import existing_run_dir

Handler = Callable[[argparse.Namespace], None]


def add_eval_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `eval` on the `medfit` subcommand parser."""
    p = sub.add_parser(
        "eval", help="held-out metrics with 95%% CIs, calibration (temperature) and predictions"
    )
    p.add_argument("run")
    p.add_argument("--data", help="data folder or manifest (default: the run's data root)")
    p.add_argument("--split", default="test", help="split to evaluate: test (default) or val")
    p.add_argument(
        "--tta", action="store_true", help="average over the flips the run's augmentation used"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--threshold",
        type=float,
        help="two-class runs: call the second class positive when its probability >= this "
        "(default: picked on val by Youden's J); sensitivity/specificity/PPV/NPV are given at it",
    )


def cmd_eval(args: argparse.Namespace) -> None:
    from medfit.data.sources import SPLITS

    if args.split not in SPLITS:
        raise MedfitError(f"--split must be train, val or test, got {args.split!r}")
    if args.bootstrap < 0 or args.batch_size < 1:
        raise MedfitError("--bootstrap must be >= 0 and --batch-size >= 1")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise MedfitError(f"--threshold is a probability in [0, 1], got {args.threshold}")
    existing_run_dir(args.run)  # before torch loads: a wrong path is refused at once
    from medfit.evaluate.runner import run_eval
    from medfit.report.refresh import refresh_report

    run_eval(
        args.run,
        data=args.data,
        split=args.split,
        tta=args.tta,
        n_boot=args.bootstrap,
        batch_size=args.batch_size,
        device=args.device,
        threshold=args.threshold,
    )
    refresh_report(args.run, gradcam=True)


EVAL_COMMANDS: dict[str, Handler] = {"eval": cmd_eval}
