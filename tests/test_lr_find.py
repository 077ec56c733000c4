"""The LR range test (medfit.training.lr_find)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from medfit.errors import MedfitError
from medfit.training.lr_find import LrFindResult, lr_range_test, plot_lr_find, suggest_lr

# --- the pick rule -----------------------------------------------------------------------------


def test_suggest_lr_is_min_over_ten() -> None:
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    assert suggest_lr(lrs, [1.0, 0.5, 0.2, 0.9]) == pytest.approx(1e-3)
    assert suggest_lr(lrs, [1.0, 0.1, 0.2, 0.9]) == pytest.approx(1e-4)


def test_suggest_lr_is_clipped() -> None:
    assert suggest_lr([1e-7, 1e-6], [0.1, 0.5]) == pytest.approx(1e-6)
    assert suggest_lr([1e-1, 1.0, 10.0], [0.9, 0.5, 0.1]) == pytest.approx(1e-1)


def test_suggest_lr_empty_raises() -> None:
    with pytest.raises(MedfitError, match="no finite loss"):
        suggest_lr([], [])


# --- the range test ----------------------------------------------------------------------------


def _batches(seed: int = 0, spread: float = 0.5) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of a two-class problem, separable unless `spread` is large."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        labels = torch.randint(0, 2, (16,), generator=gen)
        x = torch.randn(16, 2, generator=gen) * spread
        x[:, 0] += labels.float() * 4 - 2
        yield x, labels


def _setup(opt_name: str = "sgd", seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(2, 2)
    if opt_name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(x), y)

    return model, opt, step_loss


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer):
    params = {k: v.clone() for k, v in model.state_dict().items()}
    state = {
        i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for i, s in enumerate(opt.state.values())
    }
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return params, state, groups


def _assert_same(model: nn.Module, opt: torch.optim.Optimizer, snap) -> None:
    params, state, groups = snap
    now = model.state_dict()
    for k, v in params.items():
        assert torch.equal(now[k], v), k
    assert len(opt.state) == len(state)
    for i, s in enumerate(opt.state.values()):
        for k, v in s.items():
            if torch.is_tensor(v):
                assert torch.equal(v, state[i][k]), k
            else:
                assert v == state[i][k], k
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups


def test_range_test_learns_grows_geometrically_and_restores() -> None:
    model, opt, step_loss = _setup("adamw")
    batches = _batches()
    for _ in range(3):  # the optimizer has state before the test: it must come back intact
        x, y = next(batches)
        opt.zero_grad()
        step_loss(x, y).backward()
        opt.step()
    snap = _snapshot(model, opt)

    result = lr_range_test(model, opt, batches, step_loss, num_steps=40, start=1e-4, end=1.0)

    assert isinstance(result, LrFindResult)
    assert len(result.lrs) == len(result.losses) == 40
    assert result.lrs[0] == pytest.approx(1e-4)
    assert result.lrs[-1] == pytest.approx(1.0)
    growth = (1.0 / 1e-4) ** (1 / 39)
    for a, b in zip(result.lrs, result.lrs[1:], strict=False):
        assert b / a == pytest.approx(growth)
    assert min(result.losses) < 0.5 * result.losses[0]  # it did train on the problem
    assert all(math.isfinite(v) for v in result.losses)
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]
    assert result.suggestion == suggest_lr(result.lrs, result.losses)
    _assert_same(model, opt, snap)


def test_range_test_stops_on_divergence_and_restores() -> None:
    model, opt, step_loss = _setup("sgd")
    snap = _snapshot(model, opt)
    assert not opt.state  # fresh: the test's momentum buffers must not stay behind
    # Overlapping classes: at huge LRs the weights blow up and misclassified points cost a lot.
    batches = _batches(1, spread=3.0)
    result = lr_range_test(model, opt, batches, step_loss, num_steps=100, start=1e-3, end=1e9)
    assert 6 < len(result.lrs) < 100
    assert result.lrs[0] <= result.suggestion <= result.lrs[-1]
    assert result.losses[-1] > 4.0 * min(result.losses)  # stopped because the loss blew up
    assert not opt.state
    _assert_same(model, opt, snap)


def test_range_test_scales_each_group_by_lr_scale() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.5, "lr_scale": 0.25},
            {"params": model[1].parameters(), "lr": 0.5, "lr_scale": 1.0},
        ],
        lr=0.5,
    )
    seen: list[tuple[float, float]] = []

    def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        return nn.functional.cross_entropy(model(x), y)

    result = lr_range_test(model, opt, _batches(), step_loss, num_steps=5, start=1e-3, end=1e-2)
    assert len(seen) == len(result.lrs) == 5
    for (low, high), lr in zip(seen, result.lrs, strict=True):
        assert high == pytest.approx(lr)
        assert low == pytest.approx(0.25 * lr)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]


def test_range_test_stops_when_batches_run_out() -> None:
    model, opt, step_loss = _setup()
    finite = iter([next(_batches()) for _ in range(3)])
    result = lr_range_test(model, opt, finite, step_loss, num_steps=50)
    assert len(result.lrs) == 3


def test_range_test_restores_even_when_nothing_is_recorded() -> None:
    model, opt, _ = _setup()
    snap = _snapshot(model, opt)

    def nan_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x).sum() * float("nan")

    with pytest.raises(MedfitError):
        lr_range_test(model, opt, _batches(), nan_loss, num_steps=10)
    _assert_same(model, opt, snap)


# --- the plot ----------------------------------------------------------------------------------


def test_plot_lr_find_writes_a_png(tmp_path: Path) -> None:
    result = LrFindResult([1e-5, 1e-4, 1e-3, 1e-2], [1.0, 0.8, 0.4, 2.0], 1e-4)
    path = tmp_path / "lr_find.png"
    plot_lr_find(result, path, "LR range test")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000
