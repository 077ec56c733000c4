"""Run a whole fine-tuning job: data -> model -> stages -> run directory.

`fit(cfg)` starts a run, `fit(cfg, resume_dir=RUN)` continues one from `RUN/checkpoints/last.pt`.
Every epoch is reseeded from (seed, epoch), so a resumed run replays exactly what an
uninterrupted run would have done.

Under torchrun the same code runs on every rank (medfit.training.distributed): each rank trains on
its shard of every global batch through DistributedDataParallel; rank 0 alone builds the cache,
evaluates, writes the run directory and decides early stopping, and the others follow it.

Where to change what:
  the epoch loop: train -> evaluate -> select -> log -> checkpoint    `_train`
  one training epoch / the row it produces      `train_epoch` (engine.train_one_epoch) / `_evaluate`
  model selection, --select-metric direction, early stopping          selection.BestTracker
  console line, metrics.jsonl|csv, TensorBoard                        epoch_log.EpochLog
  a stage's start: AdaBN, freezing, --lr auto (LR range test)         `start_stage`
  optimizer, LR schedule, EMA, the stage plan                         recipe (StageState)
  set-up: data, model, "auto" options decided from the data, run files      setup.setup_job
  what best.pt / last.pt hold (and what a resume reads back)   `_inference_state` / `_last_state`
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from medfit.config import RunConfig
from medfit.data.augment import build_train_augment
from medfit.data.loader import BatchLoader
from medfit.data.task import grade_ranks
from medfit.model.checkpoint import load_checkpoint, save_checkpoint
from medfit.model.device import pick_device
from medfit.model.policy import recalibrate_bn, set_bn_eval, stem_parameters
from medfit.progress import Log, StepClock
from medfit.rundir import EpochRow, Summary
from medfit.training import distributed, recipe, resume
from medfit.training.distributed import DistContext
from medfit.training.engine import (
    EpochStats,
    autocast_for,
    deterministic_mode,
    evaluate,
    train_one_epoch,
)
from medfit.training.epoch_log import EpochLog
from medfit.training.losses import (
    Mixer,
    MultiLabelBCE,
    SoftTargetLoss,
    positive_weights,
    smoothed_targets,
    soft_ordinal_targets,
)
from medfit.training.lr_find import lr_range_test, plot_lr_find
from medfit.training.recipe import StageState
from medfit.training.setup import (
    Job,
    channels_last,
    check_distributed,
    run_dir_for,
    setup_job,
    write_run_files,
)


@dataclass
class RunResult:
    dir: Path
    history: list[EpochRow]
    summary: dict[str, Any]
    config: RunConfig
    is_main: bool = True  # False on torchrun ranks other than 0 (which must not print results)


def fit(cfg: RunConfig, resume_dir: str | None = None, log: Log = print) -> RunResult:
    """Train (or resume) a run; under torchrun, one rank of a DistributedDataParallel job."""
    cfg.validate()
    ctx = distributed.launched()
    if ctx.enabled:
        device = distributed.device_for(ctx, cfg.train.device)
        check_distributed(cfg, device)
    else:
        device = pick_device(cfg.train.device)
    distributed.start(ctx, device)
    try:
        with deterministic_mode(cfg.train.deterministic, cfg.train.seed):
            return _fit(cfg, ctx, device, resume_dir, distributed.rank_log(log))
    except Exception as exc:
        if not ctx.enabled:
            raise
        error = distributed.rank_error(ctx, exc)
        if error is exc:
            raise
        raise error from exc
    finally:
        distributed.stop()  # on a failing rank: closes the connections the others wait on


def _fit(
    cfg: RunConfig, ctx: DistContext, device: torch.device, resume_dir: str | None, log: Log
) -> RunResult:
    run = run_dir_for(cfg.out, resume_dir)
    if not resume_dir and run.path != Path(cfg.out).expanduser():
        log(f"{cfg.out} exists; writing {run.path}")  # never overwritten, never silently renamed
    # Data and weights are checked before the run directory is claimed.
    job = setup_job(cfg, run, log, device, ctx, new_run=not resume_dir)
    try:
        state = _resume_state(job, log) if resume_dir else None
        _train(job, state, log)
        summary = distributed.on_main(partial(_write_summary, job))
        return RunResult(run.path, job.history, summary, job.cfg, ctx.is_main)
    finally:
        if ctx.is_main:
            run.release()


def start_stage(
    job: Job, stage: recipe.Stage, log: Log, saved: dict[str, Any] | None = None
) -> StageState:
    """Prepare the model for `stage`, settle its LR, then build its optimizer, schedule and EMA.

    `saved`: the stage's state from last.pt when a resumed run continues inside this stage.
    """
    if stage.name == "head" and job.cfg.train.bn_recalibrate and saved is None:
        _recalibrate(job, log)
    _convert_sync_bn(job)  # after AdaBN: rank 0 alone must not run a synchronised BN forward
    recipe.prepare_model(job.model, stage)
    state = StageState(job.model, _settle_lr(job, stage, log, saved), job.cfg.train, job.device)
    if saved is not None:
        state.load_state_dict(saved)
    return state


def _settle_lr(
    job: Job, stage: recipe.Stage, log: Log, saved: dict[str, Any] | None
) -> recipe.Stage:
    """The stage with its LR: as saved (resuming: lr-find never re-runs), measured, or as given.

    A settled "auto" LR goes into a new config (config.yaml and the checkpoints record it), so
    that re-running the run's config repeats the run.
    """
    t = job.cfg.train
    auto = (t.head_lr if stage.name == "head" else t.lr) == "auto"
    if saved is None and not auto:
        return stage
    lr = float(saved["lr"]) if saved is not None else find_stage_lr(job, stage, log)
    if auto:
        train = replace(t, head_lr=lr) if stage.name == "head" else replace(t, lr=lr)
        job.cfg = replace(job.cfg, train=train)
        if saved is None:
            job.cfg.dump(job.run.config)
    return replace(stage, lr=lr)


def find_stage_lr(job: Job, stage: recipe.Stage, log: Log) -> float:
    """The LR range test (medfit.training.lr_find) on the model as `stage` gets it (prepared for
    it); the curve is saved as RUN/lr_find_<stage>.png."""
    optimizer = recipe.build_optimizer(job.model, stage, job.cfg.train)
    loader = train_loader(job, epoch=-1)
    to_input = input_fn(job, train=True)
    loss_fn, _ = _loss_fn(job)
    _train_mode(job, job.model, stage)

    def step_loss(pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast_for(job.device, job.cfg.train.amp):
            logits = job.model(to_input(pixels))
        return loss_fn(logits.float(), labels.to(job.device))

    result = lr_range_test(job.model, optimizer, _cycle(loader), step_loss, log=log)
    path = job.run.lr_find_plot(stage.name)
    plot_lr_find(result, path, f"LR range test, {stage.name} stage")
    log(f"  lr-find ({stage.name}): {result.suggestion:.2e} (plot: {path.name})")
    return result.suggestion


def _train_mode(job: Job, net: nn.Module, stage: recipe.Stage) -> None:
    """Train mode, except BatchNorm while the backbone is frozen or under --bn frozen."""
    net.train()
    if stage.name == "head" or job.cfg.train.bn == "frozen":
        set_bn_eval(job.model)


def _convert_sync_bn(job: Job) -> None:
    if job.cfg.train.sync_bn and job.dist.enabled and not job.sync_bn_done:
        job.model = distributed.convert_sync_bn(job.model)
        job.sync_bn_done = True


def _recalibrate(job: Job, log: Log) -> None:
    """AdaBN on rank 0 over global batches (the statistics a single process would get with that
    batch), then copied to every rank."""
    used = distributed.on_main(partial(_recalibrate_here, job))
    distributed.broadcast_state(job.model)
    log(f"  BatchNorm statistics re-estimated on {used} training batches (AdaBN)")


def _recalibrate_here(job: Job) -> int:
    part, cfg = job.data["train"], job.cfg.train
    batch = cfg.batch_size * job.dist.world_size
    loader = BatchLoader(part.pixels, part.labels, batch, shuffle=True, seed=cfg.seed)
    loader.set_epoch(-1)  # an order no training epoch uses
    to_input = input_fn(job, train=False)
    return recalibrate_bn(job.model, (to_input(pixels) for pixels, _ in loader))


def _cycle(loader: BatchLoader) -> Any:
    while True:
        yield from loader


def train_loader(job: Job, epoch: int) -> BatchLoader:
    cfg, part, ctx = job.cfg.train, job.data["train"], job.dist
    global_batch = cfg.batch_size * ctx.world_size
    weights = None
    if cfg.balance == "sampler":
        per_class = recipe.class_weights(part.labels, len(job.index.classes))
        weights = per_class[part.labels]
    loader = BatchLoader(
        part.pixels,
        part.labels,
        cfg.batch_size,
        shuffle=True,
        sample_weights=weights,
        # A 1-image last batch breaks BN in train mode; under DDP a short one starves some ranks.
        drop_last=len(part.labels) > global_batch,
        seed=cfg.seed,
        prefetch=cfg.workers,
        rank=ctx.rank,
        world_size=ctx.world_size,
        pin_memory=job.device.type == "cuda",
    )
    loader.set_epoch(epoch)
    return loader


def input_fn(job: Job, train: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    augment = build_train_augment(job.cfg.data.aug, job.preprocess.img_size) if train else None
    return job.preprocess.input_fn(job.device, augment, channels_last(job.cfg, job.device))


def _resume_state(job: Job, log: Log) -> dict[str, Any] | None:
    """last.pt checked against the run's config and data (training/resume.py), then loaded; the
    run's files are rewritten only after that, so a refused resume leaves the run as it was."""
    if not job.run.last.exists():
        log(f"  {job.run.last} not written yet (stopped in the first epoch): starting over")
        distributed.on_main(partial(write_run_files, job))
        return None
    state = load_checkpoint(job.run.last)
    changes = resume.check_resumable(state, job.cfg, job.index.classes, job.run)
    resume.replan_schedule(state, changes)
    job.model.load_state_dict(state["model"])
    job.history = [EpochRow.from_dict(row) for row in state["history"]]
    job.tracker.load_state_dict(state["best"])
    distributed.on_main(partial(write_run_files, job))
    distributed.on_main(partial(resume.record_resume, job.run, int(state["epoch"]), changes))
    log(f"  resuming after epoch {state['epoch']} from {job.run.last}")
    if changes:
        log(resume.describe(changes))
    return state


