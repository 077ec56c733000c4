"""`medfit lr-find`: the LR range test on its own, with the plot saved in a run directory."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

from medfit.config import RunConfig
from medfit.errors import ConfigError
from medfit.progress import StepClock
from medfit.training import distributed, recipe
from medfit.training.fit import EpochKit, plan_stages, start_stage, train_epoch
from medfit.training.outdir import claim_fresh
from medfit.training.setup import setup_job


def run_lr_find(cfg: RunConfig, stage_name: str, log: Callable[[str], None] = print) -> float:
    """Suggest the LR of `stage_name`; for "full" the head is trained first, as in a real run."""
    cfg.validate()
    if distributed.launched().enabled:
        raise ConfigError("medfit lr-find runs in one process: run it without torchrun")
    cfg = _with_auto_lr(cfg, stage_name)
    run = claim_fresh(cfg.out)  # a usable --out before any image is decoded
    job = setup_job(cfg, run, log)
    try:
        head = plan_stages(job)[0]
        if stage_name == "head":
            return start_stage(job, head, log).stage.lr
        state, kit = start_stage(job, head, log), EpochKit.build(job)
        clock = StepClock(log, bar_shown=sys.stderr.isatty())  # the head trains first: say so
        for epoch in range(head.epochs):
            train_epoch(job, state, epoch, head.epochs, kit, clock)
        full = recipe.Stage("full", max(job.cfg.train.epochs, 1), 0.0, head.steps_per_epoch)
        return start_stage(job, full, log).stage.lr
    finally:
        run.release()


def _with_auto_lr(cfg: RunConfig, stage_name: str) -> RunConfig:
    """`cfg` with the stage's LR set to "auto" and at least one head epoch (the head stage is
    measured first, and the full stage's test needs a trained head)."""
    t = replace(cfg.train, head_epochs=max(cfg.train.head_epochs, 1))
    t = replace(t, head_lr="auto") if stage_name == "head" else replace(t, lr="auto")
    return replace(cfg, train=t)
