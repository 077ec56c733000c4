"""Soft ordinal targets (SORD) and the --loss option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfit.config import RunConfig
from medfit.errors import ConfigError
from medfit.training.losses import SoftOrdinalLoss, soft_ordinal_targets
from medfit.training.setup import _resolve_loss


def test_targets_are_distributions_peaked_at_the_label_and_fall_with_grade_distance() -> None:
    t = soft_ordinal_targets([0, 1, 2, 3, 4])
    assert torch.allclose(t.sum(1), torch.ones(5))
    assert torch.equal(t.argmax(1), torch.arange(5))
    row = t[2]
    assert row[1] == pytest.approx(row[3]) and row[0] == pytest.approx(row[4])
    assert row[2] > row[1] > row[0]


def test_one_grade_off_costs_less_than_four_grades_off() -> None:
    loss = SoftOrdinalLoss([0, 1, 2, 3, 4])
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
    loss = SoftOrdinalLoss(ranks, weight)
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
