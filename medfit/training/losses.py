"""Training losses beyond plain cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def soft_ordinal_targets(ranks: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """(K, K) rows of target probabilities: row y = softmax_j(-scale * (rank_j - rank_y)^2).

    SORD (Díaz & Marathe, CVPR 2019): a grade-2 image is told it is mostly grade 2, somewhat 1 or
    3 and hardly 0 or 4, so mistakes by one grade cost less than mistakes by four.
    """
    r = torch.tensor(ranks, dtype=torch.float32)
    return torch.softmax(-scale * (r[None, :] - r[:, None]) ** 2, dim=1)


class SoftOrdinalLoss(nn.Module):
    """Cross-entropy against `soft_ordinal_targets`, optionally class-weighted per image label."""

    def __init__(self, ranks: Sequence[int], weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.targets: torch.Tensor
        self.register_buffer("targets", soft_ordinal_targets(ranks))
        self.weight = weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # logits (B, K), labels (B,) -> per-image CE against the label's soft row -> mean.
        per_image = -(self.targets[labels] * torch.log_softmax(logits, dim=1)).sum(1)
        if self.weight is None:
            return per_image.mean()
        w = self.weight[labels]
        return (per_image * w).sum() / w.sum()  # as nn.CrossEntropyLoss(weight=...) averages
