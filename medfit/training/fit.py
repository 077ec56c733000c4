"""Run a whole fine-tuning job: data -> model -> stages -> run directory.

`fit(cfg)` starts a run, `fit(cfg, resume_dir=RUN)` continues one from `RUN/checkpoints/last.pt`.
Every epoch is reseeded from (seed, epoch), so a resumed run replays exactly what an
uninterrupted run would have done.

Under torchrun the same code runs on every rank (medfit.training.distributed): each rank trains on
its shard of every global batch through DistributedDataParallel; rank 0 alone builds the cache,
evaluates, writes the run directory and decides early stopping, and the others follow it.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from medfit.config import RunConfig
from medfit.data.augment import build_eval_transform, build_train_augment
from medfit.data.cache import CachedSplit
from medfit.data.dataset import cache_splits, load_index
from medfit.data.loader import BatchLoader, to_model_input
from medfit.data.modality import choose_augmentation
from medfit.data.sources import DatasetIndex
from medfit.data.task import describe_task, resolve_task
from medfit.errors import ConfigError, DataError
from medfit.model.backbones import Preprocess, create_model, unit_normalized
from medfit.model.policy import recalibrate_bn, resolve_bn_policy, set_bn_eval
from medfit.rundir import RunDir, existing_run_dir, fresh_run_dir
from medfit.training import distributed, recipe
from medfit.training.checkpoint import load_checkpoint, save_checkpoint
from medfit.training.distributed import DistContext
from medfit.training.engine import (
    EpochStats,
    autocast_for,
    deterministic_mode,
    evaluate,
    train_one_epoch,
)
from medfit.training.lr_find import lr_range_test, plot_lr_find

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    """The log of ranks other than 0: one voice per job."""


@dataclass
class RunResult:
    dir: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    config: RunConfig
    is_main: bool = True  # False on torchrun ranks other than 0 (which must not print results)


@dataclass
class Job:
    """Everything a run holds while it trains."""

    cfg: RunConfig
    run: RunDir
    device: torch.device
    index: DatasetIndex
    data: dict[str, CachedSplit]
    model: nn.Module
    preprocess: Preprocess
    weights_note: str
    aug_reason: str = ""
    dist: DistContext = distributed.SINGLE
    sync_bn_done: bool = False
    stages: list[recipe.Stage] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"metric": -1.0, "epoch": 0})
    started: float = field(default_factory=time.time)


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def fit(cfg: RunConfig, resume_dir: str | None = None, log: Log = print) -> RunResult:
    """Train (or resume) a run; under torchrun, one rank of a DistributedDataParallel job."""
    cfg.validate()
    ctx = distributed.launched()
    if ctx.enabled:
        device = distributed.device_for(ctx, cfg.train.device)
        _check_distributed(cfg, device)
    else:
        device = pick_device(cfg.train.device)
    distributed.start(ctx, device)
    try:
        with deterministic_mode(cfg.train.deterministic, cfg.train.seed):
            return _fit(cfg, ctx, device, resume_dir, log if ctx.is_main else _quiet)
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
    run = _run_dir(cfg.out, resume_dir)
    # Data and weights are checked before the run directory is claimed.
    job = _setup(cfg, run, log, device, ctx, new_run=not resume_dir)
    try:
        state = _resume_state(job, log) if resume_dir else None
        _train(job, state, log)
        summary = distributed.on_main(partial(_write_summary, job))
        return RunResult(run.path, job.history, summary, job.cfg, ctx.is_main)
    finally:
        if ctx.is_main:
            run.release()


def _run_dir(out: str, resume_dir: str | None) -> RunDir:
    """Rank 0 picks a fresh directory name and the others use it (each would pick its own)."""
    if resume_dir:
        return existing_run_dir(resume_dir)
    return RunDir(Path(distributed.on_main(lambda: str(fresh_run_dir(out).path))))


def _check_distributed(cfg: RunConfig, device: torch.device) -> None:
    """Options that a DistributedDataParallel run cannot honour, refused before any work."""
    t = cfg.train
    if "auto" in (t.lr, t.head_lr):
        raise ConfigError(
            "--lr/--head-lr auto (LR range test) runs in a single process: run `medfit lr-find "
            "DATA` first, then pass the suggested --lr/--head-lr to torchrun"
        )
    if t.sync_bn and device.type != "cuda":
        raise ConfigError(
            "--sync-bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); drop it on CPU"
        )


def _setup(
    cfg: RunConfig,
    run: RunDir,
    log: Log,
    device: torch.device | None = None,
    ctx: DistContext = distributed.SINGLE,
    new_run: bool = True,
) -> Job:
    torch.manual_seed(cfg.train.seed)
    device = device or pick_device(cfg.train.device)
    index = load_index(cfg.data, cfg.train.seed)
    # Rank 0 first: a hub download lands in the local cache once, then the others read it.
    model, preprocess, note = distributed.main_first(
        lambda: create_model(
            cfg.model.name,
            len(index.classes),
            cfg.model.weights,
            cfg.data.img_size,
            cfg.model.drop_rate,
        )
    )
    if cfg.model.normalize == "unit":
        preprocess = unit_normalized(preprocess)
    cfg.data.img_size = preprocess.img_size
    # Rank 0 decodes the cache (atomic entries) while the others wait, then they all open it.
    data = distributed.main_first(
        lambda: cache_splits(
            index, cfg.data, preprocess.img_size, preprocess.interpolation, cfg.train.seed, log
        )
    )
    if "val" not in data:
        raise DataError(f"{index.root}: the validation split is empty")
    _check_global_batch(cfg, len(data["train"].labels), ctx)
    aug_reason = _resolve_auto(cfg, data["train"], index.classes, ctx)
    model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    job = Job(cfg, run, device, index, data, model, preprocess, note, aug_reason, dist=ctx)
    job.cfg.out = str(run.path)
    distributed.on_main(partial(_open_run, job, new_run))
    log(_describe(job))
    return job


def _open_run(job: Job, new: bool) -> None:
    job.run.acquire(new=new)
    _write_run_files(job)


def _check_global_batch(cfg: RunConfig, n_train: int, ctx: DistContext) -> None:
    """Every rank must get a full share of every global batch (see medfit.data.loader)."""
    global_batch = cfg.train.batch_size * ctx.world_size
    if ctx.enabled and n_train < global_batch:
        raise DataError(
            f"{n_train} training images cannot fill one global batch of {cfg.train.batch_size} "
            f"x {ctx.world_size} ranks = {global_batch}; lower --batch-size or use fewer ranks"
        )


def _resolve_auto(
    cfg: RunConfig, train: CachedSplit, classes: list[str], ctx: DistContext = distributed.SINGLE
) -> str:
    """Replace every "auto" that can be decided from the data by its concrete value; returns why
    the augmentation preset was chosen (the run's header says it)."""
    t = cfg.train
    ratio = recipe.imbalance_ratio(train.labels, len(classes))
    choice = choose_augmentation(cfg.data.modality, cfg.data.aug, train.pixels)
    cfg.data.aug = choice.preset
    cfg.data.task = resolve_task(cfg.data.task, classes)
    # BatchNorm sees the per-device batch, or the global one when SyncBatchNorm pools them.
    bn_batch = t.batch_size * ctx.world_size if t.sync_bn and ctx.enabled else t.batch_size
    t.bn = resolve_bn_policy(t.bn, bn_batch, t.bn_min_batch)
    if t.lr is None:
        t.lr = recipe.default_lr(t.bn)
    t.balance = recipe.resolve_balance(t.balance, ratio)
    t.select_metric = recipe.resolve_select_metric(t.select_metric, ratio)
    return choice.reason


def _write_run_files(job: Job) -> None:
    run = job.run
    job.cfg.out = str(run.path)
    job.cfg.dump(run.config)
    run.write_json(run.classes, job.index.classes)
    run.write_json(run.preprocess, job.preprocess.to_dict())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label", "split", "status"])
    for split, part in job.data.items():
        for path, label in zip(part.paths, part.labels, strict=True):
            writer.writerow([path, job.index.classes[label], split, "ok"])
        for path, reason in part.skipped:
            writer.writerow([path, "", split, f"skipped: {reason}"])
    run.write_text(run.split, buffer.getvalue())


def _describe(job: Job) -> str:
    cfg, p = job.cfg, job.preprocess
    counts = {s: len(d.labels) for s, d in job.data.items()}
    world = job.dist.world_size
    ddp = (
        f"\n  DistributedDataParallel: {world} ranks, global batch {cfg.train.batch_size} x "
        f"{world} = {cfg.train.batch_size * world}"
        + (", SyncBatchNorm" if cfg.train.sync_bn else "")
        + "; rank 0 evaluates and writes the run"
        if job.dist.enabled
        else ""
    )
    return (
        f"medfit: {cfg.model.name} ({job.weights_note}) on {job.device}\n"
        f"  data {job.index.root}: {len(job.index.classes)} classes, "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + _val_note(job.index)
        + _ignored_note(job.index)
        + _links_note(job.index)
        + f"\n  task: {describe_task(cfg.data.task, job.index.classes)}"
        + f"\n  augmentation: {job.aug_reason}"
        + f"\n  input {p.img_size}px, mean {p.mean} std {p.std} ({_norm_source(cfg)}), "
        f"bn {cfg.train.bn}, balance {cfg.train.balance}, select on {cfg.train.select_metric}"
        + (", torch.compile (first steps of each stage compile)" if cfg.train.compile else "")
        + f"\n  run dir {job.run.path}"
        + ddp
    )


def _norm_source(cfg: RunConfig) -> str:
    if cfg.model.normalize == "unit":
        return "--normalize unit: pixels/255, NOT the weights' own normalisation"
    return "from the weights' config"


def _val_note(index: DatasetIndex) -> str:
    if not index.val_from_train:
        return ""
    grouped = f", grouped by {index.val_groups} ids" if index.val_groups else ""
    return f" (val split off train{grouped}, saved in split.csv)"


def _ignored_note(index: DatasetIndex) -> str:
    if not index.ignored_files:
        return ""
    first = ", ".join(index.ignored_files[:3])
    n = len(index.ignored_files)
    return (
        f"\n  {n} file(s) not used (not images, hidden, outside class folders, or linked "
        f"sub-folders), e.g. {first}"
    )


def _links_note(index: DatasetIndex) -> str:
    if not index.followed_links:
        return ""
    first = ", ".join(index.followed_links[:3])
    n = len(index.followed_links)
    more = ", ..." if n > 3 else ""
    return f"\n  {n} folder symlink(s) followed out of the data set: {first}{more}"


class StageState:
    """The optimizer, schedule, EMA and loaders of the stage being trained."""

    def __init__(self, job: Job, stage: recipe.Stage, log: Log, restoring: bool = False) -> None:
        cfg = job.cfg.train
        self.stage = stage
        if stage.name == "head" and cfg.bn_recalibrate and not restoring:
            _recalibrate(job, log)
        _convert_sync_bn(job)  # after AdaBN: rank 0 alone must not run a synchronised BN forward
        recipe.prepare_model(job.model, stage)
        self.optimizer = recipe.build_optimizer(job.model, stage, cfg)
        if self._lr_is_auto(job):
            stage.lr = self._find_lr(job, log)
            self.optimizer = recipe.build_optimizer(job.model, stage, cfg)
        self.scheduler = recipe.build_scheduler(self.optimizer, stage, cfg)
        self.step = 0
        self.ema = (
            ModelEmaV3(job.model, decay=cfg.ema_decay, use_warmup=True)
            if cfg.ema and stage.name == "full"
            else None
        )
        use_scaler = job.device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        # What the training step calls: DDP around the model under torchrun (built after the
        # stage's freezing, which decides the parameters it synchronises), else the model itself.
        self.net = distributed.wrap(job.model, job.device)
        if cfg.compile:
            # Around the DDP wrapper (PyTorch's supported order: its DDPOptimizer splits the graph
            # at the gradient buckets). Recompiled per stage: the trainable parameters changed.
            self.net = cast(nn.Module, torch.compile(self.net))

    def _lr_is_auto(self, job: Job) -> bool:
        key = "head_lr" if self.stage.name == "head" else "lr"
        return getattr(job.cfg.train, key) == "auto"

    def _find_lr(self, job: Job, log: Log) -> float:
        loader = train_loader(job, epoch=-1)
        to_input = input_fn(job, train=True)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=job.cfg.train.label_smoothing)
        job.model.train()
        if self.stage.name == "head" or job.cfg.train.bn == "frozen":
            set_bn_eval(job.model)

        def step_loss(pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            with autocast_for(job.device, job.cfg.train.amp):
                logits = job.model(to_input(pixels))
            return loss_fn(logits.float(), labels.to(job.device))

        batches = _cycle(loader)
        result = lr_range_test(job.model, self.optimizer, batches, step_loss)
        path = job.run.path / f"lr_find_{self.stage.name}.png"
        plot_lr_find(result, path, f"LR range test, {self.stage.name} stage")
        key = "head_lr" if self.stage.name == "head" else "lr"
        setattr(job.cfg.train, key, result.suggestion)
        job.cfg.dump(job.run.config)  # the resolved LR makes the run reproducible
        log(f"  lr-find ({self.stage.name}): {result.suggestion:.2e} (plot: {path.name})")
        return result.suggestion

    def on_step(self, model: nn.Module) -> None:
        self.step += 1
        self.scheduler.step_update(self.step)
        if self.ema is not None:
            self.ema.update(model, step=self.step)

    def eval_model(self, model: nn.Module) -> nn.Module:
        return self.ema.module if self.ema is not None else model

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage.name,
            "lr": self.stage.lr,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])


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
    size = job.preprocess.img_size
    transform = build_train_augment(job.cfg.data.aug, size) if train else build_eval_transform(size)
    transform = transform.to(job.device)
    mean = torch.tensor(job.preprocess.mean, device=job.device)
    std = torch.tensor(job.preprocess.std, device=job.device)
    channels_last = job.cfg.train.channels_last and job.device.type == "cuda"
    return lambda pixels: to_model_input(pixels, job.device, transform, mean, std, channels_last)


