"""Modality-aware, per-sample GPU augmentation of cached image batches.

The training loop hands a whole float batch (B, C, S, S) in [0, 1] to the module built here, with
S = cache_size slightly above img_size. kornia draws parameters per sample (a torchvision v2
transform would apply one draw to the whole batch). Presets never apply label-destroying geometry:
chest X-rays are not mirrored, OCT/MRI are not flipped upside down.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from medfit.config import AUG_PRESETS
from medfit.errors import ConfigError


class _Preset(NamedTuple):
    crop: float  # random resized crop keeps this fraction of the image area, up to all of it
    degrees: float  # rotation drawn uniformly in ±degrees
    hflip: bool
    vflip: bool
    brightness: float  # ColorJitter factors (torchvision semantics: 0.2 -> ×[0.8, 1.2])
    contrast: float
    saturation: float  # saturation and hue only touch 3-channel input
    hue: float
    note: str  # the reason, for describe_preset


# Aspect ratio stays near square in every preset: shape and size are diagnostic (cell morphology,
# heart width), so we never stretch images the ImageNet way (3/4..4/3).
_RATIO = (0.9, 1.1)
# Brightness/contrast ±0.2 (all but light): exposure and windowing vary across scanners and labs.
# fmt: off
PRESETS: dict[str, _Preset] = {
    #                    crop  rot° hflip  vflip  brig cont sat  hue
    # Safe for anything: a mild crop and a left/right mirror, no intensity change.
    "light":      _Preset(0.85, 0,   True,  False, 0,   0,   0,   0,    "mild, any modality"),
    # Laterality matters (heart on the left), patients are upright: no flips, no 90° turns.
    "xray":       _Preset(0.8,  10,  False, False, 0.2, 0.2, 0,   0,    "no flips (laterality)"),
    # Left and right eyes mirror each other; retinal layers are ordered top→bottom.
    "oct":        _Preset(0.8,  5,   True,  False, 0.2, 0.2, 0,   0,    "no vertical flip"),
    # Brains are near-symmetric left/right; slices have a fixed up/down orientation.
    "mri":        _Preset(0.8,  10,  True,  False, 0.2, 0.2, 0,   0,    "no vertical flip"),
    # Cells have no orientation (any angle, both flips); brightness/contrast/saturation model
    # stain variation. No hue shift: granule colour tells eosinophils from neutrophils, and on a
    # CPU kornia's hue jitter took 0.71 s of 0.83 s per 32x224² batch (HSV round trip).
    "microscopy": _Preset(0.7,  180, True,  True,  0.2, 0.2, 0.2, 0.0,  "any orientation"),
    # Lesions have no canonical orientation either and often fill less of the frame (stronger
    # crop); a smaller hue shift, as lesion colour itself is diagnostic.
    "dermoscopy": _Preset(0.6,  180, True,  True,  0.2, 0.2, 0.2, 0.02, "any orientation"),
    # Our user's Keras ImageDataGenerator(rotation_range=90, both flips): wrong for any oriented
    # scan (a chest X-ray on its side is not a chest X-ray). Kept to reproduce and diagnose it.
    "rotate90":   _Preset(1.0,  90,  True,  True,  0,   0,   0,   0,    "forum recipe"),
}
# fmt: on


def resolve_preset(name: str, grayscale: bool) -> str:
    """Turn "auto" into a concrete preset; grayscale data is mostly oriented scans."""
    if name not in AUG_PRESETS:
        raise ConfigError(
            f"unknown augmentation preset {name!r}; choose one of {', '.join(AUG_PRESETS)}"
        )
    if name == "auto":
        return "xray" if grayscale else "microscopy"
    return name


def describe_preset(name: str) -> str:
    """One line for logs and docs."""
    if name == "auto":
        return "auto: xray for grayscale data, microscopy for colour"
    if name == "none":
        return "none: resize only, no augmentation"
    p = PRESETS[resolve_preset(name, grayscale=False)]
    parts = [f"crop {round(p.crop * 100)}-100%"]
    flips = [f for f, on in (("horizontal", p.hflip), ("vertical", p.vflip)) if on]
    parts += [f"{' and '.join(flips)} flip"] if flips else []
    parts += [f"rotate ±{p.degrees:g}°"] if p.degrees else []
    parts += [f"brightness/contrast ±{p.brightness:g}"] if p.brightness or p.contrast else []
    parts += [f"saturation ±{p.saturation:g}, hue ±{p.hue:g}"] if p.saturation or p.hue else []
    return f"{name}: {', '.join(parts)}; {p.note}"


class _Resize(nn.Module):
    """Antialiased bilinear resize of the whole square to size×size (a no-op at that size)."""

    def __init__(self, size: int, shrink_only: bool = False) -> None:
        super().__init__()
        self.size, self.shrink_only = size, shrink_only

    def extra_repr(self) -> str:
        return f"size={self.size}, shrink_only={self.shrink_only}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.size or (self.shrink_only and x.shape[-1] < self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)


class _Jitter(nn.Module):
    """Colour jitter that drops saturation/hue on 1-channel input instead of crashing."""

    def __init__(self, b: float, c: float, s: float, h: float) -> None:
        super().__init__()
        self.rgb = K.ColorJitter(b, c, s, h, p=1.0)
        self.gray = K.ColorJitter(b, c, p=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rgb(x) if x.shape[1] == 3 else self.gray(x)


class _Clamp01(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


def build_eval_transform(img_size: int) -> nn.Module:
    """The whole image resized to img_size; no crop (findings can sit at the edge)."""
    return _Resize(img_size)


def build_train_augment(preset: str, img_size: int) -> nn.Module:
    """Per-sample random augmentation: (B, C, S, S) in [0, 1] -> (B, C, img_size, img_size)."""
    if preset == "auto":
        raise ValueError("resolve 'auto' with resolve_preset() before building the augmentation")
    if resolve_preset(preset, grayscale=False) == "none":
        return nn.Sequential(build_eval_transform(img_size), _Clamp01())
    p = PRESETS[preset]
    # The crop below warps without antialiasing (fine for the ~1.15× shrink from the cache size),
    # so a larger input is first brought down to the cache size, antialiased.
    steps: list[nn.Module] = [_Resize(math.ceil(img_size * 1.15), shrink_only=True)]
    # "resample" mode crops the whole batch in one warp; the default "slice" loops over samples.
    steps.append(
        K.RandomResizedCrop((img_size, img_size), (p.crop, 1.0), _RATIO, cropping_mode="resample")
    )
    steps += [K.RandomHorizontalFlip(p=0.5)] if p.hflip else []
    steps += [K.RandomVerticalFlip(p=0.5)] if p.vflip else []
    if p.degrees:
        # RandomRotation always pads with zeros (black corners); RandomAffine lets us reflect.
        steps.append(K.RandomAffine(p.degrees, padding_mode="reflection", p=1.0))
    if p.brightness or p.contrast or p.saturation or p.hue:
        steps.append(_Jitter(p.brightness, p.contrast, p.saturation, p.hue))
    return nn.Sequential(*steps, _Clamp01())
