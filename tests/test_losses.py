"""Soft ordinal targets (SORD) and the --loss option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medfit.config import RunConfig
from medfit.errors import ConfigError
from medfit.training.losses import (
    Mixer,
    SoftTargetLoss,
    SoftTargets,
    smoothed_targets,
    soft_ordinal_targets,
)
from medfit.training.setup import _resolve_loss


def test_targets_are_distributions_peaked_at_the_label_and_fall_with_grade_distance() -> None:
    t = soft_ordinal_targets([0, 1, 2, 3, 4])
    assert torch.allclose(t.sum(1), torch.ones(5))
    assert torch.equal(t.argmax(1), torch.arange(5))
    row = t[2]
    assert row[1] == pytest.approx(row[3]) and row[0] == pytest.approx(row[4])
    assert row[2] > row[1] > row[0]


def test_one_grade_off_costs_less_than_four_grades_off() -> None:
    loss = SoftTargetLoss(soft_ordinal_targets([0, 1, 2, 3, 4]))
    label = torch.tensor([0])
    near = torch.tensor([[0.0, 5.0, 0.0, 0.0, 0.0]])  # confident grade 1
    far = torch.tensor([[0.0, 0.0, 0.0, 0.0, 5.0]])  # confident grade 4
    assert loss(near, label) < loss(far, label)


def test_weighted_loss_averages_like_cross_entropy_with_weights() -> None:
    # With one-hot targets (a huge scale) SORD must equal nn.CrossEntropyLoss(weight=...).
    ranks, weight = [0, 10, 20], torch.tensor([1.0, 2.0, 0.5])
    logits, labels = (
        torch.randn(8, 3, generator=torch.Generator().manual_seed(0)),
        torch.tensor([0, 1, 2, 1, 0, 2, 2, 1]),
    )
    loss = SoftTargetLoss(soft_ordinal_targets(ranks), weight)
    expected = nn.CrossEntropyLoss(weight=weight)(logits, labels)
    assert float(loss(logits, labels)) == pytest.approx(float(expected), rel=1e-5)


def test_sord_on_unordered_classes_is_one_line_and_auto_follows_the_task() -> None:
    with pytest.raises(ConfigError, match="--loss sord needs ordinal grades"):
        _resolve_loss("sord", "multiclass")
    assert _resolve_loss("auto", "ordinal") == "sord"
    assert _resolve_loss("auto", "multiclass") == "ce"
    assert _resolve_loss("ce", "ordinal") == "ce"
    assert _resolve_loss("sord", "ordinal") == "sord"
    cfg = RunConfig()
    cfg.train.loss = "focal"
    with pytest.raises(ConfigError, match=r"train\.loss must be one of"):
        cfg.validate()


def test_smoothed_rows_give_cross_entropy_with_label_smoothing() -> None:
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    ours = SoftTargetLoss(smoothed_targets(4, 0.1))(logits, labels)
    theirs = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_mixed_targets_are_the_mix_of_the_rows_with_timms_lambda() -> None:
    torch.manual_seed(0)
    rows = soft_ordinal_targets([0, 1, 2, 3])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mixer = Mixer(mixup=0.4, cutmix=0.0, rows=rows, weight=weight)
    x = torch.stack([torch.full((3, 4, 4), float(i)) for i in range(4)])
    labels = torch.tensor([0, 1, 2, 3])
    mixed, targets = mixer(x.clone(), labels)
    assert isinstance(targets, SoftTargets) and targets.weight is not None
    lam = float(1 - mixed[0, 0, 0, 0] / 3)  # image 0 (all 0) mixed with image 3 (all 3)
    assert torch.allclose(mixed[1], lam * x[1] + (1 - lam) * x[2])
    expected = lam * rows[labels] + (1 - lam) * rows[labels.flip(0)]
    assert torch.allclose(targets.probs, expected, atol=1e-6)
    assert torch.allclose(targets.weight, lam * weight + (1 - lam) * weight.flip(0))
    assert torch.allclose(targets.probs.sum(1), torch.ones(4))


def test_an_odd_batch_is_left_unmixed() -> None:
    mixer = Mixer(mixup=1.0, cutmix=1.0, rows=smoothed_targets(3, 0.0))
    x, labels = torch.randn(3, 3, 4, 4), torch.tensor([0, 1, 2])
    out, targets = mixer(x.clone(), labels)
    assert torch.equal(out, x) and targets is labels


def test_a_run_with_mixup_and_cutmix_trains_and_records_them(tmp_path: Path) -> None:
    import medfit
    from tests.test_train import FAST, make_dataset

    data = make_dataset(tmp_path / "data", per_class=8)
    options = {**FAST, "head_epochs": 0, "epochs": 2, "mixup": 0.4, "cutmix": 1.0}
    run = medfit.train(
        data,
        out=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "c"),
        log=lambda _: None,
        report=False,
        **options,
    )
    assert run.config.train.mixup == 0.4 and run.config.train.cutmix == 1.0
    assert len(run.history) == 2 and all(r.train_loss == r.train_loss for r in run.history)
