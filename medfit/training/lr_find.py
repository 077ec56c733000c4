"""Learning-rate range test (Smith 2015, "Cyclical Learning Rates", section 3.3).

Train for a few dozen steps while the LR grows exponentially from `start` to `end`, record the
smoothed loss, stop once it diverges, and restore the weights. The rule that turns the curve into
one number (fastai's "minimum / 10"): take the LR where the smoothed loss is lowest and divide by
ten — the loss is still falling steeply there, while the minimum itself sits at the edge of
divergence. The pick is clipped to [1e-6, 1e-1].
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medfit.errors import MedfitError
from medfit.progress import ticking

SMOOTHING = 0.9  # exponential smoothing of the per-step loss
DIVERGE_FACTOR = 4.0  # stop when the smoothed loss exceeds 4x its minimum


@dataclass
class LrFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    if not lrs:
        raise MedfitError(
            "the LR range test recorded no finite loss; check the data, or pass a fixed --lr"
        )
    best = min(range(len(losses)), key=losses.__getitem__)
    return float(min(max(lrs[best] / 10.0, 1e-6), 1e-1))


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_steps: int = 100,
    start: float = 1e-7,
    end: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> LrFindResult:
    """Run the test; `model` and `optimizer` are returned to their initial state afterwards.
    With `log`, progress is shown (medfit.progress.ticking)."""
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    growth = (end / start) ** (1.0 / max(num_steps - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed, best = 0.0, math.inf
    try:
        steps: Iterable[int] = range(num_steps)
        if log is not None:
            steps = ticking(steps, num_steps, "lr-find", log)
        for step in steps:
            try:
                pixels, labels = next(batches)
            except StopIteration:
                break
            lr = start * growth**step
            for group, scale in zip(optimizer.param_groups, scales, strict=True):
                group["lr"] = lr * scale
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(pixels, labels)
            if not torch.isfinite(loss):
                break
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            smoothed = SMOOTHING * smoothed + (1 - SMOOTHING) * value
            debiased = smoothed / (1 - SMOOTHING ** (step + 1))
            lrs.append(lr)
            losses.append(debiased)
            best = min(best, debiased)
            if step > 5 and debiased > DIVERGE_FACTOR * best:
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
    return LrFindResult(lrs, losses, suggest_lr(lrs, losses))


def plot_lr_find(result: LrFindResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.axvline(
        result.suggestion, color="tab:red", linestyle="--", label=f"pick {result.suggestion:.1e}"
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
