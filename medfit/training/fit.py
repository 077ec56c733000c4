"""Run a whole fine-tuning job: data -> model -> stages -> run directory.

`fit(cfg)` starts a run, `fit(cfg, resume_dir=RUN)` continues one from `RUN/checkpoints/last.pt`.
Every epoch is reseeded from (seed, epoch), so a resumed run replays exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn

from medfit.config import RunConfig
from medfit.data.augment import build_eval_transform, build_train_augment, resolve_preset
from medfit.data.cache import CachedSplit
from medfit.data.dataset import cache_splits, load_index
from medfit.data.loader import BatchLoader, to_model_input
from medfit.data.sources import DatasetIndex
from medfit.errors import DataError
from medfit.model.backbones import Preprocess, create_model, unit_normalized
from medfit.model.policy import recalibrate_bn, resolve_bn_policy, set_bn_eval
from medfit.training import recipe
from medfit.training.checkpoint import load_checkpoint, save_checkpoint
from medfit.training.engine import autocast_for, evaluate, train_one_epoch
from medfit.training.lr_find import lr_range_test, plot_lr_find
from medfit.training.rundir import RunDir, existing_run_dir, fresh_run_dir

Log = Callable[[str], None]


@dataclass
class RunResult:
    dir: Path
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    config: RunConfig


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
    cfg.validate()
    run = existing_run_dir(resume_dir) if resume_dir else fresh_run_dir(cfg.out)
    job = _setup(cfg, run, log)  # checks data and weights before the run dir is created
    try:
        state = _resume_state(job, log) if resume_dir else None
        _train(job, state, log)
        return RunResult(run.path, job.history, _write_summary(job), job.cfg)
    finally:
        run.release()


def _setup(cfg: RunConfig, run: RunDir, log: Log) -> Job:
    torch.manual_seed(cfg.train.seed)
    device = pick_device(cfg.train.device)
    index = load_index(cfg.data, cfg.train.seed)
    model, preprocess, note = create_model(
        cfg.model.name,
        len(index.classes),
        cfg.model.weights,
        cfg.data.img_size,
        cfg.model.drop_rate,
    )
    if cfg.model.normalize == "unit":
        preprocess = unit_normalized(preprocess)
    cfg.data.img_size = preprocess.img_size
    data = cache_splits(
        index, cfg.data, preprocess.img_size, preprocess.interpolation, cfg.train.seed, log
    )
    if "val" not in data:
        raise DataError(f"{index.root}: the validation split is empty")
    _resolve_auto(cfg, data["train"], len(index.classes))
    model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    job = Job(cfg, run, device, index, data, model, preprocess, note)
    run.acquire()
    _write_run_files(job)
    log(_describe(job))
    return job


def _resolve_auto(cfg: RunConfig, train: CachedSplit, num_classes: int) -> None:
    """Replace every "auto" that can be decided from the data by its concrete value."""
    t = cfg.train
    ratio = recipe.imbalance_ratio(train.labels, num_classes)
    cfg.data.aug = resolve_preset(cfg.data.aug, grayscale=train.channels == 1)
    t.bn = resolve_bn_policy(t.bn, t.batch_size, t.bn_min_batch)
    if t.lr is None:
        t.lr = recipe.default_lr(t.bn)
    t.balance = recipe.resolve_balance(t.balance, ratio)
    t.select_metric = recipe.resolve_select_metric(t.select_metric, ratio)


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
    return (
        f"medfit: {cfg.model.name} ({job.weights_note}) on {job.device}\n"
        f"  data {job.index.root}: {len(job.index.classes)} classes, "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + (" (val split off train, saved in split.csv)" if job.index.val_from_train else "")
        + _ignored_note(job.index)
        + f"\n  input {p.img_size}px, mean {p.mean} std {p.std} (from the weights' config), "
        f"aug {cfg.data.aug}, bn {cfg.train.bn}, balance {cfg.train.balance}, "
        f"select on {cfg.train.select_metric}\n  run dir {job.run.path}"
    )


def _ignored_note(index: DatasetIndex) -> str:
    if not index.ignored_files:
        return ""
    first = ", ".join(index.ignored_files[:3])
    n = len(index.ignored_files)
    return f"\n  {n} file(s) not used (not images, or outside class folders), e.g. {first}"


class StageState:
    """The optimizer, schedule, EMA and loaders of the stage being trained."""

    def __init__(self, job: Job, stage: recipe.Stage, log: Log, restoring: bool = False) -> None:
        cfg = job.cfg.train
        self.stage = stage
        if stage.name == "head" and cfg.bn_recalibrate and not restoring:
            _recalibrate(job, log)
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


def _recalibrate(job: Job, log: Log) -> None:
    part = job.data["train"]
    loader = BatchLoader(
        part.pixels, part.labels, job.cfg.train.batch_size, shuffle=True, seed=job.cfg.train.seed
    )
    loader.set_epoch(-1)  # an order no training epoch uses
    to_input = input_fn(job, train=False)
    used = recalibrate_bn(job.model, (to_input(pixels) for pixels, _ in loader))
    log(f"  BatchNorm statistics re-estimated on {used} training batches (AdaBN)")


def _cycle(loader: BatchLoader) -> Any:
    while True:
        yield from loader


def train_loader(job: Job, epoch: int) -> BatchLoader:
    cfg, part = job.cfg.train, job.data["train"]
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
        drop_last=len(part.labels) > cfg.batch_size,  # a 1-image last batch breaks BN in train mode
        seed=cfg.seed,
        prefetch=cfg.workers,
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


def _resume_state(job: Job, log: Log) -> dict[str, Any]:
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
    writer = _tensorboard(job)
    for epoch in range(start, total):
        stage, _ = recipe.stage_of_epoch(job.stages, epoch)
        if current is None or current.stage is not stage:
            if resumed and resumed["stage_state"]["stage"] == stage.name:
                stage.lr = float(resumed["stage_state"]["lr"])
                current = _restore_stage(job, stage, resumed, log)
            else:
                current = StageState(job, stage, log)
        row = _run_epoch(job, current, epoch, total, train_input, eval_input, val_loader, loss_fn)
        job.history.append(row)
        improved = _select(job, current, row)
        job.run.write_history(job.history)
        if writer is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    writer.add_scalar(key, value, epoch + 1)
            writer.flush()
        log(_epoch_line(row, total))
        save_checkpoint(_last_state(job, current, epoch + 1), job.run.last)
        if not improved and _should_stop(job, epoch):
            log(
                f"  early stop: {cfg.select_metric} (smoothed) has not improved "
                f"for {cfg.patience} epochs"
            )
            break
    if writer is not None:
        writer.close()


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
    if cfg.balance == "loss":
        w = recipe.class_weights(job.data["train"].labels, len(job.index.classes))
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
    cfg = job.cfg.train
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # same augmentation/dropout after a resume
    started = time.perf_counter()
    job.model.train()
    if current.stage.name == "head" or cfg.bn == "frozen":
        set_bn_eval(job.model)
    loader = train_loader(job, epoch)
    stats = train_one_epoch(
        job.model,
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
    )
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
        "wall_s": time.time() - job.started,
    }
    job.run.write_json(job.run.summary, summary)
    return summary
