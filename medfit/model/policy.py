"""Which parameters train and what BatchNorm does, per stage."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def classifier_of(model: nn.Module) -> nn.Module:
    """The classifier head of a timm model (`get_classifier()`)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no get_classifier(); use a timm model")
    return head


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(classifier_of(model).parameters())


def freeze_backbone(model: nn.Module) -> None:
    """Stage 1: only the classifier head trains."""
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)


def stem_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the layers that run at 1/2 and 1/4 of the input resolution (the stem
    and the first stage or two; a ViT's patch embedding), from timm's `feature_info`.

    They are everything registered before the first feature module at a reduction above 4
    (tf_efficientnet_lite0: conv_stem, bn1, blocks.0, blocks.1; resnet: conv1, bn1, layer1).
    [] when the model has no feature_info or the boundary is not found: nothing is frozen then.
    """
    info: Any = getattr(model, "feature_info", None)
    dicts = info.get_dicts() if hasattr(info, "get_dicts") else info
    boundary = next((d["module"] for d in dicts or [] if d["reduction"] > 4), None)
    if boundary is None:
        return []
    stem: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if name.startswith(boundary + "."):
            return stem
        stem.append(p)
    return []


def unfreeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def set_bn_eval(model: nn.Module) -> int:
    """Put every BatchNorm in eval mode: running statistics are used and not updated.

    Call after `model.train()`, which would switch them back. Returns how many were frozen.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            module.eval()
            count += 1
    return count


def resolve_bn_policy(policy: str, per_device_batch: int, min_batch: int) -> str:
    """`auto` -> "frozen" when the per-device batch is below `min_batch`, else "train".

    With fewer than ~16 images per device the batch mean/variance are noisy estimates, and BN in
    train mode degrades sharply (Wu & He 2018, Group Normalization, fig. 1: ResNet-50 error rises
    from batch 16 down to 2). Above that, updating the statistics adapts the ImageNet statistics
    to the medical domain, which helps: in our blood-cell probe, frozen BN was the slower learner.
    """
    if policy == "auto":
        return "frozen" if per_device_batch < min_batch else "train"
    return policy


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor], max_batches: int = 50) -> int:
    """Re-estimate every BatchNorm's running mean/var on target-domain inputs (AdaBN).

    ImageNet statistics describe photographs, not X-rays or stained cells. Averaging the batch
    statistics of the user's own images (momentum=None: a plain cumulative mean) makes eval-mode
    features match train-mode ones, so the head trained in stage 1 still fits when stage 2 lets BN
    use batch statistics (Li et al. 2016, "Revisiting Batch Normalization for Practical Domain
    Adaptation"). Weights are untouched. Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    if not norms:
        return 0
    saved = [(m, m.momentum, m.state_dict()) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for x in inputs:
            model(x)
            used += 1
            if used >= max_batches:
                break
    finally:
        for m, momentum, stats in saved:
            m.momentum = momentum
            if used == 0:  # nothing seen: keep the old statistics rather than mean 0, var 1
                m.load_state_dict(stats)
        model.train(was_training)
    return used
