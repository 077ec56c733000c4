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
  model selection, --select-metric direction, early stopping          tracker.BestTracker
  console line, metrics.jsonl|csv, TensorBoard                        epoch_log.EpochLog
  a stage's start: AdaBN, freezing, --lr auto (LR range test)         `start_stage`
  optimizer, LR schedule, EMA, the stage plan                         recipe (StageState)
  "auto" options decided from the data (one new config, before training)   `_resolve_auto`
  what best.pt / last.pt hold (and what a resume reads back)   `_inference_state` / `_last_state`
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from medfit.config import DataConfig, RunConfig, default_lr
from medfit.data.augment import build_train_augment
from medfit.data.cache import CachedSplit
from medfit.data.dataset import cache_splits, load_index
from medfit.data.loader import BatchLoader
from medfit.data.modality import choose_augmentation
from medfit.data.sources import DatasetIndex, ignored_folders_hint
from medfit.data.task import describe_task, grade_ranks, resolve_task
from medfit.errors import ConfigError, DataError
from medfit.model.backbones import Preprocess, create_model, unit_normalized
from medfit.model.checkpoint import load_checkpoint, save_checkpoint
from medfit.model.device import pick_device
from medfit.model.policy import recalibrate_bn, resolve_bn_policy, set_bn_eval, stem_parameters
from medfit.progress import Log, StepClock
from medfit.rundir import EpochRow, RunDir, Summary, existing_run_dir
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
from medfit.training.losses import SoftOrdinalLoss
from medfit.training.lr_find import lr_range_test, plot_lr_find
from medfit.training.outdir import check_writable, claim_fresh
from medfit.training.recipe import StageState
from medfit.training.tracker import BestTracker


def _quiet(_: str) -> None:
    """The log of ranks other than 0: one voice per job."""


@dataclass
class RunResult:
    dir: Path
    history: list[EpochRow]
    summary: dict[str, Any]
    config: RunConfig
    is_main: bool = True  # False on torchrun ranks other than 0 (which must not print results)


@dataclass
class Job:
    """Everything a run holds while it trains."""

    cfg: RunConfig  # resolved once by _setup; an LR settled by lr-find replaces it (_settle_lr)
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
    history: list[EpochRow] = field(default_factory=list)
    tracker: BestTracker = field(init=False)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        t = self.cfg.train
        self.tracker = BestTracker(t.select_metric, t.smooth, t.patience, t.stop_at)


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
    if not resume_dir and run.path != Path(cfg.out).expanduser():
        log(f"{cfg.out} exists; writing {run.path}")  # never overwritten, never silently renamed
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
        run = existing_run_dir(resume_dir)
        distributed.on_main(partial(check_writable, run.path, "--resume"))
        return run
    # Checked here, before any image is decoded or model built (training/outdir.py).
    return RunDir(Path(distributed.on_main(lambda: str(claim_fresh(out).path))))


def _check_distributed(cfg: RunConfig, device: torch.device) -> None:
    """Options that a DistributedDataParallel run cannot honour, refused before any work."""
    t = cfg.train
    if "auto" in (t.lr, t.head_lr):
        raise ConfigError(
            "--lr/--head-lr auto (LR range test) runs in a single process: run `medfit lr-find "
            "DATA` first, then pass the suggested --lr/--head-lr to torchrun"
        )
    if t.freeze_stem_epochs:
        raise ConfigError(
            "--freeze-stem-epochs changes which weights train inside a stage, which "
            "DistributedDataParallel does not allow: drop it under torchrun"
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
    if new_run:  # the run must work from any folder: eval/export read these paths later
        cfg = replace(cfg, data=absolute_data_paths(cfg.data))
    index = load_index(cfg.data, cfg.train.seed)
    if not new_run and run.last.is_file():  # a mismatched resume is refused before any caching
        resume.check_resumable(load_checkpoint(run.last), cfg, index.classes, run)
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
    cfg = replace(cfg, out=str(run.path), data=replace(cfg.data, img_size=preprocess.img_size))
    # Rank 0 decodes the cache (atomic entries) while the others wait, then they all open it.
    data = distributed.main_first(
        lambda: cache_splits(
            index, cfg.data, preprocess.cache_size, preprocess.interpolation, cfg.train.seed, log
        )
    )
    if "val" not in data:
        raise DataError(f"{index.root}: the validation split is empty")
    _check_global_batch(cfg, len(data["train"].labels), ctx)
    cfg, aug_reason = _resolve_auto(cfg, data["train"], index.classes, ctx)
    model.to(device)
    if channels_last(cfg, device):
        model.to(memory_format=torch.channels_last)
    job = Job(cfg, run, device, index, data, model, preprocess, note, aug_reason, dist=ctx)
    distributed.on_main(partial(_open_run, job, new_run))
    log(_describe(job))
    return job


def absolute_data_paths(data: DataConfig) -> DataConfig:
    """`data` with its root and cache folder absolute (relative ones are read against the working
    directory now, not wherever a later command runs)."""
    root = os.path.abspath(os.path.expanduser(data.root)) if data.root else data.root
    cache = os.path.abspath(os.path.expanduser(data.cache_dir)) if data.cache_dir else None
    return replace(data, root=root, cache_dir=cache)


def setup(cfg: RunConfig, run: RunDir, log: Log) -> Job:
    """A single-process job in `run`, data and model ready, nothing trained (medfit lr-find)."""
    return _setup(cfg, run, log)


def _open_run(job: Job, new: bool) -> None:
    job.run.acquire(new=new)
    if new:  # a resumed run's files are rewritten once its checkpoint is known to fit
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
) -> tuple[RunConfig, str]:
    """A copy of `cfg` with every "auto" that the data decides replaced by its value, and why the
    augmentation preset was chosen (the run's header says it)."""
    t = cfg.train
    ratio = recipe.imbalance_ratio(train.labels, len(classes))
    choice = choose_augmentation(cfg.data.modality, cfg.data.aug, train.pixels)
    data = replace(cfg.data, aug=choice.preset, task=resolve_task(cfg.data.task, classes))
    # BatchNorm sees the per-device batch, or the global one when SyncBatchNorm pools them.
    bn_batch = t.batch_size * ctx.world_size if t.sync_bn and ctx.enabled else t.batch_size
    bn = resolve_bn_policy(t.bn, bn_batch, t.bn_min_batch)
    train_cfg = replace(
        t,
        bn=bn,
        lr=default_lr(bn) if t.lr is None else t.lr,
        balance=recipe.resolve_balance(t.balance, ratio),
        select_metric=recipe.resolve_select_metric(t.select_metric, ratio),
        loss=_resolve_loss(t.loss, data.task),
    )
    return replace(cfg, data=data, train=train_cfg), choice.reason


