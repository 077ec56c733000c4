"""`medfit lr-find`: the LR range test on its own, with the plot saved in a run directory."""

from __future__ import annotations

from collections.abc import Callable

from medfit.config import RunConfig
from medfit.data.loader import BatchLoader
from medfit.errors import ConfigError
from medfit.rundir import fresh_run_dir
from medfit.training import distributed, recipe
from medfit.training.fit import StageState, _loss_fn, _run_epoch, _setup, input_fn, train_loader


def run_lr_find(cfg: RunConfig, stage_name: str, log: Callable[[str], None] = print) -> float:
    """Suggest the LR of `stage_name`; for "full" the head is trained first, as in a real run."""
    cfg.validate()
    if distributed.launched().enabled:
        raise ConfigError("medfit lr-find runs in one process: run it without torchrun")
    if stage_name == "head":
        cfg.train.head_lr = "auto"
    else:
        cfg.train.lr = "auto"
        cfg.train.head_epochs = max(cfg.train.head_epochs, 1)
    run = fresh_run_dir(cfg.out)
    job = _setup(cfg, run, log)
    try:
        steps = len(train_loader(job, 0))
        head_lr = cfg.train.head_lr if isinstance(cfg.train.head_lr, float) else 0.0
        job.stages = recipe.stage_plan(cfg.train, steps, head_lr, 0.0)
        head = job.stages[0]
        if stage_name == "full":
            state = StageState(job, head, log)
            val = BatchLoader(job.data["val"].pixels, job.data["val"].labels, cfg.train.batch_size)
            train_in, eval_in = input_fn(job, train=True), input_fn(job, train=False)
            for epoch in range(head.epochs):
                _run_epoch(job, state, epoch, head.epochs, train_in, eval_in, val, _loss_fn(job))
            full = recipe.Stage("full", max(cfg.train.epochs, 1), 0.0, steps)
            return StageState(job, full, log).stage.lr
        return StageState(job, head, log).stage.lr
    finally:
        run.release()