def _resume_state(job: Job, log: Log) -> dict[str, Any] | None:
    if not job.run.last.exists():
        log(f"  {job.run.last} not written yet (stopped in the first epoch): starting over")
        return None
    state = load_checkpoint(job.run.last)
    job.model.load_state_dict(state["model"])
    job.history = list(state["history"])
    job.best = dict(state["best"])
    log(f"  resuming after epoch {state['epoch']} from {job.run.last}")
    return state


def _train(job: Job, resumed: dict[str, Any] | None, log: Log) -> None:
    cfg = job.cfg.train
    steps = len(train_loader(job, 0))
    head_lr = cfg.head_lr if isinstance(cfg.head_lr, float) else 0.0
    lr = cfg.lr if isinstance(cfg.lr, float) else 0.0
    job.stages = recipe.stage_plan(cfg, steps, head_lr, lr)
    total = sum(s.epochs for s in job.stages)
    start = int(resumed["epoch"]) if resumed else 0
    val_loader = BatchLoader(job.data["val"].pixels, job.data["val"].labels, cfg.batch_size * 2)
    eval_input = input_fn(job, train=False)
    train_input = input_fn(job, train=True)
    loss_fn = _loss_fn(job)
    current: StageState | None = None
    writer = _tensorboard(job) if job.dist.is_main else None
    for epoch in range(start, total):
        stage, _ = recipe.stage_of_epoch(job.stages, epoch)
        if current is None or current.stage is not stage:
            if current is not None:
                distributed.unwrap(current.net)
            if resumed and resumed["stage_state"]["stage"] == stage.name:
                stage.lr = float(resumed["stage_state"]["lr"])
                current = _restore_stage(job, stage, resumed, log)
            else:
                current = StageState(job, stage, log)
        row = _run_epoch(job, current, epoch, total, train_input, eval_input, val_loader, loss_fn)
        job.history.append(row)
        # Rank 0 selects, writes and decides; every rank gets the same decision (and row).
        record = partial(_record_epoch, job, current, row, writer, epoch, total, log)
        stop, job.history[-1] = distributed.on_main(record)
        if stop:
            break
    if writer is not None:
        writer.close()


