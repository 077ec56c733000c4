"""Bringing one member of a multi-run job (`--seeds N`, `--folds K`) to a finished run.

A member is an ordinary run directory. Calling `finish_member` again after an interruption
continues it: a finished run (summary.json) is reused, one with checkpoints/last.pt is resumed,
and a directory holding only set-up files (killed before its first checkpoint) is started again.

Under torchrun every rank calls the job's functions (each fit needs all ranks): rank 0 decides
what a member needs and alone writes the job's files and prints; the others follow its decision
(medfit.training.distributed.joined), so all ranks take the same steps.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from medfit.config import RunConfig
from medfit.errors import ConfigError, MedfitError
from medfit.progress import Log
from medfit.rundir import RunDir
from medfit.training import distributed
from medfit.training.fit import fit


def finish_member(
    cfg: RunConfig, path: Path, log: Log, prepare: Callable[[], object] | None = None
) -> str:
    """Bring PATH to a finished run of `cfg` (cfg.out is set to PATH); return what it took:
    reused, resumed or trained. `prepare` writes what the member reads (rank 0, first).

    Rank 0 decides and every rank follows, or raises its error: a rank deciding alone from the
    files could skip a member that the others train, and wait for them forever.
    """
    with distributed.joined():
        how = distributed.on_main(partial(_plan, path, log, prepare))
    if how == "resumed":
        fit(RunConfig.load(RunDir(path).config), resume_dir=str(path), log=log)
    elif how == "trained":
        cfg.out = str(path)
        fit(cfg, log=log)
    return how


def _plan(path: Path, log: Log, prepare: Callable[[], object] | None) -> str:
    """What PATH needs (rank 0): reuse, resume, or a fresh start (a dir that never saved a
    checkpoint is cleared)."""
    if prepare is not None:
        prepare()
    run = RunDir(path)
    if run.summary.is_file():
        log(f"  reusing the finished run {path}")
        return "reused"
    if run.last.is_file():
        return "resumed"
    if path.exists():
        discard_unstarted(run)
    return "trained"


def discard_unstarted(run: RunDir) -> None:
    """Remove a member dir that holds no checkpoint: only set-up files that fit writes again."""
    names = {p.name for p in run.path.iterdir()}
    setup = (run.config, run.classes, run.preprocess, run.split, run.tensorboard, run.lock)
    known = {p.name for p in (*setup, run.checkpoints, run.metrics_jsonl, run.metrics_csv)}
    if not names <= known:
        raise MedfitError(
            f"{run.path} is not a medfit run directory ({', '.join(sorted(names - known))}); "
            "move it away or use another --out"
        )
    run.acquire()  # raises if a live run holds it
    shutil.rmtree(run.path)


# Options that change where or how fast a run goes, not its result: a job may be continued with
# other values (another machine, another cache folder).
_OPERATIONAL = (("data", "cache_dir"), ("train", "workers"), ("train", "device"))


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    raw = cfg.to_dict()
    raw.pop("out")
    for section, name in _OPERATIONAL:
        raw[section].pop(name)
    return raw


def check_same_request(cfg: RunConfig, path: Path, kind: str, write: bool) -> None:
    """Refuse to add members of one config to a job of another (PATH holds the job's config as
    first requested); write PATH when the job is new. `kind` names the members (seed, fold)."""
    request = copy.deepcopy(cfg)
    request.out = str(path.parent)
    if path.is_file():
        if _comparable(RunConfig.load(path)) != _comparable(request):
            raise ConfigError(
                f"{path.parent} holds {kind} runs of a different config ({path}); "
                "use another --out, or the same options to continue those runs"
            )
        return
    if write:
        import yaml

        RunDir(path.parent).write_text(path, yaml.safe_dump(request.to_dict(), sort_keys=False))
