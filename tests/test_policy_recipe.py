"""Which parameters train, what BatchNorm does, and the two-stage recipe's optimizers/schedules."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from medfit.config import TrainConfig
from medfit.model.policy import (
    freeze_backbone,
    head_parameters,
    recalibrate_bn,
    resolve_bn_policy,
    set_bn_eval,
    stem_parameters,
    unfreeze_all,
)
from medfit.training import recipe
from medfit.training.recipe import FINAL_LR_FRACTION, Stage


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)


@pytest.fixture
def resnet() -> nn.Module:
    return timm.create_model("resnet18", pretrained=False, num_classes=4)


# --- trainable parameters ----------------------------------------------------------------------


def _names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    ids = {id(p) for p in params}
    return [name for name, p in model.named_parameters() if id(p) in ids]


@pytest.mark.parametrize(
    ("model_name", "first", "last", "next_"),
    [
        # (first stem tensor, last stem tensor, first tensor that is not stem)
        ("tf_efficientnet_lite0", "conv_stem.weight", "blocks.1.", "blocks.2."),
        ("resnet18", "conv1.weight", "layer1.", "layer2."),
        ("mobilenetv3_small_100", "conv_stem.weight", "blocks.0.", "blocks.1."),
        ("convnext_atto", "stem.0.weight", "stages.0.", "stages.1."),
    ],
)
def test_stem_is_everything_before_the_first_layer_below_quarter_resolution(
    model_name: str, first: str, last: str, next_: str
) -> None:
    model = timm.create_model(model_name, pretrained=False, num_classes=3)
    names = _names(model, stem_parameters(model))
    everything = [name for name, _ in model.named_parameters()]
    assert names == everything[: len(names)]  # a prefix, in order
    assert names[0] == first and names[-1].startswith(last)
    assert everything[len(names)].startswith(next_)


def test_stem_of_a_model_without_feature_info_is_empty() -> None:
    assert stem_parameters(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())) == []


def test_freeze_backbone_leaves_only_the_classifier(resnet: nn.Module) -> None:
    freeze_backbone(resnet)
    trainable = {n for n, p in resnet.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert {id(p) for p in head_parameters(resnet)} == {id(resnet.fc.weight), id(resnet.fc.bias)}
    unfreeze_all(resnet)
    assert all(p.requires_grad for p in resnet.parameters())


def test_prepare_model_follows_the_stage(resnet: nn.Module) -> None:
    recipe.prepare_model(resnet, Stage("head", 1, 1e-3, 1))
    assert sum(p.requires_grad for p in resnet.parameters()) == 2
    recipe.prepare_model(resnet, Stage("full", 1, 1e-3, 1))
    assert all(p.requires_grad for p in resnet.parameters())


def test_head_parameters_needs_a_classifier() -> None:
    with pytest.raises(TypeError, match="get_classifier"):
        head_parameters(nn.Linear(2, 2))


# --- BatchNorm ---------------------------------------------------------------------------------


def _small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 8),
        nn.BatchNorm1d(8),
    )


def test_set_bn_eval_freezes_statistics_only() -> None:
    torch.manual_seed(0)
    net = _small_net()
    net.train()
    assert set_bn_eval(net) == 2
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in norms)
    assert net[3].training and net[0].training and net[5].training  # dropout etc. still train
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    net(torch.randn(6, 3, 8, 8) * 3 + 2)
    for m, (mean, var) in zip(norms, before, strict=True):
        assert torch.equal(m.running_mean, mean)
        assert torch.equal(m.running_var, var)
    # Without set_bn_eval the same forward pass does update them: the check above is meaningful.
    net.train()
    net(torch.randn(6, 3, 8, 8) * 3 + 2)
    assert not torch.equal(norms[0].running_mean, before[0][0])


@pytest.mark.parametrize(
    ("policy", "batch", "expected"),
    [
        ("auto", 8, "frozen"),
        ("auto", 15, "frozen"),
        ("auto", 16, "train"),
        ("auto", 32, "train"),
        ("train", 2, "train"),
        ("frozen", 64, "frozen"),
    ],
)
def test_resolve_bn_policy(policy: str, batch: int, expected: str) -> None:
    assert resolve_bn_policy(policy, batch, TrainConfig().bn_min_batch) == expected
    assert TrainConfig().bn_min_batch == 16


def test_recalibrate_bn_is_a_cumulative_average() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2, momentum=0.3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        net[1].running_mean.fill_(-3.0)
        net[1].running_var.fill_(7.0)
        net[1].weight.copy_(torch.tensor([1.5, 0.5]))
        net[1].bias.copy_(torch.tensor([0.1, 0.2]))
    weights_before = {k: v.clone() for k, v in net.named_parameters()}
    net.eval()
    batches = [torch.randn(4, 1, 3, 3) * (i + 1) + 5.0 for i in range(5)]

    used = recalibrate_bn(net, iter(batches), max_batches=3)

    assert used == 3
    conv_w = torch.tensor([1.0, -2.0])
    feats = [(x * conv_w.view(1, 2, 1, 1)).transpose(0, 1).reshape(2, -1) for x in batches[:3]]
    mean = torch.stack([f.mean(1) for f in feats]).mean(0)
    var = torch.stack([f.var(1, unbiased=True) for f in feats]).mean(0)
    bn = net[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, atol=1e-4)
    assert bn.running_mean[0] == pytest.approx(5.0, abs=1.0)  # moved to the data statistic
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == 0.3
    assert not net.training and not bn.training
    for name, value in net.named_parameters():
        assert torch.equal(value, weights_before[name]), name


def test_recalibrate_bn_restores_train_mode_and_ignores_bn_free_models() -> None:
    net = _small_net().train()
    assert recalibrate_bn(net, [torch.randn(4, 3, 8, 8)]) == 1
    assert net.training and net[1].training
    assert recalibrate_bn(nn.Linear(2, 2), [torch.randn(3, 2)]) == 0


# --- optimizers --------------------------------------------------------------------------------


def _groups_by_param(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in opt.param_groups for p in g["params"]}


def test_full_stage_optimizer_has_layer_decay(lite0: nn.Module) -> None:
    cfg = TrainConfig(layer_decay=0.9)
    recipe.prepare_model(lite0, Stage("full", 1, 1e-3, 1))
    opt = recipe.build_optimizer(lite0, Stage("full", 1, 1e-3, 1), cfg)
    by_param = _groups_by_param(opt, lite0)
    assert set(by_param) == {n for n, _ in lite0.named_parameters()}  # every parameter, once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(lite0.parameters()))
    scales = [g["lr_scale"] for g in opt.param_groups]
    assert len(set(scales)) > 10
    assert by_param["classifier.weight"]["lr_scale"] == pytest.approx(1.0)
    assert by_param["classifier.bias"]["lr_scale"] == pytest.approx(1.0)
    assert by_param["conv_stem.weight"]["lr_scale"] == pytest.approx(min(scales))
    assert min(scales) < 0.3
    assert by_param["conv_stem.weight"]["weight_decay"] == pytest.approx(0.05)
    assert by_param["bn1.weight"]["weight_decay"] == 0.0  # no decay on norms
    assert isinstance(opt, torch.optim.AdamW)


def test_layer_decay_one_means_one_scale(lite0: nn.Module) -> None:
    opt = recipe.build_optimizer(lite0, Stage("full", 1, 1e-3, 1), TrainConfig(layer_decay=1.0))
    assert {g.get("lr_scale", 1.0) for g in opt.param_groups} == {1.0}


def test_sgd_option_is_plain_momentum_not_nesterov(lite0: nn.Module) -> None:
    opt = recipe.build_optimizer(lite0, Stage("full", 1, 1e-2, 1), TrainConfig(optimizer="sgd"))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == pytest.approx(0.9)
    assert opt.defaults["nesterov"] is False


def test_head_stage_optimizer_holds_only_the_head(lite0: nn.Module) -> None:
    stage = Stage("head", 1, 3e-3, 1)
    recipe.prepare_model(lite0, stage)
    try:
        opt = recipe.build_optimizer(lite0, stage, TrainConfig())
        params = [p for g in opt.param_groups for p in g["params"]]
        assert {id(p) for p in params} == {id(p) for p in head_parameters(lite0)}
        assert all(g["lr"] == 3e-3 for g in opt.param_groups)
    finally:
        unfreeze_all(lite0)


# --- schedules ---------------------------------------------------------------------------------


def _lrs(opt: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in opt.param_groups]


def _full_schedule(lite0: nn.Module):
    stage = Stage("full", 10, 1e-3, 10)
    cfg = TrainConfig(layer_decay=0.9, warmup_epochs=1.0)
    opt = recipe.build_optimizer(lite0, stage, cfg)
    return stage, opt, recipe.build_scheduler(opt, stage, cfg)


def test_full_schedule_warms_up_then_decays(lite0: nn.Module) -> None:
    stage, opt, sched = _full_schedule(lite0)
    scales = [g["lr_scale"] for g in opt.param_groups]
    peak = stage.lr
    head = scales.index(1.0)
    history = []
    for step in range(stage.total_steps + 1):
        sched.step_update(step)
        history.append(_lrs(opt))
    head_lrs = [row[head] for row in history]
    assert head_lrs[0] == pytest.approx(peak * FINAL_LR_FRACTION)  # warmup starts low
    assert all(b > a for a, b in itertools.pairwise(head_lrs[:11]))  # rises
    assert head_lrs[10] == pytest.approx(peak)  # peak after warmup_epochs * steps_per_epoch
    assert max(head_lrs) == pytest.approx(peak)
    assert all(b <= a for a, b in itertools.pairwise(head_lrs[10:]))  # decays
    assert head_lrs[-1] < 0.05 * peak
    # Every group follows the same curve times its layer-decay scale.
    for lr, scale in zip(history[10], scales, strict=True):
        assert lr == pytest.approx(peak * scale)
    for lr, scale in zip(history[55], scales, strict=True):
        assert lr == pytest.approx(head_lrs[55] * scale)


def test_full_schedule_ends_at_the_final_fraction(lite0: nn.Module) -> None:
    stage, opt, sched = _full_schedule(lite0)
    head = [g["lr_scale"] for g in opt.param_groups].index(1.0)
    sched.step_update(stage.total_steps)
    assert _lrs(opt)[head] == pytest.approx(stage.lr * FINAL_LR_FRACTION, rel=0.1)


def test_head_schedule_has_no_warmup(lite0: nn.Module) -> None:
    stage = Stage("head", 2, 3e-3, 10)
    recipe.prepare_model(lite0, stage)
    try:
        opt = recipe.build_optimizer(lite0, stage, TrainConfig(warmup_epochs=1.0))
        sched = recipe.build_scheduler(opt, stage, TrainConfig(warmup_epochs=1.0))
        assert _lrs(opt) == [pytest.approx(3e-3)]
        sched.step_update(0)
        assert _lrs(opt) == [pytest.approx(3e-3)]
        sched.step_update(1)
        assert 0.95 * 3e-3 < _lrs(opt)[0] < 3e-3
        sched.step_update(10)
        assert _lrs(opt)[0] == pytest.approx(0.5 * (3e-3 + 3e-5), rel=1e-3)  # cosine midpoint
    finally:
        unfreeze_all(lite0)


# --- class balance and selection ---------------------------------------------------------------


def test_class_weights_are_sklearn_balanced_and_zero_for_absent() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 3])
    weights = recipe.class_weights(labels, 4)
    assert weights.shape == (4,)
    assert weights[2] == 0.0
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    # sklearn divides by the number of present classes; medfit by num_classes (absent get 0).
    assert weights[[0, 1, 3]] * 4 == pytest.approx(expected * 3)
    assert weights[[0, 1, 3]] == pytest.approx([9 / 24, 9 / 8, 9 / 4])


def test_imbalance_ratio_ignores_absent_classes() -> None:
    assert recipe.imbalance_ratio(np.array([0, 0, 0, 1]), 3) == pytest.approx(3.0)
    assert recipe.imbalance_ratio(np.array([0, 1, 2, 2]), 3) == pytest.approx(2.0)
    assert recipe.imbalance_ratio(np.array([1, 0, 1, 0]), 2) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("mode", "ratio", "balance", "metric"),
    [
        ("auto", 1.0, "none", "accuracy"),
        ("auto", 1.5, "none", "accuracy"),
        ("auto", 1.51, "sqrt", "balanced_accuracy"),
        ("auto", 10.0, "sqrt", "balanced_accuracy"),
    ],
)
def test_auto_balance_and_metric(mode: str, ratio: float, balance: str, metric: str) -> None:
    assert recipe.resolve_balance(mode, ratio) == balance
    assert recipe.resolve_select_metric(mode, ratio) == metric


def test_explicit_balance_and_metric_pass_through() -> None:
    for mode in ("none", "loss", "sqrt", "sampler"):
        assert recipe.resolve_balance(mode, 10.0) == mode
        assert recipe.resolve_balance(mode, 1.0) == mode
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert recipe.resolve_select_metric(name, 10.0) == name
        assert recipe.resolve_select_metric(name, 1.0) == name


# --- the stage plan ----------------------------------------------------------------------------


def test_stage_plan_and_epoch_mapping() -> None:
    stages = recipe.stage_plan(TrainConfig(head_epochs=2, epochs=3), 7, 3e-3, 1e-3)
    assert [(s.name, s.epochs, s.lr, s.steps_per_epoch) for s in stages] == [
        ("head", 2, 3e-3, 7),
        ("full", 3, 1e-3, 7),
    ]
    assert stages[1].total_steps == 21
    expected = [("head", 0), ("head", 1), ("full", 0), ("full", 1), ("full", 2)]
    for epoch, (name, within) in enumerate(expected):
        stage, index = recipe.stage_of_epoch(stages, epoch)
        assert (stage.name, index) == (name, within)
        assert stage is stages[0 if name == "head" else 1]
    with pytest.raises(IndexError):
        recipe.stage_of_epoch(stages, 5)


def test_stage_plan_skips_empty_stages() -> None:
    only_full = recipe.stage_plan(TrainConfig(head_epochs=0, epochs=4), 5, 3e-3, 1e-3)
    assert [s.name for s in only_full] == ["full"]
    assert recipe.stage_of_epoch(only_full, 0) == (only_full[0], 0)
    assert recipe.stage_of_epoch(only_full, 3) == (only_full[0], 3)
    only_head = recipe.stage_plan(TrainConfig(head_epochs=2, epochs=0), 5, 3e-3, 1e-3)
    assert [s.name for s in only_head] == ["head"]


def test_zero_warmup_full_stage_starts_at_scaled_peak(lite0: nn.Module) -> None:
    stage = Stage("full", 2, 1e-3, 5)
    cfg = TrainConfig(warmup_epochs=0.0, layer_decay=0.9)
    opt = recipe.build_optimizer(lite0, stage, cfg)
    sched = recipe.build_scheduler(opt, stage, cfg)
    for g in opt.param_groups:  # the first step already honours layer decay
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
    sched.step_update(stage.total_steps // 2)
    mid = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.5))
    assert max(_lrs(opt)) == pytest.approx(mid, rel=1e-3)


def _cached(labels: list[int], channels: int) -> object:
    from medfit.data.cache import CachedSplit

    pixels = np.zeros((len(labels), 4, 4, channels), dtype=np.uint8)
    return CachedSplit(pixels, np.array(labels), [f"{i}.png" for i in labels], [])


@pytest.mark.parametrize(
    ("batch", "lr", "expected_bn", "expected_lr"),
    [(32, None, "train", 3e-3), (8, None, "frozen", 3e-4), (8, 0.05, "frozen", 0.05)],
)
def test_auto_values_resolve_from_the_data_and_batch(
    batch: int, lr: float | None, expected_bn: str, expected_lr: float
) -> None:
    from medfit.config import RunConfig
    from medfit.data.sources import DatasetIndex
    from medfit.training.setup import _resolve_auto

    given = RunConfig()
    given.train.batch_size, given.train.lr = batch, lr
    gray = _cached([0] * 9 + [1], channels=1)
    cfg, _ = _resolve_auto(given, gray, DatasetIndex("data", ["a", "b"], []))  # type: ignore[arg-type]
    assert cfg.train.bn == expected_bn and cfg.train.lr == expected_lr
    assert cfg.train.label_smoothing == 0.1 and cfg.data.task == "multiclass"
    assert given.train.bn == "auto" and given.data.aug == "auto"  # a new config, input untouched
    assert cfg.data.aug == "xray"  # grayscale
    assert cfg.train.balance == "sqrt" and cfg.train.select_metric == "balanced_accuracy"

    colour = _cached([0, 1, 0, 1], channels=3)
    colour.pixels[..., 0] = 200  # type: ignore[attr-defined]
    index = DatasetIndex("data", ["a", "b"], [])
    balanced, _ = _resolve_auto(RunConfig(), colour, index)  # type: ignore[arg-type]
    assert balanced.data.aug == "microscopy" and balanced.train.balance == "none"
    assert balanced.train.select_metric == "accuracy"