Finished = tuple[bool, EpochRow]  # (stop early?, the epoch's row), rank 0's verdict on an epoch


def _train(job: Job, resumed: dict[str, Any] | None, log: Log) -> None:
    """The epoch loop: train -> evaluate -> select -> log -> checkpoint.

    Every rank trains on its shard of each global batch; rank 0 alone evaluates, selects, logs and
    checkpoints (`distributed.on_main`), and every rank gets its row and its decision to stop.
    """
    stages = plan_stages(job)
    total = sum(s.epochs for s in stages)
    kit = EpochKit.build(job)
    sinks = EpochLog(job.run, total, log) if job.dist.is_main else None
    # tqdm draws its bar on stderr when that is a terminal; otherwise the clock logs lines.
    clock = StepClock(log, bar_shown=sys.stderr.isatty()) if job.dist.is_main else None

    def on_rank0(state: StageState, stats: EpochStats, epoch: int, t0: float) -> Finished:
        row = _evaluate(job, state, stats, epoch, t0, kit)
        history = [*job.history, row]
        if job.tracker.update(history):  # sets row.selection_score
            best = _inference_state(job, state.eval_model(job.model), row.epoch)
            save_checkpoint(best, job.run.best)
        cast(EpochLog, sinks).write(history)
        save_checkpoint(_last_state(job, state, history), job.run.last)
        return job.tracker.should_stop(row), row

    state: StageState | None = None
    for epoch in range(int(resumed["epoch"]) if resumed else 0, total):
        state = _stage_for_epoch(job, stages, epoch, state, resumed, log)
        _freeze_stem_for_epoch(job, stages, epoch, log)
        started = time.perf_counter()
        stats = train_epoch(job, state, epoch, total, kit, clock)
        stop, row = distributed.on_main(partial(on_rank0, state, stats, epoch, started))
        job.history.append(row)
        if stop:
            log(f"  early stop: {job.tracker.why_stopped()}")
            break
    if sinks is not None:
        sinks.close()