def _resolve_loss(loss: str, task: str) -> str:
    if loss == "sord" and task != "ordinal":
        raise ConfigError(
            "--loss sord needs ordinal grades (class names with grade numbers, or --task "
            f"ordinal); this data's task is {task}: use --loss ce"
        )
    if loss == "auto":
        return "sord" if task == "ordinal" else "ce"
    return loss


def _write_run_files(job: Job) -> None:
    run = job.run
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
        + _ignored_folders_note(job.index)
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


def _ignored_folders_note(index: DatasetIndex) -> str:
    return f"\n  {ignored_folders_hint(index.ignored_folders)}" if index.ignored_folders else ""


def _links_note(index: DatasetIndex) -> str:
    if not index.followed_links:
        return ""
    first = ", ".join(index.followed_links[:3])
    n = len(index.followed_links)
    more = ", ..." if n > 3 else ""
    return f"\n  {n} folder symlink(s) followed out of the data set: {first}{more}"


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
    loss_fn = nn.CrossEntropyLoss(label_smoothing=job.cfg.train.label_smoothing)
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


def channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """NHWC on CUDA (tensor cores) and on the CPU, where oneDNN's convolutions run in it natively:
    EfficientNet-Lite0 training steps took 0.49x the time at 64 px (bench/step_cost.py)."""
    return cfg.train.channels_last and device.type in ("cuda", "cpu")


def _resume_state(job: Job, log: Log) -> dict[str, Any] | None:
    """last.pt checked against the run's config and data (training/resume.py), then loaded; the
    run's files are rewritten only after that, so a refused resume leaves the run as it was."""
    if not job.run.last.exists():
        log(f"  {job.run.last} not written yet (stopped in the first epoch): starting over")
        distributed.on_main(partial(_write_run_files, job))
        return None
    state = load_checkpoint(job.run.last)
    changes = resume.check_resumable(state, job.cfg, job.index.classes, job.run)
    resume.replan_schedule(state, changes)
    job.model.load_state_dict(state["model"])
    job.history = [EpochRow.from_dict(row) for row in state["history"]]
    job.tracker.load_state_dict(state["best"])
    distributed.on_main(partial(_write_run_files, job))
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

    @classmethod
    def build(cls, job: Job) -> EpochKit:
        val = job.data["val"]
        return cls(
            BatchLoader(val.pixels, val.labels, job.cfg.train.batch_size * 2),
            input_fn(job, train=False),
            input_fn(job, train=True),
            _loss_fn(job),
        )


def _loss_fn(job: Job) -> nn.Module:
    cfg = job.cfg.train
    weight = None
    if cfg.balance in ("loss", "sqrt"):
        power = 0.5 if cfg.balance == "sqrt" else 1.0
        w = recipe.class_weights(job.data["train"].labels, len(job.index.classes), power)
        weight = torch.tensor(w, dtype=torch.float32, device=job.device)
    if cfg.loss == "sord":
        return SoftOrdinalLoss(grade_ranks(job.index.classes), weight).to(job.device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


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
    final_keys = ("val_acc", "val_balanced_accuracy", "val_macro_f1")
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
