"""The members of a k-fold run as one model.

    model = FoldEnsemble([member_0, ..., member_k])     # each: images -> (B, C) logits
    log_p = model(x)                                     # (B, C): log of the mean probability

The output is log(mean_k softmax(z_k)), so anything that applies a softmax to a model's output
(predict, serve, eval, export, Grad-CAM) gets the members' mean probability, and a temperature
fitted on it sharpens or softens that mean. Averaging probabilities, not logits, is what
Lakshminarayanan et al. (2017, "deep ensembles") and AUCMEDI's bagging do.

Multi-label members (`multilabel=True`: a sigmoid per label) are averaged the same way, label by
label: the output is logit(p) with p = mean_k sigmoid(z_k), so a sigmoid of it (what predict,
serve, eval and export apply to a multi-label run) is the members' mean probability. It is
computed as logsumexp_k log sigmoid(z_k) - logsumexp_k log sigmoid(-z_k) (the 1/K cancels),
finite for any finite logits, from elementwise operations that ONNX export keeps as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn


class FoldEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], multilabel: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("a fold ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.multilabel = multilabel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            # (K, B, L) logits -> (B, L) logit of the mean sigmoid: log p - log(1 - p)
            z = torch.stack([m(x).float() for m in self.members])
            return torch.logsumexp(_log_sigmoid(z), dim=0) - torch.logsumexp(_log_sigmoid(-z), 0)
        # (K, B, C) log-probabilities -> (B, C) log of their mean, stable in float32
        log_p = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(log_p, dim=0) - math.log(len(self.members))


def _log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """log sigmoid(z) = min(z, 0) - log(1 + exp(-|z|)): no overflow, no log(0)."""
    return torch.clamp(z, max=0.0) - torch.log1p(torch.exp(-z.abs()))


def model_from_state(state: dict[str, Any]) -> nn.Module:
    """The timm model a medfit checkpoint holds, with its weights loaded (in eval mode)."""
    model = timm.create_model(
        state["model_name"], pretrained=False, num_classes=len(state["classes"])
    )
    model.load_state_dict(state["model"])
    return model.eval()