def plan_stages(job: Job) -> list[recipe.Stage]:
    """The head and full stages; an "auto" LR stays 0.0 here until its stage starts."""
    t = job.cfg.train
    steps = len(train_loader(job, 0))
    head_lr = t.head_lr if isinstance(t.head_lr, float) else 0.0
    lr = t.lr if isinstance(t.lr, float) else 0.0
    return recipe.stage_plan(t, steps, head_lr, lr)


@dataclass
class EpochKit:
    """What every epoch uses, built once: the val batches, the input functions and the loss."""

    val_loader: BatchLoader
    eval_input: Callable[[torch.Tensor], torch.Tensor]
    train_input: Callable[[torch.Tensor], torch.Tensor]
    loss_fn: nn.Module
    mix: Mixer | None = None  # mixup/CutMix of each training batch, when on

    @classmethod
    def build(cls, job: Job) -> EpochKit:
        val = job.data["val"]
        loss_fn, mix = _loss_fn(job)
        return cls(
            BatchLoader(val.pixels, val.labels, job.cfg.train.batch_size * 2),
            input_fn(job, train=False),
            input_fn(job, train=True),
            loss_fn,
            mix,
        )


def _loss_fn(job: Job) -> tuple[nn.Module, Mixer | None]:
    """The loss, and the batch mixer when mixup/CutMix is on (it mixes the loss's own rows)."""
    cfg = job.cfg.train
    smoothing = cfg.label_smoothing
    assert smoothing is not None, "resolved by medfit.training.setup before any loss is built"
    if cfg.loss == "bce":  # multi-label
        power = {"loss": 1.0, "sqrt": 0.5}.get(cfg.balance)
        targets = job.data["train"].labels
        pos_weight = None if power is None else positive_weights(targets, power).to(job.device)
        return MultiLabelBCE(smoothing, pos_weight).to(job.device), None
    weight = None
    if cfg.balance in ("loss", "sqrt"):
        power = 0.5 if cfg.balance == "sqrt" else 1.0
        w = recipe.class_weights(job.data["train"].labels, len(job.index.classes), power)
        weight = torch.tensor(w, dtype=torch.float32, device=job.device)
    k = len(job.index.classes)
    if cfg.loss == "sord":
        rows = soft_ordinal_targets(grade_ranks(job.index.classes))
    elif cfg.mixup or cfg.cutmix:
        rows = smoothed_targets(k, smoothing)
    else:  # plain CE: PyTorch's own weighted, smoothed cross-entropy (the default)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing), None
    rows = rows.to(job.device)
    mix = Mixer(cfg.mixup, cfg.cutmix, rows, weight) if cfg.mixup or cfg.cutmix else None
    return SoftTargetLoss(rows, weight).to(job.device), mix


