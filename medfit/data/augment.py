"""Modality-aware, per-sample augmentation of cached image batches.

The training loop hands a whole uint8 batch (B, S, S, C) to the module built here, with
S = cache_size slightly above img_size, and gets float (B, C, img_size, img_size) in [0, 1] back.
Every sample gets its own draw (a torchvision v2 transform would apply one draw to the whole
batch). Crop, rotation and flips are one affine warp per image: OpenCV on uint8 when the batch is
on a CPU, kornia on the batch when it is on a GPU. Presets never apply label-destroying geometry:
chest X-rays are not mirrored, OCT/MRI are not flipped upside down.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import nn

from medfit.config import AUG_PRESETS
from medfit.data.cache import cache_size_for
from medfit.errors import ConfigError


class _Preset(NamedTuple):
    crop: float  # random resized crop keeps this fraction of the image area, up to all of it
    degrees: float  # rotation drawn uniformly in ±degrees
    hflip: bool
    vflip: bool
    brightness: float  # ColorJitter factors (torchvision semantics: 0.2 -> ×[0.8, 1.2])
    contrast: float
    saturation: float  # only touches 3-channel input
    note: str  # the reason, for describe_preset


# Aspect ratio stays near square in every preset: shape and size are diagnostic (cell morphology,
# heart width), so we never stretch images the ImageNet way (3/4..4/3).
_RATIO = (0.9, 1.1)
# Brightness/contrast ±0.2 on scans: exposure and windowing vary across scanners and sites. Where
# colour is the signal (stained cells, fundus, skin) jitter stays mild (±0.1, saturation ≤0.1, no
# hue): granule colour tells eosinophils from neutrophils; haemorrhages and exudates are colours.
# The milder stain jitter cost nothing on the suite (blood_cells_bccd, seed 0: test accuracy 0.830
# at ±0.1 vs 0.828 at ±0.2; bench/README.md, "Cross-modality suite").
# fmt: off
PRESETS: dict[str, _Preset] = {
    #                    crop  rot° hflip  vflip  brig cont sat
    # Safe for anything: a mild crop and a left/right mirror, no intensity change.
    "light":      _Preset(0.85, 0,   True,  False, 0,   0,   0,    "mild, any modality"),
    # Laterality matters (heart on the left), patients are upright: no flips, no 90° turns.
    "xray":       _Preset(0.8,  10,  False, False, 0.2, 0.2, 0,    "no flips (laterality)"),
    # Axial slices keep laterality (liver right, spleen left) and a fixed up/down: as X-rays.
    "ct":         _Preset(0.8,  10,  False, False, 0.2, 0.2, 0,    "no flips (laterality)"),
    # Left and right eyes mirror each other; retinal layers are ordered top→bottom.
    "oct":        _Preset(0.8,  5,   True,  False, 0.2, 0.2, 0,    "no vertical flip"),
    # Brains are near-symmetric left/right; slices have a fixed up/down orientation.
    "mri":        _Preset(0.8,  10,  True,  False, 0.2, 0.2, 0,    "no vertical flip"),
    # The probe is at the top (near field first); left/right depends on the operator; gain varies.
    "ultrasound": _Preset(0.8,  10,  True,  False, 0.2, 0.2, 0,    "no vertical flip"),
    # A round field of view: any rotation and a mirror (left vs right eye) keep the grade; colour
    # is the lesion, so brightness/contrast only, mildly.
    "fundus":     _Preset(0.8,  180, True,  False, 0.1, 0.1, 0,    "any rotation, mild"),
    # Cells have no orientation (any angle, both flips); mild brightness/contrast/saturation for
    # stain variation, no hue (on a CPU kornia's hue took 0.71 of 0.83 s per 32x224² batch).
    "microscopy": _Preset(0.7,  180, True,  True,  0.1, 0.1, 0.1,    "any orientation"),
    # Tissue patches likewise; stain variation between labs is the main shift (Tellez et al. 2019).
    "histology":  _Preset(0.7,  180, True,  True,  0.1, 0.1, 0.1,    "any orientation"),
    # Lesions have no canonical orientation either and often fill less of the frame (stronger
    # crop); lesion colour is diagnostic, so the same mild jitter and no hue.
    "dermoscopy": _Preset(0.6,  180, True,  True,  0.1, 0.1, 0.1,    "any orientation"),
    # Our user's Keras ImageDataGenerator(rotation_range=90, both flips): wrong for any oriented
    # scan (a chest X-ray on its side is not a chest X-ray). Kept to reproduce and diagnose it.
    "rotate90":   _Preset(1.0,  90,  True,  True,  0,   0,   0,    "forum recipe"),
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
    parts += [f"saturation ±{p.saturation:g}"] if p.saturation else []
    return f"{name}: {', '.join(parts)}; {p.note}"


class _Resize(nn.Module):
    """Antialiased bilinear resize of the whole square to size×size (a no-op at that size)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.size:
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)


def unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1], contiguous."""
    b, h, w, c = pixels.shape
    x = torch.empty((b, c, h, w), dtype=torch.float32, device=pixels.device)
    return x.copy_(pixels.permute(0, 3, 1, 2)).div_(255.0)


class EvalTransform(nn.Module):
    """uint8 (B, S, S, C) -> float (B, C, size, size) in [0, 1]: the whole image, resized.

    No crop (findings can sit at the edge). Used for validation, test, predict, export and serve,
    so what the model sees after training is exactly what it was validated on.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.resize = _Resize(size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.resize(unit_float(pixels))


def sample_affine(preset: _Preset, n: int, src: int, out: int) -> torch.Tensor:
    """Per-sample random crop, rotation and flips as one (n, 2, 3) float64 matrix each.

    The matrices map source pixel coordinates to output ones (OpenCV's `warpAffine` convention,
    pixel centres at integers; kornia's `warp_affine` with align_corners=True reads them the same
    way). One warp per image instead of one per step: a single interpolation, and on a CPU the
    difference between keeping up with the model and not. Drawn from torch's global generator, so
    seeded runs repeat and a CUDA run draws what a CPU run draws.
    """
    u = torch.rand(n, 6, dtype=torch.float64)
    # Random resized crop: area fraction in [crop, 1], aspect ratio log-uniform in _RATIO.
    fraction = preset.crop + (1 - preset.crop) * u[:, 0]
    lo, hi = math.log(_RATIO[0]), math.log(_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[:, 1])
    # Narrowed to the ratios whose crop fits in the square (torchvision redraws instead), so a
    # preset with crop 1.0 keeps the whole image and never stretches it.
    ratio = torch.minimum(torch.maximum(ratio, fraction), 1 / fraction)
    w = (fraction * ratio).sqrt().clamp(max=1.0) * src
    h = (fraction / ratio).sqrt().clamp(max=1.0) * src
    centre = torch.stack([w / 2 + (src - w) * u[:, 2], h / 2 + (src - h) * u[:, 3]], 1) - 0.5
    angle = torch.deg2rad(preset.degrees * (2 * u[:, 4] - 1))
    cos, sin = angle.cos(), angle.sin()
    rotate = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    flip_bits = torch.rand(n, 2, dtype=torch.float64) < 0.5
    flips = torch.ones(n, 2, dtype=torch.float64)
    flips[:, 0][flip_bits[:, 0] & preset.hflip] = -1.0
    flips[:, 1][flip_bits[:, 1] & preset.vflip] = -1.0
    scale = torch.stack([out / w, out / h], 1)
    # out = flips · rotate · scale · (src - centre) + (out - 1) / 2
    linear = flips[:, :, None] * rotate * scale[:, None, :]  # (n, 2, 2)
    shift = (out - 1) / 2 - (linear @ centre[:, :, None])[:, :, 0]
    return torch.cat([linear, shift[:, :, None]], 2)


# Luma weights of kornia's rgb_to_grayscale (ITU-R 601), which its contrast and saturation use.
_GRAY = (0.299, 0.587, 0.114)


def _luma_weights(channels: int) -> tuple[float, ...]:
    """Per-channel weights of an image's gray level: luma for colour, the value itself for gray."""
    return _GRAY if channels == 3 else (1.0,)


class Colour(NamedTuple):
    """Brightness, contrast and saturation of each image as one affine colour map:
    out = matrix @ pixel + offset * mean_gray(image), clamped to the valid range."""

    matrix: torch.Tensor  # (B, C, C) float64
    offset: torch.Tensor  # (B,) float64


def colour_map(b: torch.Tensor, c: torch.Tensor, s: torch.Tensor, channels: int) -> Colour:
    """Brightness b, contrast c and saturation s (torchvision's factors, 1 = unchanged; shape
    (B,)), applied in that order, as one map per image.

    brightness x -> b x; contrast x -> c x + (1 - c) mean_gray(x); saturation (colour only)
    x -> s x + (1 - s) gray(x). Composed: matrix = c b (s I + (1 - s) 1 wᵀ), offset = (1 - c) b,
    because the saturation blend keeps a grey level grey (its rows sum to 1). One clamp at the
    end instead of one per step (kornia, torchvision): the two differ only where a step pushed a
    pixel out of range and a later one would have pulled it back.
    """
    blend = torch.eye(channels, dtype=torch.float64).expand(len(b), channels, channels)
    if channels == 3:
        gray = torch.tensor(_GRAY, dtype=torch.float64).expand(3, 3)  # every row is wᵀ
        s = s.double()[:, None, None]
        blend = s * blend + (1 - s) * gray
    scale = (c * b).double()[:, None, None]
    return Colour(scale * blend, ((1 - c) * b).double())


def sample_colour(preset: _Preset, n: int, channels: int) -> Colour | None:
    """The preset's per-sample colour jitter; None when it has none for these channels."""
    saturation = preset.saturation if channels == 3 else 0.0
    if not (preset.brightness or preset.contrast or saturation):
        return None
    u = 2 * torch.rand(n, 3, dtype=torch.float64) - 1  # each in [-1, 1)
    return colour_map(
        1 + preset.brightness * u[:, 0], 1 + preset.contrast * u[:, 1], 1 + saturation * u[:, 2],
        channels,
    )  # fmt: skip


def recolour(x: torch.Tensor, colour: Colour) -> torch.Tensor:
    """Apply `colour` to a float batch (B, C, H, W) in [0, 1] (what `warp_cpu` does per image)."""
    b, c = x.shape[:2]
    w = torch.tensor(_luma_weights(c), device=x.device, dtype=x.dtype)
    mean_gray = torch.einsum("c,bchw->b", w, x) / (x.shape[2] * x.shape[3])
    matrix, offset = colour.matrix.to(x), colour.offset.to(x)
    out = torch.einsum("bij,bjhw->bihw", matrix, x) + (offset * mean_gray).view(b, 1, 1, 1)
    return out.clamp_(0.0, 1.0)


# At most 8: a 32-image batch then still gives every thread 4 images to warp.
_WARP_THREADS = max(1, min(os.cpu_count() or 1, 8))


@functools.cache
def _cpu_pool() -> ThreadPoolExecutor:
    # One image per thread at a time: OpenCV's own threads on top would only add hand-offs.
    cv2.setNumThreads(1)
    return ThreadPoolExecutor(_WARP_THREADS, "medfit-warp")


def warp_cpu(
    pixels: torch.Tensor, matrices: torch.Tensor, size: int, colour: Colour | None = None
) -> torch.Tensor:
    """uint8 (B, S, S, C) -> float (B, C, size, size) in [0, 1], warped (and recoloured) by OpenCV.

    Bilinear, reflected border, like `warp_torch`; the colour map like `recolour`, on uint8 (one
    `cv2.transform`, rounded and saturated). OpenCV warps uint8 with SIMD fixed-point
    arithmetic (about 0.4 ms per 224² colour image on one core, several times faster than a float
    `grid_sample`); each image is warped and converted to float by one of a few threads (OpenCV and
    numpy release the GIL), which on 2 cores beat OpenCV's own per-image threading by ~15%.
    """
    src = pixels.numpy()
    b, _, _, c = src.shape
    warped = np.empty((b, size, size, c), dtype=np.uint8)
    out = torch.empty((b, c, size, size), dtype=torch.float32)
    out_np = out.numpy()
    m = matrices.numpy()
    gray = np.array(_luma_weights(c))
    if colour is not None:
        colour_matrix, colour_offset = colour.matrix.numpy(), colour.offset.numpy()

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            cv2.warpAffine(
                src[i], m[i], (size, size), dst=warped[i],
                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101,
            )  # fmt: skip
            if colour is not None:
                image = warped[i] if c == 3 else warped[i, :, :, 0]  # OpenCV's 1-channel shape
                mean_gray = float(gray @ np.array(cv2.mean(image)[:c]))
                offset = colour_offset[i] * mean_gray
                affine = np.hstack([colour_matrix[i], np.full((c, 1), offset)])
                cv2.transform(image, affine, dst=image)
            # HWC -> CHW float by OpenCV's deinterleave and numpy, not torch: torch's own threads
            # inside these threads oversubscribed the cores (2,100 vs 2,860 images/s on 2 cores).
            # The same float32 values as `unit_float`.
            for channel, plane in enumerate(cv2.split(warped[i])):
                np.divide(plane, np.float32(255), out=out_np[i, channel])

    step = -(-b // _WARP_THREADS)
    list(_cpu_pool().map(lambda lo: work(lo, min(lo + step, b)), range(0, b, step)))
    return out


def warp_torch(x: torch.Tensor, matrices: torch.Tensor, size: int) -> torch.Tensor:
    """float (B, C, S, S) -> (B, C, size, size) by kornia: `warp_cpu`'s warp, batched."""
    m = matrices.to(device=x.device, dtype=x.dtype)
    return warp_affine(x, m, (size, size), "bilinear", "reflection", align_corners=True)


class TrainAugment(nn.Module):
    """uint8 (B, S, S, C) -> float (B, C, size, size) in [0, 1], augmented per sample.

    One random affine warp (crop, rotation, flips) and one colour map (brightness, contrast,
    saturation) per image: OpenCV on uint8 on a CPU, kornia/torch on the batch on a GPU, from the
    same draws. No hue shift: in every modality whose colour could shift, colour is the label.
    """

    def __init__(self, preset: str, size: int, cpu_backend: str = "opencv") -> None:
        super().__init__()
        self.preset, self.params, self.size = preset, PRESETS[preset], size
        # A much larger input is first brought down antialiased: the warp itself does not
        # antialias, which is fine for the small shrink from the cache size.
        self.max_src = cache_size_for(size)
        self.shrink = _Resize(self.max_src)
        self.cpu_backend = cpu_backend  # "opencv" or "kornia" (to compare them in tests)

    def extra_repr(self) -> str:
        return f"preset={self.preset}, size={self.size}"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        n, src, channels = pixels.shape[0], pixels.shape[1], pixels.shape[3]
        if src > self.max_src:
            x = self.shrink(unit_float(pixels))
            pixels = x.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1)
            src = self.max_src
        # Every draw on the CPU generator, in this order, whatever the device.
        geometry = sample_affine(self.params, n, src, self.size)
        colour = sample_colour(self.params, n, channels)
        if pixels.device.type == "cpu" and self.cpu_backend == "opencv":
            x = warp_cpu(pixels.contiguous(), geometry, self.size, colour)
        else:
            x = warp_torch(unit_float(pixels), geometry, self.size)
            x = x if colour is None else recolour(x, colour)
        return x


def build_eval_transform(img_size: int) -> nn.Module:
    """The whole image resized to img_size; no crop (findings can sit at the edge)."""
    return EvalTransform(img_size)


def build_train_augment(preset: str, img_size: int) -> nn.Module:
    """Per-sample random augmentation: uint8 (B, S, S, C) -> float (B, C, img_size, img_size)."""
    if preset == "auto":
        raise ValueError("resolve 'auto' with resolve_preset() before building the augmentation")
    if resolve_preset(preset, grayscale=False) == "none":
        return EvalTransform(img_size)
    return TrainAugment(preset, img_size)
