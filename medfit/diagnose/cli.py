"""The `diagnose` subcommand, wired into `medfit.cli` by

    add_diagnose_commands(sub)        # in build_parser()
    COMMANDS.update(DIAGNOSE_COMMANDS)

    medfit diagnose RUN [--no-probes] [--json PATH]
    medfit diagnose LOG [LOG ...] [--script train.py] [--data DIR] [--val-size N] [--classes K]
                        [--json PATH] [--html FILE]

LOG is another tool's history (Keras console log or CSVLogger CSV, history JSON, TensorBoard
events, Lightning metrics.csv, HF trainer_state.json, Ultralytics results.csv); with --script the
training script is read statically (never run) and the findings are ranked in one list.

Heavy imports (torch, timm) happen inside the handler so `medfit --help` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from medfit.rundir import RunDir

Handler = Callable[[argparse.Namespace], None]


def add_diagnose_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `diagnose` on the `medfit` subcommand parser."""
    p = sub.add_parser(
        "diagnose", help="why the curves look like that: ranked findings with evidence and fixes"
    )
    p.add_argument(
        "run",
        nargs="*",
        metavar="RUN_OR_LOG",
        help="a run directory (from medfit train), or another tool's training log(s)/history: "
        "several files are phases of one job, in order (head.csv finetune.csv)",
    )
    g = p.add_argument_group("foreign runs (a log or history not written by medfit)")
    g.add_argument("--script", metavar="PY", help="the training script, read statically")
    g.add_argument("--data", metavar="DIR", help="the data folder: checked and used in the command")
    g.add_argument(
        "--val-size", type=_positive, metavar="N", help="validation images (weighs swings)"
    )
    g.add_argument(
        "--classes", type=_positive, metavar="K", help="number of classes (chance level)"
    )
    g.add_argument("--html", metavar="FILE", help="also write the diagnosis as an HTML page")
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


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def cmd_diagnose(args: argparse.Namespace) -> None:
    if _is_foreign(args):
        _diagnose_foreign(args)
        return
    from medfit.diagnose.own.run import diagnose_run
    from medfit.report.refresh import refresh_report

    run = args.run[0]
    diagnose_run(run, probes=args.probes, json_path=args.json, device=args.device)
    if args.json is None:  # the report reads RUN/diagnosis.json
        refresh_report(run, gradcam=False)


def _is_foreign(args: argparse.Namespace) -> bool:
    """Anything but one medfit run directory (a folder holding config.yaml)."""
    if len(args.run) != 1:
        return True
    return not RunDir(Path(args.run[0]).expanduser()).config.is_file()


def _diagnose_foreign(args: argparse.Namespace) -> None:
    from medfit.diagnose.foreign import diagnose_foreign, render_foreign, render_html
    from medfit.files import atomic_write_bytes

    logs, script = list(args.run), args.script
    if script is None and logs and Path(logs[-1]).suffix == ".py":
        script = logs.pop()  # `medfit diagnose train.py`: the script alone
    diagnosis = diagnose_foreign(logs, script, args.data, args.val_size, args.classes)
    for note in diagnosis.history.notes if diagnosis.history else []:
        print(f"medfit: warning: {note}", file=sys.stderr)  # what was dropped, said once
    print(render_foreign(diagnosis))
    outputs = [(args.json, json.dumps(diagnosis.to_dict(), indent=2, default=str) + "\n")]
    outputs += [(args.html, render_html(diagnosis))]
    for target, text in outputs:
        if target:
            atomic_write_bytes(Path(target), lambda f, t=text: f.write(t.encode()))
            print(f"saved {target}")


DIAGNOSE_COMMANDS: dict[str, Handler] = {"diagnose": cmd_diagnose}
