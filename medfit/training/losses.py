"""Training losses beyond plain cross-entropy: soft targets, the batches mixup/CutMix mix, and
binary cross-entropy for multi-label runs.

Every target medfit trains towards is a row of a (K, K) matrix `rows` (row y: what label y means):
SORD's soft ordinal rows for graded classes, or the smoothed one-hot rows of cross-entropy with
label smoothing. Mixup and CutMix (timm's `Mixup`) mix two images of a batch with weight lam, and
the target becomes the same mix of their rows: lam * rows[y1] + (1 - lam) * rows[y2].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import Mixup
from torch import nn


def soft_ordinal_targets(ranks: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """(K, K) rows of target probabilities: row y = softmax_j(-scale * (rank_j - rank_y)^2).

    SORD (Díaz & Marathe, CVPR 2019): a grade-2 image is told it is mostly grade 2, somewhat 1 or
    3 and hardly 0 or 4, so mistakes by one grade cost less than mistakes by four.
    """
    r = torch.tensor(ranks, dtype=torch.float32)
    return torch.softmax(-scale * (r[None, :] - r[:, None]) ** 2, dim=1)


def smoothed_targets(num_classes: int, smoothing: float) -> torch.Tensor:
    """(K, K) rows of one-hot targets with label smoothing: 1 - s + s/K on the label, s/K off it
    (what nn.CrossEntropyLoss(label_smoothing=s) trains towards)."""
    return torch.full((num_classes, num_classes), smoothing / num_classes) + (
        1.0 - smoothing
    ) * torch.eye(num_classes)


@dataclass
class SoftTargets:
    """A mixed batch's targets: one distribution per image, and its loss weight (None: equal)."""

    probs: torch.Tensor  # (B, K)
    weight: torch.Tensor | None  # (B,)


class SoftTargetLoss(nn.Module):
    """Cross-entropy against soft targets: `rows[label]` for a label batch, or a mixed batch's
    own distributions; class weights average as nn.CrossEntropyLoss(weight=...) does."""

    def __init__(self, rows: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.rows: torch.Tensor
        self.register_buffer("rows", rows)
        self.weight = weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor | SoftTargets) -> torch.Tensor:
        # logits (B, K); targets (B,) labels or SoftTargets -> per-image CE -> (weighted) mean.
        if isinstance(targets, SoftTargets):
            probs, w = targets.probs, targets.weight
        else:
            probs = self.rows[targets]
            w = None if self.weight is None else self.weight[targets]
        per_image = -(probs * torch.log_softmax(logits, dim=1)).sum(1)
        if w is None:
            return per_image.mean()
        return (per_image * w).sum() / w.sum()


class Mixer:
    """Mixup and/or CutMix of a normalised batch through timm's `Mixup` (one lam per batch, each
    image mixed with the batch's reverse; both on: each batch is one or the other, 50/50). The
    targets mix the loss's own rows and per-class weights with the same lam."""

    def __init__(
        self,
        mixup: float,
        cutmix: float,
        rows: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> None:
        self.rows = rows
        self.weight = weight
        self.mix = Mixup(
            mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0, num_classes=len(rows)
        )

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | SoftTargets]:
        if len(x) % 2:  # timm pairs image i with image B-1-i: an odd batch trains unmixed
            return x, labels
        x, onehot = self.mix(x, labels)  # (B, K) = lam * onehot(y) + (1 - lam) * onehot(y[::-1])
        probs = onehot @ self.rows.to(onehot)
        weight = None if self.weight is None else onehot @ self.weight.to(onehot)
        return x, SoftTargets(probs, weight)


def positive_weights(targets: np.ndarray, power: float, cap: float = 10.0) -> torch.Tensor:
    """(L,) BCE positive weights (negatives / positives) ** power per label, capped at `cap`: a
    label on 8 of 600 images would otherwise weigh each positive 74x (power 0.5: 8.6x). A label
    without positives gets weight 1 (it has nothing to up-weight)."""
    positives = targets.sum(0).astype(np.float64)
    ratio = np.where(positives > 0, (len(targets) - positives) / np.maximum(positives, 1), 1.0)
    return torch.tensor(np.minimum(ratio**power, cap), dtype=torch.float32)


class MultiLabelBCE(nn.Module):
    """Binary cross-entropy per label (sigmoid outputs), averaged over labels and images.

    Label smoothing for BCE pulls each target towards 0.5: y * (1 - s) + s / 2 (the binary form of
    Müller et al. 2019; NIH-style labels mined from reports are noisy both ways). `pos_weight`
    up-weights each label's positives (torch's BCEWithLogitsLoss argument)."""

    def __init__(self, smoothing: float = 0.0, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.pos_weight: torch.Tensor | None
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # logits (B, L); targets (B, L) 0/1
        soft = targets.float() * (1.0 - self.smoothing) + self.smoothing / 2
        return nn.functional.binary_cross_entropy_with_logits(
            logits, soft, pos_weight=self.pos_weight
        )
