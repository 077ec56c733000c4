"""One training epoch and one evaluation pass, with time split into data wait and compute."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torch import nn
from tqdm import tqdm

from medfit.errors import MedfitError
from medfit.inference.scores import multilabel_epoch_metrics

ToInput = Callable[[torch.Tensor], torch.Tensor]  # uint8 batch -> model input on the device
MAX_BAD_STEPS = 10  # consecutive non-finite losses before the run stops


@dataclass
class EpochStats:
    loss: float = 0.0
    acc: float = 0.0
    data_s: float = 0.0  # time blocked waiting for the next batch from the cache
    augment_s: float = 0.0  # batch augmentation + normalisation on the device
    compute_s: float = 0.0  # forward/backward/step (synchronised on CUDA)
    skipped_steps: int = 0
    steps: int = 0
    # The sums behind loss/acc, so that ranks can add theirs up (medfit.training.distributed).
    loss_sum: float = 0.0
    correct: float = 0.0  # multi-label: fractional (see _correct)
    seen: int = 0


@dataclass
class EvalResult:
    loss: float
    labels: np.ndarray
    probs: np.ndarray  # (N, num_classes)
    metrics: dict[str, float] = field(default_factory=dict)


def autocast_for(device: torch.device, enabled: bool) -> AbstractContextManager[object]:
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2; see torch's reproducibility
# notes); ":4096:8" is the setting PyTorch documents, costing a few MiB of GPU memory.
CUBLAS_DETERMINISTIC = ":4096:8"


@contextmanager
def deterministic_mode(enabled: bool, seed: int) -> Iterator[None]:
    """Run the body with deterministic kernels and every RNG seeded; restore the settings after.

    torch.use_deterministic_algorithms(True) picks deterministic kernels and raises on ops that
    have none (turned into a one-line error here); cuDNN autotuning is off because it may pick a
    different (differently rounding) kernel per run. Batch order is already seeded per epoch
    (medfit.data.loader) and the prefetch threads only copy rows, so they add no randomness.
    """
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        yield
    except RuntimeError as exc:
        if "deterministic" not in str(exc):
            raise
        first = str(exc).strip().splitlines()[0]
        raise MedfitError(
            f"--deterministic: an operation has no deterministic kernel on this device ({first}); "
            "run without --deterministic or on the CPU"
        ) from None
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    to_input: ToInput,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    on_step: Callable[[], None],
    device: torch.device,
    grad_clip: float = 0.0,
    amp: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    desc: str = "train",
    total: int | None = None,
    agree: Callable[[bool], bool] | None = None,
    show_progress: bool = True,
    after_step: Callable[[], None] | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]] | None = None,
) -> EpochStats:
    """Train over `batches` once. `on_step` runs after each optimizer step (LR schedule, EMA);
    `after_step` after each step is timed (progress and the expected time); `mix` (mixup/CutMix,
    medfit.training.losses.Mixer) turns a batch and its labels into mixed inputs and targets.

    `agree` turns this process's "loss is finite" into the verdict of all processes (DDP: every
    rank must skip the same steps, or their gradient all-reduces would no longer pair up).
    """
    stats = EpochStats()
    loss_sum, correct, seen, bad_in_a_row = 0.0, 0.0, 0, 0
    params = [p for p in model.parameters() if p.requires_grad]
    disable = None if show_progress else True  # None: tqdm decides (off when not a terminal)
    progress = tqdm(batches, total=total, desc=desc, leave=False, disable=disable)
    tick = time.perf_counter()
    for pixels, labels in progress:
        started = time.perf_counter()
        stats.data_s += started - tick
        labels = labels.to(device, non_blocking=True)
        inputs = to_input(pixels)
        targets = labels
        if mix is not None:
            inputs, targets = mix(inputs, labels)
        _sync(device)
        augmented = time.perf_counter()
        stats.augment_s += augmented - started
        with autocast_for(device, amp):
            logits = model(inputs)
            loss = loss_fn(logits.float(), targets)
        finite = bool(torch.isfinite(loss))
        if not (agree(finite) if agree is not None else finite):
            stats.skipped_steps += 1
            bad_in_a_row += 1
            if bad_in_a_row >= MAX_BAD_STEPS:
                raise MedfitError(
                    f"loss was NaN/inf for {MAX_BAD_STEPS} steps in a row; stopping. Lower the "
                    "learning rate (--lr) or check the data for corrupt values"
                )
            optimizer.zero_grad(set_to_none=True)
            tick = time.perf_counter()
            continue
        bad_in_a_row = 0
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        on_step()
        n = labels.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += _correct(logits.detach(), labels)
        seen += n
        stats.steps += 1
        _sync(device)
        tick = time.perf_counter()
        stats.compute_s += tick - augmented
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if after_step is not None:
            after_step()
    stats.loss_sum, stats.correct, stats.seen = loss_sum, correct, seen
    stats.loss = loss_sum / max(seen, 1)
    stats.acc = correct / max(seen, 1)
    return stats


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Correct predictions in a batch: argmax = label, or for multi-label targets (B, L) the
    share of labels on the right side of p = 0.5 per image (summed over the batch)."""
    if labels.ndim == 2:
        return float(((logits > 0) == labels.bool()).float().mean(1).sum())
    return float((logits.argmax(1) == labels).sum())


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    to_input: ToInput,
    device: torch.device,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits, labels) over all batches, model in eval mode."""
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    for pixels, labels in batches:
        with autocast_for(device, amp):
            logits = model(to_input(pixels))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    model.train(was_training)
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    predicted = probs.argmax(1)
    classes = np.arange(probs.shape[1])
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
        ),
    }


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    to_input: ToInput,
    device: torch.device,
    amp: bool = False,
) -> EvalResult:
    logits, labels = predict_batches(model, batches, to_input, device, amp)
    logits_t = torch.from_numpy(logits)
    if labels.ndim == 2:  # multi-label: (N, L) 0/1 targets, sigmoid outputs
        targets = torch.from_numpy(labels).float()
        loss = float(nn.functional.binary_cross_entropy_with_logits(logits_t, targets))
        probs = torch.sigmoid(logits_t).numpy()
        metrics = multilabel_epoch_metrics(labels, probs)
    else:
        loss = float(nn.functional.cross_entropy(logits_t, torch.from_numpy(labels)))
        probs = torch.softmax(logits_t, 1).numpy()
        metrics = classification_metrics(labels, probs)
    if not math.isfinite(loss):
        loss = float("nan")
    return EvalResult(loss, labels, probs, metrics)