def _stage_for_epoch(
    job: Job,
    stages: list[recipe.Stage],
    epoch: int,
    current: StageState | None,
    resumed: dict[str, Any] | None,
    log: Log,
) -> StageState:
    """The running stage's state, or at a stage's first epoch the next stage, started."""
    stage, _ = recipe.stage_of_epoch(stages, epoch)
    if current is not None and current.stage.name == stage.name:
        return current
    if current is not None:
        distributed.unwrap(current.net)
    saved = resumed["stage_state"] if resumed else None
    return start_stage(job, stage, log, saved if saved and saved["stage"] == stage.name else None)


def _freeze_stem_for_epoch(job: Job, stages: list[recipe.Stage], epoch: int, log: Log) -> None:
    """The first `freeze_stem_epochs` epochs of the full stage keep the stem frozen (after
    start_stage unfroze everything); a resumed run recomputes it from the epoch."""
    n = job.cfg.train.freeze_stem_epochs
    stage, index = recipe.stage_of_epoch(stages, epoch)
    if n == 0 or stage.name != "full" or index > n:
        return
    stem = stem_parameters(job.model)
    for p in stem:
        p.requires_grad_(index >= n)
    if index == 0 and not stem:
        log("  --freeze-stem-epochs: this model has no timm feature_info, nothing frozen")
    elif index in (0, n):
        share = sum(p.numel() for p in stem) / sum(p.numel() for p in job.model.parameters())
        what = "frozen" if index < n else "trains again"
        log(f"  stem ({len(stem)} tensors, {share:.1%} of the weights) {what}")


def train_epoch(
    job: Job,
    state: StageState,
    epoch: int,
    total: int,
    kit: EpochKit,
    clock: StepClock | None = None,
) -> EpochStats:
    """One epoch on every rank (each on its shard); loss and accuracy over all ranks."""
    cfg, ctx = job.cfg.train, job.dist
    # Same augmentation/dropout after a resume; each rank its own draws for its own images.
    torch.manual_seed((cfg.seed * 100_003 + epoch) * ctx.world_size + ctx.rank)
    _train_mode(job, state.net, state.stage)
    loader = train_loader(job, epoch)
    state.start_epoch()
    desc = f"epoch {epoch + 1}/{total} {state.stage.name}"
    if clock is not None:
        # The full stage is the plan's last: its end is the run's; the head stage ends first.
        final = state.stage.name == "full"
        left = total - epoch - 1 if final else state.stage.epochs - epoch - 1
        clock.start_epoch(desc, len(loader), left, state.stage.name, final)
    stats = train_one_epoch(
        state.net,
        loader,
        kit.train_input,
        kit.loss_fn,
        state.optimizer,
        lambda: state.on_step(job.model),
        job.device,
        grad_clip=cfg.grad_clip,
        amp=cfg.amp,
        scaler=state.scaler,
        desc=desc,
        total=len(loader),
        agree=distributed.all_true if ctx.enabled else None,
        show_progress=ctx.is_main,
        after_step=clock.step if clock is not None else None,
        mix=kit.mix,
    )
    return _summed_over_ranks(stats)


