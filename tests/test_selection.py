"""Model selection and early stopping (medfit.training.selection), in both metric directions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import medfit
from medfit.cli import build_parser
from medfit.rundir import EpochRow
from medfit.training.cli import config_from_args
from medfit.training.selection import BestTracker
from tests.test_train import make_dataset


def row(epoch: int, stage: str = "full", val_loss: float = 1.0, val_acc: float = 0.5) -> EpochRow:
    return EpochRow(epoch, stage, 0.5, 0.5, val_loss, val_acc, val_acc, val_acc, 1e-3)


def feed(tracker: BestTracker, rows: list[EpochRow]) -> list[bool]:
    return [tracker.update(rows[: i + 1]) for i in range(len(rows))]


def test_val_loss_selects_the_lowest_smoothed_loss() -> None:
    tracker = BestTracker("val_loss", smooth=2)
    rows = [row(1, val_loss=1.0), row(2, val_loss=0.6), row(3, val_loss=0.8), row(4, val_loss=0.9)]
    assert feed(tracker, rows) == [True, True, True, False]
    assert [r.selection_score for r in rows] == pytest.approx([1.0, 0.8, 0.7, 0.85])
    # The lowest mean of two epochs wins (epoch 3), not the single lowest epoch (2).
    assert tracker.epoch == 3 and tracker.best == pytest.approx(0.7)


def test_accuracy_selects_the_highest_and_ties_keep_the_earlier_epoch() -> None:
    tracker = BestTracker("accuracy")
    rows = [row(1, val_acc=0.6), row(2, val_acc=0.9), row(3, val_acc=0.9), row(4, val_acc=0.7)]
    assert feed(tracker, rows) == [True, True, False, False]
    assert (tracker.epoch, tracker.best) == (2, 0.9)


def test_the_first_epoch_is_always_kept_and_nan_never_replaces_a_number() -> None:
    tracker = BestTracker("val_loss")
    assert feed(tracker, [row(1, val_loss=math.nan), row(2, val_loss=2.0)]) == [True, True]
    assert tracker.update([row(3, val_loss=math.nan)]) is False
    assert (tracker.epoch, tracker.best) == (2, 2.0)


def test_patience_counts_full_epochs_since_the_best() -> None:
    tracker = BestTracker("accuracy", patience=2)
    rows = [row(1, "head", val_acc=0.9), row(2, val_acc=0.5), row(3, val_acc=0.5)]
    feed(tracker, rows)
    assert tracker.epoch == 1
    assert not tracker.should_stop(rows[1])  # one epoch without improvement
    assert tracker.should_stop(rows[2])
    assert not tracker.should_stop(row(3, "head"))  # the head stage never stops a run
    assert not BestTracker("accuracy", patience=0).should_stop(row(99))


def test_stop_at_stops_the_first_epoch_whose_val_accuracy_reaches_the_target() -> None:
    tracker = BestTracker("balanced_accuracy", smooth=3, patience=0, stop_at=0.9)
    rows = [row(1, "head", val_acc=0.7), row(2, val_acc=0.89), row(3, val_acc=0.9)]
    feed(tracker, rows)
    assert [tracker.should_stop(r) for r in rows] == [False, False, True]
    assert tracker.why_stopped() == "val accuracy reached --stop-at 0.9"
    assert not BestTracker("accuracy").should_stop(row(1, val_acc=1.0))  # 0 = off


def test_state_dict_round_trips_and_old_checkpoints_resume() -> None:
    tracker = BestTracker("val_loss")
    feed(tracker, [row(1, val_loss=0.4), row(2, val_loss=0.5)])
    again = BestTracker("val_loss")
    again.load_state_dict(tracker.state_dict())
    assert (again.epoch, again.best) == (1, 0.4)
    assert again.update([row(3, val_loss=0.45)]) is False  # 0.45 does not beat the restored 0.4

    old = BestTracker("accuracy")  # medfit <= 0.x last.pt: best = {"metric": ..., "epoch": ...}
    old.load_state_dict({"metric": 0.8, "epoch": 3})
    assert (old.epoch, old.best) == (3, 0.8)
    old.load_state_dict({"metric": -1.0, "epoch": 0})  # nothing selected yet
    assert old.best is None and old.update([row(1, val_acc=0.1)])


def test_val_loss_is_a_select_metric_choice() -> None:
    cfg = config_from_args(build_parser().parse_args(["train", "D", "--select-metric", "val_loss"]))
    cfg.validate()
    assert cfg.train.select_metric == "val_loss"


def test_a_val_loss_run_keeps_the_lowest_loss_epoch(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=8)
    opts = {
        "model": "test_efficientnet",
        "weights": "none",
        "img_size": 32,
        "batch_size": 8,
        "head_epochs": 1,
        "epochs": 3,
        "smooth": 1,
        "patience": 0,
        "workers": 0,
        "device": "cpu",
        "select_metric": "val_loss",
    }
    out, cache = str(tmp_path / "run"), str(tmp_path / "c")
    run = medfit.train(data, out=out, cache_dir=cache, log=lambda _: None, **opts)
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["epoch"]: r["val_loss"] for r in rows}
    lowest, highest = min(losses, key=losses.__getitem__), max(losses, key=losses.__getitem__)
    assert lowest != highest  # otherwise the test could not tell the directions apart
    best = torch.load(run.dir / "checkpoints" / "best.pt", weights_only=True)
    assert run.summary["best_epoch"] == best["epoch"] == lowest
    assert run.summary["best_metric"] == losses[lowest]
    assert [r["selection_score"] for r in rows] == [r["val_loss"] for r in rows]
    assert run.history[lowest - 1].selection_score == losses[lowest]
