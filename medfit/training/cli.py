"""The `train` and `lr-find` verbs: their parsers (recipe flags generated from the config,
medfit/options.py) and handlers. Torch-free at import: torch loads once the options are checked.

    medfit train DATA [--epochs 10 ...] [--out RUN] [--seeds N | --folds K] [--mlflow URI]
    medfit train --resume RUN [--epochs N] [--seeds N | --folds K]
    medfit lr-find DATA [--stage full|head]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medfit.config import RunConfig, apply_resume_options
from medfit.errors import ConfigError, DataError, MedfitError
from medfit.options import add_config_options, given_options
from medfit.report.refresh import refresh_report
from medfit.rundir import RunDir, existing_run_dir

Handler = Callable[[argparse.Namespace], None]


def add_train_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `train` and `lr-find` on the `medfit` subcommand parser."""
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
    p.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="K members on grouped, stratified folds of train+val: out-of-fold metrics with CIs, "
        "and the members as one model for eval/predict/export/serve",
    )
    p.add_argument("--mlflow", metavar="URI", help="log the run(s) to this MLflow tracking URI")
    p.add_argument("--mlflow-experiment", default="medfit", help="MLflow experiment name")
    add_config_options(p)

    p = sub.add_parser("lr-find", help="LR range test; saves the plot and the suggestion")
    p.add_argument("data")
    p.add_argument("--out", default="runs/lr-find")
    p.add_argument("--stage", choices=("head", "full"), default="full")
    add_config_options(p)


def config_from_args(args: argparse.Namespace) -> Any:
    cfg = RunConfig.load(Path(args.config)) if getattr(args, "config", None) else RunConfig()
    cfg.override(given_options(args))
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


def _resume_config(args: argparse.Namespace) -> tuple[Any, str]:
    """(the run's own config with the options given beside --resume, the run's directory).

    More --epochs and the runtime options are applied; an option, DATA, --config or --out that
    would change the run is refused in one line, never silently ignored.
    """
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
    apply_resume_options(cfg, given_options(args), str(run.config))
    return cfg, str(run.path)


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def cmd_train(args: argparse.Namespace) -> None:
    if args.seeds is not None and args.folds is not None:
        raise ConfigError("--seeds and --folds are two kinds of multi-run job: pick one")
    if args.folds is not None and args.mlflow:
        raise ConfigError("--mlflow logs single and --seeds runs; with --folds drop --mlflow")
    if args.folds is not None:
        out, runs = _train_folds(args)
    elif args.seeds is not None:
        out, runs = _train_seeds(args)
    else:
        out, runs = _train_one(args)
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
        cfg, run_dir = preflight(config_from_args(args)), None
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
    auc = s["final"].get("val_macro_auc")
    if s["selected_metric"] == "macro_auc" and auc is not None:  # multi-label
        return (
            f"done: best macro_auc {s['best_metric']:.3f}{how} at epoch {s['best_epoch']}; "
            f"final val macro AUC {auc:.3f}"
        )
    own = s.get("best_val_acc")
    own_text = f", val acc {own:.3f} there" if own is not None else ""
    return (
        f"done: best {s['selected_metric']} {s['best_metric']:.3f}{how} at epoch "
        f"{s['best_epoch']}{own_text}; final val acc {s['final']['val_acc']:.3f}"
    )


def _train_seeds(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """Train or continue N seeds: (the OUT folder, one run directory per seed)."""
    if args.resume:
        _refuse_beside_resume(args, "--seeds", "each seed's own config")
        from medfit.training.seeds import resume_seeds

        result = resume_seeds(args.resume, args.seeds)
    else:
        cfg = preflight(config_from_args(args))
        from medfit.training.seeds import train_seeds

        result = train_seeds(cfg, args.seeds)
    return result.dir, [result.dir / row["dir"] for row in result.rows]


def _train_folds(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """Train or continue K fold members, then evaluate the out-of-fold predictions (bootstrap
    CIs, and the ensemble's temperature fitted on them): (RUN, the members)."""
    if args.resume:
        _refuse_beside_resume(args, "--folds", "the folds' own config")
        from medfit.training.folds import resume_folds

        result = resume_folds(args.resume, args.folds)
    else:
        cfg = preflight(config_from_args(args))
        from medfit.training.folds import train_folds

        result = train_folds(cfg, args.folds)
    from medfit.evaluate.runner import run_eval
    from medfit.training import distributed

    if distributed.launched().is_main:  # torchrun: rank 0 evaluates for the job
        print(f"out-of-fold evaluation (medfit eval {result.dir} --split oof):")
        run_eval(result.dir, split="oof")
    return result.dir, RunDir(result.dir).fold_members()


def _refuse_beside_resume(args: argparse.Namespace, job: str, keeps: str) -> None:
    """A multi-run job continued with --resume keeps its own config: any option, DATA, --config
    or --out beside it is refused in one line, never silently ignored."""
    extra = [*given_options(args)] + [f for f in ("data", "config", "out") if vars(args)[f]]
    if extra:
        raise ConfigError(f"--resume with {job} continues {keeps}; drop {', '.join(extra)}")


def cmd_lr_find(args: argparse.Namespace) -> None:
    cfg = preflight(config_from_args(args))
    from medfit.training.lr_find_cli import run_lr_find

    lr = run_lr_find(cfg, args.stage)
    option = "--head-lr" if args.stage == "head" else "--lr"
    print(f"to train with it: medfit train DATA {option} {lr:.1e} (or {option} auto in train)")


TRAIN_COMMANDS: dict[str, Handler] = {"train": cmd_train, "lr-find": cmd_lr_find}
