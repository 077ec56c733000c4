"""Backbones, weight sources and the preprocessing that travels with them (model/backbones)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from medfit.errors import ConfigError, WeightsError
from medfit.model.backbones import (
    LITE_PACKS,
    create_model,
    lite_pack_path,
    read_state_dict,
    resolve_weight_source,
    unit_normalized,
)

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- the offline EfficientNet-Lite pack -------------------------------------------------------


@pytest.fixture(scope="module")
def lite_pack() -> dict[str, torch.Tensor]:
    pytest.importorskip(LITE_PACKS[LITE0][0])
    return torch.load(lite_pack_path(LITE0), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite_model():
    pytest.importorskip(LITE_PACKS[LITE0][0])
    return create_model(LITE0, 3, weights="lite", img_size=64)


def _body(model: torch.nn.Module, head: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith(head)}


def test_lite_pack_tensors_load_in_order(lite_model, lite_pack) -> None:
    model, _, _ = lite_model
    body = _body(model, "classifier.")
    pack = list(lite_pack.values())
    # The pack holds the same backbone tensors in the same order, plus its 1000-class head last.
    assert len(pack) == len(body) + 2
    for (name, value), expected in zip(body.items(), pack, strict=False):
        assert torch.equal(value, expected), name
    assert torch.equal(model.conv_stem.weight, lite_pack["_conv_stem.weight"])
    assert torch.equal(model.conv_head.weight, lite_pack["_conv_head.weight"])
    assert torch.equal(model.bn2.running_var, lite_pack["_bn1.running_var"])


def test_lite_head_is_fresh_zero_and_sized(lite_model) -> None:
    model, _, _ = lite_model
    head = model.get_classifier()
    assert head.out_features == 3
    assert torch.count_nonzero(head.weight) == 0
    assert torch.count_nonzero(head.bias) == 0
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3)
    assert torch.allclose(logits, torch.zeros_like(logits))


def test_lite_preprocess_comes_from_the_weights_config(lite_model) -> None:
    _, preprocess, note = lite_model
    assert preprocess.img_size == 64
    assert preprocess.mean == (0.5, 0.5, 0.5)
    assert preprocess.std == (0.5, 0.5, 0.5)
    assert preprocess.interpolation == "bicubic"
    assert str(lite_pack_path(LITE0)) in note


def test_unit_normalized_is_the_keras_rescale_and_keeps_the_rest(lite_model) -> None:
    _, preprocess, _ = lite_model
    unit = unit_normalized(preprocess)
    assert unit.mean == (0.0, 0.0, 0.0) and unit.std == (1.0, 1.0, 1.0)
    assert (unit.img_size, unit.interpolation) == (preprocess.img_size, preprocess.interpolation)


def test_auto_picks_lite_pack_and_none_is_random(lite_pack) -> None:
    assert resolve_weight_source(LITE0, "auto") == "lite"
    _, preprocess, note = create_model(LITE0, 2, weights="auto")
    assert str(lite_pack_path(LITE0)) in note
    assert preprocess.img_size == 224  # the weights' own size when none is asked for
    model, _, note = create_model(LITE0, 2, weights="none")
    assert "random" in note
    assert not torch.equal(model.conv_stem.weight, lite_pack["_conv_stem.weight"])


def test_auto_falls_back_to_hub_without_a_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_weight_source("resnet18", "auto") == "hub"
    monkeypatch.setitem(LITE_PACKS, LITE0, ("medfit_no_such_pack_module", "X"))
    assert resolve_weight_source(LITE0, "auto") == "hub"
    with pytest.raises(WeightsError, match=r"medfit-no-such-pack-module.*medfit\[lite\]"):
        resolve_weight_source(LITE0, "lite")


def test_lite_for_a_model_without_a_pack_is_a_weights_error() -> None:
    with pytest.raises(WeightsError, match="tf_efficientnet_lite0") as err:
        create_model("resnet18", 3, weights="lite")
    assert "resnet18" in str(err.value)


# --- local weight files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_sd() -> dict[str, torch.Tensor]:
    """A resnet18 state dict (1000-class fc) with every tensor, BN stats included, randomised."""
    torch.manual_seed(1)
    model = timm.create_model("resnet18", pretrained=False)
    sd = model.state_dict()
    out = {}
    for key, value in sd.items():
        if value.is_floating_point():
            out[key] = torch.randn_like(value).abs() + 0.01  # positive so running_var stays valid
        else:
            out[key] = value + 7
    assert out["fc.weight"].shape == (1000, 512)
    return out


def _assert_loaded(model: torch.nn.Module, sd: dict[str, torch.Tensor], num_classes: int) -> None:
    state = model.state_dict()
    body = [k for k in sd if not k.startswith("fc.")]
    assert body and all(torch.equal(state[k], sd[k]) for k in body)
    assert model.fc.weight.shape == (num_classes, 512)
    assert torch.count_nonzero(model.fc.weight) == 0
    assert torch.count_nonzero(model.fc.bias) == 0


def test_weights_path_safetensors(tmp_path: Path, resnet18_sd) -> None:
    path = tmp_path / "r18.safetensors"
    save_file(resnet18_sd, str(path))
    model, preprocess, note = create_model("resnet18", 5, weights=str(path))
    _assert_loaded(model, resnet18_sd, 5)
    assert str(path) in note
    assert preprocess.img_size == 224


def test_weights_path_pth(tmp_path: Path, resnet18_sd) -> None:
    path = tmp_path / "r18.pth"
    torch.save(resnet18_sd, path)
    model, _, _ = create_model("resnet18", 5, weights=str(path))
    _assert_loaded(model, resnet18_sd, 5)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_weights_path_wrapped_and_module_prefixed(
    tmp_path: Path, resnet18_sd, wrapper: str
) -> None:
    path = tmp_path / "wrapped.pt"
    prefixed = {f"module.{k}": v for k, v in resnet18_sd.items()}
    torch.save({wrapper: prefixed, "epoch": 3}, path)
    assert set(read_state_dict(path)) == set(resnet18_sd)
    model, _, _ = create_model("resnet18", 4, weights=str(path))
    _assert_loaded(model, resnet18_sd, 4)


def test_wrong_shape_tensor_is_named(tmp_path: Path, resnet18_sd) -> None:
    sd = dict(resnet18_sd)
    sd["layer3.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"layer3\.0\.conv1\.weight"):
        create_model("resnet18", 2, weights=str(path))


def test_resnet34_weights_into_resnet18_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError, match=r"layer\d\.\d\."):
        create_model("resnet18", 2, weights=str(path))


def test_missing_backbone_tensor_is_named(tmp_path: Path, resnet18_sd) -> None:
    sd = dict(resnet18_sd)
    del sd["layer4.1.bn2.running_var"]
    path = tmp_path / "missing.safetensors"
    save_file(sd, str(path))
    with pytest.raises(WeightsError, match=r"layer4\.1\.bn2\.running_var"):
        create_model("resnet18", 2, weights=str(path))


def test_nonexistent_weights_path_lists_the_words() -> None:
    with pytest.raises(WeightsError) as err:
        create_model("resnet18", 2, weights="/no/such/weights.pth")
    message = str(err.value)
    assert "/no/such/weights.pth" in message
    for word in ("auto", "hub", "lite", "none"):
        assert word in message


def test_unreadable_or_non_state_dict_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a weights file")
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(garbage)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(WeightsError, match="not a state dict"):
        read_state_dict(listing)


class _Payload:
    """Unpickling this runs code: it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="refused"):
        read_state_dict(path)
    assert not marker.exists()
    with pytest.raises(WeightsError):
        create_model("resnet18", 2, weights=str(path))
    assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_json_sidecar_overrides_mean_std(tmp_path: Path, resnet18_sd) -> None:
    path = tmp_path / "r18.safetensors"
    save_file(resnet18_sd, str(path))
    path.with_suffix(".json").write_text(
        json.dumps({"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]})
    )
    _, preprocess, _ = create_model("resnet18", 2, weights=str(path), img_size=96)
    assert preprocess.mean == pytest.approx((0.1, 0.2, 0.3))
    assert preprocess.std == pytest.approx((0.4, 0.5, 0.6))
    assert preprocess.img_size == 96
    # Without the sidecar, timm's ImageNet defaults apply.
    path.with_suffix(".json").unlink()
    _, preprocess, _ = create_model("resnet18", 2, weights=str(path))
    assert preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


def test_json_sidecar_that_is_not_json_is_a_weights_error(tmp_path: Path, resnet18_sd) -> None:
    path = tmp_path / "r18.pth"
    torch.save(resnet18_sd, path)
    path.with_suffix(".json").write_text("{mean: oops")
    with pytest.raises(WeightsError, match=r"r18\.json"):
        create_model("resnet18", 2, weights=str(path))


def test_json_sidecar_input_size_in_timm_format(tmp_path: Path, resnet18_sd) -> None:
    path = tmp_path / "r18.pth"
    torch.save(resnet18_sd, path)
    path.with_suffix(".json").write_text(json.dumps({"input_size": [3, 256, 256]}))
    try:
        _, preprocess, _ = create_model("resnet18", 2, weights=str(path))
    except WeightsError:
        return  # a clear user-facing error is acceptable too
    assert preprocess.img_size == 256


# --- names and the hub -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("tf_efficientnet_lite9", "tf_efficientnet_lite"), ("resnet181", "resnet18")],
)
def test_unknown_model_name_suggests(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match="did you mean") as err:
        create_model(name, 2, weights="none")
    assert name in str(err.value)
    assert suggestion in str(err.value).split("did you mean", 1)[1]


def test_hub_offline_says_how_to_pass_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # An empty cache and offline mode: nothing can be found, nothing is downloaded.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match="--weights") as err:
        create_model("resnet18", 2, weights="hub")
    assert "resnet18" in str(err.value)
    assert "\n" not in str(err.value)
