"""Which modality the images are, and so which augmentation they get, said out loud.

`--modality NAME` is taken as given and picks the preset of that name (medfit/data/augment.py).
`auto` decides only what the pixels can tell, gray or colour, from the training images themselves:
a gray image stored as RGB (equal channels, or within JPEG chroma noise) is gray, and a set is
colour only when most of its images are. The cache's channel count cannot decide it: one colour
image among thousands of gray ones makes the whole cached split 3-channel (a brain-MRI set with
106 colour JPEGs in 7,019 got the cell preset, with vertical flips and colour jitter, that way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfit.data.augment import describe_preset, resolve_preset

# Mean over pixels of (max - min channel), in 8-bit levels. Gray content saved as a colour JPEG
# keeps chroma noise of about a level; stained cells, fundus photographs and skin are well above 10.
GRAY_COLOURFULNESS = 3.0
# A set is colour when more than half of its (sampled) training images are: a few colour images
# (overlays, a colour-mapped export) do not turn a gray modality into microscopy.
COLOUR_MAJORITY = 0.5
# Images looked at: enough for the fraction to be within ±2.2 points (binomial, worst case).
SAMPLE = 2000


@dataclass(frozen=True)
class AugmentationChoice:
    preset: str  # a concrete preset name
    reason: str  # one line for the run's header


def colourfulness(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N,) mean (max - min) channel spread per image (0 for 1 channel)."""
    if pixels.shape[-1] == 1:
        return np.zeros(len(pixels))
    spread = pixels.max(axis=-1).astype(np.int16) - pixels.min(axis=-1)
    return spread.reshape(len(pixels), -1).mean(axis=1)


def colour_fraction(pixels: np.ndarray, seed: int = 0) -> tuple[float, int]:
    """(fraction of colour images, images looked at) over a seeded sample of the split."""
    n = len(pixels)
    if n == 0 or pixels.shape[-1] == 1:
        return 0.0, n
    rows = np.arange(n)
    if n > SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(n, SAMPLE, replace=False))
    colour = colourfulness(np.asarray(pixels[rows])) > GRAY_COLOURFULNESS
    return float(colour.mean()), len(rows)


def choose_augmentation(modality: str, aug: str, train_pixels: np.ndarray) -> AugmentationChoice:
    """The preset for this run and why: --aug, else --modality, else gray/colour from pixels."""
    if aug != "auto":
        preset = resolve_preset(aug, grayscale=False)
        return AugmentationChoice(preset, f"--aug {describe_preset(preset)}")
    if modality != "auto":
        preset = resolve_preset(modality, grayscale=False)
        return AugmentationChoice(preset, f"--modality {describe_preset(preset)}")
    fraction, looked = colour_fraction(train_pixels)
    colour = fraction > COLOUR_MAJORITY
    preset = resolve_preset("auto", grayscale=not colour)
    seen = f"{100 * fraction:.1f}% of {looked} train images are colour"
    if colour:
        hint = "name --modality fundus/dermoscopy/histology if it is one of those"
    else:
        hint = "gray stored as RGB counts as gray; --modality mri/ultrasound/oct allows a mirror"
    return AugmentationChoice(preset, f"auto: {seen} -> {describe_preset(preset)} ({hint})")