def _record_epoch(
    job: Job,
    current: StageState,
    row: dict[str, Any],
    writer: Any,
    epoch: int,
    total: int,
    log: Log,
) -> tuple[bool, dict[str, Any]]:
    """Select, log and checkpoint one finished epoch; (stop early?, the row with its score)."""
    cfg = job.cfg.train
    improved = _select(job, current, row)
    job.run.write_history(job.history)
    if writer is not None:
        for key, value in row.items():
            if isinstance(value, float):
                writer.add_scalar(key, value, epoch + 1)
        writer.flush()
    log(_epoch_line(row, total))
    save_checkpoint(_last_state(job, current, epoch + 1), job.run.last)
    stop = not improved and _should_stop(job, epoch)
    if stop:
        log(
            f"  early stop: {cfg.select_metric} (smoothed) has not improved "
            f"for {cfg.patience} epochs"
        )
    return stop, row


def _restore_stage(job: Job, stage: recipe.Stage, resumed: dict[str, Any], log: Log) -> StageState:
    # The stage's LR was resolved before the interruption; never re-run lr-find on resume.
    key = "head_lr" if stage.name == "head" else "lr"
    if getattr(job.cfg.train, key) == "auto":
        setattr(job.cfg.train, key, stage.lr)
    current = StageState(job, stage, log, restoring=True)
    current.load_state_dict(resumed["stage_state"])
    return current


