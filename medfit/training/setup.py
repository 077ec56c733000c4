"""Setting up a run before its first step: the run directory, data, model, the "auto" options.

`setup_job` builds the `Job` that training (medfit.training.fit) runs: the data indexed and cached,
the model built with its weights, every "auto" option decided from the data into one new config
(`_resolve_auto`), the run directory claimed and its files written, and the run's header line.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from medfit.config import (
    DEFAULT_LABEL_SMOOTHING,
    DataConfig,
    RunConfig,
    TrainConfig,
    default_lr,
)
from medfit.data.cache import CachedSplit
from medfit.data.dataset import cache_splits, load_index
from medfit.data.modality import choose_augmentation
from medfit.data.sources import DatasetIndex, ignored_folders_hint, label_text
from medfit.data.task import describe_task, resolve_task
from medfit.errors import ConfigError, DataError
from medfit.model.backbones import Preprocess, create_model, set_prior_bias, unit_normalized
from medfit.model.checkpoint import load_checkpoint
from medfit.model.device import pick_device
from medfit.model.policy import resolve_bn_policy
from medfit.progress import Log
from medfit.rundir import EpochRow, RunDir, SplitRow, existing_run_dir
from medfit.training import distributed, recipe, resume
from medfit.training.distributed import DistContext
from medfit.training.outdir import check_writable, claim_fresh
from medfit.training.selection import BestTracker


@dataclass
class Job:
    """Everything a run holds while it trains."""

    cfg: RunConfig  # resolved once by setup_job; an LR settled by lr-find replaces it (_settle_lr)
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


def run_dir_for(out: str, resume_dir: str | None) -> RunDir:
    """Rank 0 picks a fresh directory name and the others use it (each would pick its own)."""
    if resume_dir:
        run = existing_run_dir(resume_dir)
        distributed.on_main(partial(check_writable, run.path, "--resume"))
        return run
    # Checked here, before any image is decoded or model built (training/outdir.py).
    return RunDir(Path(distributed.on_main(lambda: str(claim_fresh(out).path))))


def check_distributed(cfg: RunConfig, device: torch.device) -> None:
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


def setup_job(
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
    cfg, aug_reason = _resolve_auto(cfg, data["train"], index, ctx)
    if cfg.data.task == "multilabel" and new_run:
        set_prior_bias(model, data["train"].labels.mean(0))
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


def _open_run(job: Job, new: bool) -> None:
    job.run.acquire(new=new)
    if new:  # a resumed run's files are rewritten once its checkpoint is known to fit
        write_run_files(job)


def _check_global_batch(cfg: RunConfig, n_train: int, ctx: DistContext) -> None:
    """Every rank must get a full share of every global batch (see medfit.data.loader)."""
    global_batch = cfg.train.batch_size * ctx.world_size
    if ctx.enabled and n_train < global_batch:
        raise DataError(
            f"{n_train} training images cannot fill one global batch of {cfg.train.batch_size} "
            f"x {ctx.world_size} ranks = {global_batch}; lower --batch-size or use fewer ranks"
        )


def _resolve_auto(
    cfg: RunConfig,
    train: CachedSplit,
    index: DatasetIndex,
    ctx: DistContext = distributed.SINGLE,
) -> tuple[RunConfig, str]:
    """A copy of `cfg` with every "auto" that the data decides replaced by its value, and why the
    augmentation preset was chosen (the run's header says it)."""
    t = cfg.train
    task = resolve_task(cfg.data.task, index.classes, index.multilabel)
    choice = choose_augmentation(cfg.data.modality, cfg.data.aug, train.pixels)
    data = replace(cfg.data, aug=choice.preset, task=task)
    # BatchNorm sees the per-device batch, or the global one when SyncBatchNorm pools them.
    bn_batch = t.batch_size * ctx.world_size if t.sync_bn and ctx.enabled else t.batch_size
    bn = resolve_bn_policy(t.bn, bn_batch, t.bn_min_batch)
    if task == "multilabel":
        return replace(cfg, data=data, train=_multilabel_recipe(t, bn)), choice.reason
    if t.label_smoothing is None:
        t = replace(t, label_smoothing=DEFAULT_LABEL_SMOOTHING)
    if t.select_metric == "macro_auc":
        raise ConfigError(
            "--select-metric macro_auc is for multi-label data (several labels per image); "
            "this data has one label per image: use accuracy, balanced_accuracy or macro_f1"
        )
    ratio = recipe.imbalance_ratio(train.labels, len(index.classes))
    train_cfg = replace(
        t,
        bn=bn,
        lr=default_lr(bn) if t.lr is None else t.lr,
        balance=recipe.resolve_balance(t.balance, ratio),
        select_metric=recipe.resolve_select_metric(t.select_metric, ratio),
        loss=_resolve_loss(t.loss, data.task),
    )
    return replace(cfg, data=data, train=train_cfg), choice.reason


# Multi-label class balance: sqrt puts (negatives / positives) ** 0.5 as BCE's positive weight
# (capped at 10), so a finding on 4% of images counts ~5x per positive, not 24x.
MULTILABEL_BALANCE = "sqrt"
# Multi-label full-stage LR with BN in train mode: 3e-3 (the single-label default) collapsed one
# of 3 seeds on NIH (test macro AUC over 12 labels 0.473, below chance); 1e-3 did not (0.592 ±
# 0.004); 3e-4 underfit (clean train macro AUC 0.63). bench/README.md, "Multi-label".
MULTILABEL_LR = {"train": 1e-3}


def _multilabel_recipe(t: TrainConfig, bn: str) -> TrainConfig:
    """The training config of a multi-label run: sigmoid outputs with BCE, selected on macro
    ROC-AUC; the options that only mean something for one label per image are refused."""
    single = {
        "--loss ce/sord": t.loss in ("ce", "sord"),
        "--mixup/--cutmix": bool(t.mixup or t.cutmix),
        "--balance sampler": t.balance == "sampler",
        "--stop-at (a val accuracy)": bool(t.stop_at),
        f"--select-metric {t.select_metric}": t.select_metric
        in ("accuracy", "balanced_accuracy", "macro_f1"),
    }
    refused = [name for name, given in single.items() if given]
    if refused:
        raise ConfigError(
            f"{', '.join(refused)}: single-label option(s), and this data is multi-label "
            "(several labels per image); drop them (multi-label runs train sigmoid outputs with "
            "BCE and select on macro ROC-AUC, or --select-metric val_loss)"
        )
    return replace(
        t,
        bn=bn,
        lr=MULTILABEL_LR.get(bn, default_lr(bn)) if t.lr is None else t.lr,
        label_smoothing=0.0 if t.label_smoothing is None else t.label_smoothing,
        balance=MULTILABEL_BALANCE if t.balance == "auto" else t.balance,
        select_metric="macro_auc" if t.select_metric == "auto" else t.select_metric,
        loss="bce",
    )


def _resolve_loss(loss: str, task: str) -> str:
    if loss == "bce" and task != "multilabel":
        raise ConfigError(
            "--loss bce is the multi-label loss (several labels per image); this data's task is "
            f"{task}: use --loss ce"
        )
    if loss == "sord" and task != "ordinal":
        raise ConfigError(
            "--loss sord needs ordinal grades (class names with grade numbers, or --task "
            f"ordinal); this data's task is {task}: use --loss ce"
        )
    if loss == "auto":
        return "sord" if task == "ordinal" else "ce"
    return loss


def write_run_files(job: Job) -> None:
    run = job.run
    job.cfg.dump(run.config)
    run.write_json(run.classes, job.index.classes)
    run.write_json(run.preprocess, job.preprocess.to_dict())
    rows = []
    for split, part in job.data.items():
        for path, label in zip(part.paths, part.labels, strict=True):
            rows.append(SplitRow(path, label_text(label, job.index.classes), split, "ok"))
        rows += [SplitRow(path, "", split, f"skipped: {why}") for path, why in part.skipped]
    run.write_split_rows(rows)


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
        f"  data {job.index.root}: {len(job.index.classes)} "
        + ("labels, " if job.index.multilabel else "classes, ")
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


def channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """NHWC on CUDA (tensor cores) and on the CPU, where oneDNN's convolutions run in it natively:
    EfficientNet-Lite0 training steps took 0.49x the time at 64 px (bench/step_cost.py)."""
    return cfg.train.channels_last and device.type in ("cuda", "cpu")