def _summed_over_ranks(stats: EpochStats) -> EpochStats:
    """Train loss/accuracy over the global batch: sums of loss*count and correct over ranks.

    Timings stay rank 0's own (they describe that process's input pipeline and compute), and so
    do skipped steps: every rank skips the same steps (`train_one_epoch(agree=...)`).
    """
    loss_sum, correct, seen = distributed.all_reduce_sums(
        [stats.loss_sum, stats.correct, stats.seen]
    )
    stats.loss_sum, stats.correct, stats.seen = loss_sum, correct, int(seen)
    stats.loss = loss_sum / max(seen, 1)
    stats.acc = correct / max(seen, 1)
    return stats


def _evaluate(
    job: Job, state: StageState, stats: EpochStats, epoch: int, started: float, kit: EpochKit
) -> EpochRow:
    """Rank 0's evaluation of the epoch (the exact metric over the whole val split)."""
    eval_started = time.perf_counter()
    model = state.eval_model(job.model)
    val = evaluate(model, kit.val_loader, kit.eval_input, job.device, job.cfg.train.amp)
    now = time.perf_counter()
    return EpochRow(
        epoch=epoch + 1,
        stage=state.stage.name,
        train_loss=stats.loss,
        train_acc=stats.acc,
        val_loss=val.loss,
        val_acc=val.metrics["accuracy"],
        val_balanced_accuracy=val.metrics["balanced_accuracy"],
        val_macro_f1=val.metrics["macro_f1"],
        val_macro_auc=val.metrics.get("macro_auc"),
        # The LR its steps trained at; the optimizer's own is already the next step's.
        lr=state.epoch_lr or max(g["lr"] for g in state.optimizer.param_groups),
        data_s=stats.data_s,
        augment_s=stats.augment_s,
        compute_s=stats.compute_s,
        eval_s=now - eval_started,
        epoch_s=now - started,
        skipped_steps=stats.skipped_steps,
    )


def _inference_state(job: Job, model: nn.Module, epoch: int) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "model_name": job.cfg.model.name,
        "classes": job.index.classes,
        "preprocess": job.preprocess.to_dict(),
        "config": job.cfg.to_dict(),
        "epoch": epoch,
    }


def _last_state(job: Job, state: StageState, history: list[EpochRow]) -> dict[str, Any]:
    """Everything a resume needs: weights, history, the tracker and the stage's optimizer."""
    ckpt = _inference_state(job, job.model, history[-1].epoch)
    ckpt.update(
        {
            "model": job.model.state_dict(),
            "history": [row.to_dict() for row in history],
            "best": job.tracker.state_dict(),
            "stage_state": state.state_dict(),
        }
    )
    return ckpt


def _write_summary(job: Job) -> dict[str, Any]:
    last = job.history[-1] if job.history else None
    final_keys: tuple[str, ...] = ("val_acc", "val_balanced_accuracy", "val_macro_f1")
    if job.cfg.data.task == "multilabel":
        final_keys += ("val_macro_auc",)
    best = job.tracker.epoch
    summary = Summary(
        model=job.cfg.model.name,
        weights=job.weights_note,
        classes=list(job.index.classes),
        train_images=len(job.data["train"].labels),
        val_images=len(job.data["val"].labels),
        skipped_images=sum(len(d.skipped) for d in job.data.values()),
        selected_metric=job.cfg.train.select_metric,
        best_epoch=best,
        best_metric=job.tracker.best,
        best_val_acc=next((r.val_acc for r in job.history if r.epoch == best), None),
        smoothed_over=job.tracker.window_of(job.history, best),
        epochs_run=len(job.history),
        final={k: getattr(last, k) if last else None for k in final_keys},
        data_wait_s=sum(r.data_s for r in job.history),
        augment_s=sum(r.augment_s for r in job.history),
        compute_s=sum(r.compute_s for r in job.history),
        device=str(job.device),
        world_size=job.dist.world_size,
        wall_s=time.time() - job.started,
        run_dir=str(job.run.path.resolve()),
    ).to_dict()
    job.run.write_json(job.run.summary, summary)
    return summary