def _loss_fn(job: Job) -> nn.Module:
    cfg = job.cfg.train
    weight = None
    if cfg.balance in ("loss", "sqrt"):
        power = 0.5 if cfg.balance == "sqrt" else 1.0
        w = recipe.class_weights(job.data["train"].labels, len(job.index.classes), power)
        weight = torch.tensor(w, dtype=torch.float32, device=job.device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def _tensorboard(job: Job) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but never fail a run over logging
        return None
    return SummaryWriter(str(job.run.tensorboard))


def _run_epoch(
    job: Job,
    current: StageState,
    epoch: int,
    total: int,
    train_input: Callable[[torch.Tensor], torch.Tensor],
    eval_input: Callable[[torch.Tensor], torch.Tensor],
    val_loader: BatchLoader,
    loss_fn: nn.Module,
) -> dict[str, Any]:
    """Train one epoch on every rank, then evaluate on rank 0; every rank gets the row."""
    started = time.perf_counter()
    stats = _train_epoch(job, current, epoch, total, train_input, loss_fn)
    row = partial(_epoch_row, job, current, stats, epoch, started, eval_input, val_loader)
    return distributed.on_main(row)


def _train_epoch(
    job: Job,
    current: StageState,
    epoch: int,
    total: int,
    train_input: Callable[[torch.Tensor], torch.Tensor],
    loss_fn: nn.Module,
) -> EpochStats:
    cfg, ctx = job.cfg.train, job.dist
    # Same augmentation/dropout after a resume; each rank its own draws for its own images.
    torch.manual_seed((cfg.seed * 100_003 + epoch) * ctx.world_size + ctx.rank)
    current.net.train()
    if current.stage.name == "head" or cfg.bn == "frozen":
        set_bn_eval(job.model)
    loader = train_loader(job, epoch)
    stats = train_one_epoch(
        current.net,
        loader,
        train_input,
        loss_fn,
        current.optimizer,
        lambda: current.on_step(job.model),
        job.device,
        grad_clip=cfg.grad_clip,
        amp=cfg.amp,
        scaler=current.scaler,
        desc=f"epoch {epoch + 1}/{total} {current.stage.name}",
        total=len(loader),
        agree=distributed.all_true if ctx.enabled else None,
        show_progress=ctx.is_main,
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
    stats.loss_sum, stats.correct, stats.seen = loss_sum, int(correct), int(seen)
    stats.loss = loss_sum / max(seen, 1)
    stats.acc = correct / max(seen, 1)
    return stats


def _epoch_row(
    job: Job,
    current: StageState,
    stats: EpochStats,
    epoch: int,
    started: float,
    eval_input: Callable[[torch.Tensor], torch.Tensor],
    val_loader: BatchLoader,
) -> dict[str, Any]:
    """Rank 0's evaluation of the epoch (the exact metric over the whole val split)."""
    cfg = job.cfg.train
    eval_started = time.perf_counter()
    val = evaluate(current.eval_model(job.model), val_loader, eval_input, job.device, cfg.amp)
    now = time.perf_counter()
    return {
        "epoch": epoch + 1,
        "stage": current.stage.name,
        "train_loss": stats.loss,
        "train_acc": stats.acc,
        "val_loss": val.loss,
        "val_acc": val.metrics["accuracy"],
        "val_balanced_accuracy": val.metrics["balanced_accuracy"],
        "val_macro_f1": val.metrics["macro_f1"],
        "lr": max(g["lr"] for g in current.optimizer.param_groups),
        "data_s": stats.data_s,
        "augment_s": stats.augment_s,
        "compute_s": stats.compute_s,
        "eval_s": now - eval_started,
        "epoch_s": now - started,
        "skipped_steps": stats.skipped_steps,
    }


METRIC_KEYS = {
    "accuracy": "val_acc",
    "balanced_accuracy": "val_balanced_accuracy",
    "macro_f1": "val_macro_f1",
}


def smoothed_metric(history: list[dict[str, Any]], metric: str, window: int) -> float:
    values = [row[METRIC_KEYS[metric]] for row in history[-max(window, 1) :]]
    return float(np.mean(values))


def _select(job: Job, current: StageState, row: dict[str, Any]) -> bool:
    """Keep the weights whose smoothed validation metric is best; True if they improved."""
    cfg = job.cfg.train
    score = smoothed_metric(job.history, cfg.select_metric, cfg.smooth)
    row["selection_score"] = score
    if score <= job.best["metric"]:
        return False
    job.best = {"metric": score, "epoch": row["epoch"]}
    model = current.eval_model(job.model)
    save_checkpoint(_inference_state(job, model, row["epoch"]), job.run.best)
    return True


def _should_stop(job: Job, epoch: int) -> bool:
    patience = job.cfg.train.patience
    in_full = job.history[-1]["stage"] == "full"
    return patience > 0 and in_full and (epoch + 1) - job.best["epoch"] >= patience


def _inference_state(job: Job, model: nn.Module, epoch: int) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "model_name": job.cfg.model.name,
        "classes": job.index.classes,
        "preprocess": job.preprocess.to_dict(),
        "config": job.cfg.to_dict(),
        "epoch": epoch,
    }


def _last_state(job: Job, current: StageState, epochs_done: int) -> dict[str, Any]:
    state = _inference_state(job, job.model, epochs_done)
    state.update(
        {
            "model": job.model.state_dict(),
            "history": job.history,
            "best": job.best,
            "stage_state": current.state_dict(),
        }
    )
    return state


def _epoch_line(row: dict[str, Any], total: int) -> str:
    return (
        f"epoch {row['epoch']:>2}/{total} {row['stage']:<4} "
        f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f} | "
        f"val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} "
        f"bal {row['val_balanced_accuracy']:.3f} f1 {row['val_macro_f1']:.3f} | "
        f"lr {row['lr']:.1e} | {row['epoch_s']:.0f}s "
        f"(data wait {row['data_s']:.1f}s, augment {row['augment_s']:.1f}s, "
        f"compute {row['compute_s']:.1f}s, "
        f"eval {row['eval_s']:.1f}s)"
    )


def _write_summary(job: Job) -> dict[str, Any]:
    last = job.history[-1] if job.history else {}
    summary = {
        "model": job.cfg.model.name,
        "weights": job.weights_note,
        "classes": job.index.classes,
        "train_images": len(job.data["train"].labels),
        "val_images": len(job.data["val"].labels),
        "skipped_images": sum(len(d.skipped) for d in job.data.values()),
        "selected_metric": job.cfg.train.select_metric,
        "best_epoch": job.best["epoch"],
        "best_metric": job.best["metric"],
        "epochs_run": len(job.history),
        "final": {k: last.get(k) for k in ("val_acc", "val_balanced_accuracy", "val_macro_f1")},
        "data_wait_s": sum(r["data_s"] for r in job.history),
        "augment_s": sum(r["augment_s"] for r in job.history),
        "compute_s": sum(r["compute_s"] for r in job.history),
        "device": str(job.device),
        "world_size": job.dist.world_size,
        "wall_s": time.time() - job.started,
    }
    job.run.write_json(job.run.summary, summary)
    return summary
