"""Modality from content: gray stays gray however it is stored, and the choice is said."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medfit.config import MODALITIES, RunConfig
from medfit.data.augment import PRESETS
from medfit.data.modality import GRAY_COLOURFULNESS, choose_augmentation, colour_fraction
from medfit.errors import ConfigError

RNG = np.random.default_rng(0)


def _gray_as_rgb(n: int) -> np.ndarray:
    gray = RNG.integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)
    return np.repeat(gray, 3, axis=3)


def _colour(n: int) -> np.ndarray:
    pixels = RNG.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    pixels[..., 2] //= 4  # stained-cell-like: channels far apart
    return pixels


def _jpeg_roundtrip(pixels: np.ndarray, tmp_path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Save as a colour JPEG with chroma subsampling and read back, as a scanner export would."""
    out = []
    for i, image in enumerate(pixels):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(image, "RGB").save(path, quality=85, subsampling=2)
        out.append(np.asarray(Image.open(path).convert("RGB")))
    return np.stack(out)


def test_gray_saved_as_rgb_is_gray(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stored = _jpeg_roundtrip(_gray_as_rgb(20), tmp_path)
    fraction, looked = colour_fraction(stored)
    assert (fraction, looked) == (0.0, 20)
    choice = choose_augmentation("auto", "auto", stored)
    assert choice.preset == "xray"
    assert "0.0% of 20 train images are colour" in choice.reason


def test_true_colour_is_colour_and_gets_mild_jitter_only() -> None:
    choice = choose_augmentation("auto", "auto", _colour(30))
    assert choice.preset == "microscopy"
    assert "100.0% of 30" in choice.reason
    p = PRESETS[choice.preset]
    assert max(p.brightness, p.contrast, p.saturation) <= 0.1


def test_a_few_colour_images_do_not_make_a_gray_set_colour() -> None:
    """The brain-MRI case: 98.5% gray; the cache holds 3 channels because of the rest."""
    pixels = np.concatenate([_gray_as_rgb(197), _colour(3)])
    fraction, _ = colour_fraction(pixels)
    assert fraction == pytest.approx(0.015)
    assert choose_augmentation("auto", "auto", pixels).preset == "xray"


def test_one_channel_cache_is_gray_without_looking() -> None:
    pixels = RNG.integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    assert colour_fraction(pixels) == (0.0, 5)


def test_sixteen_bit_gray_decoded_to_one_channel_is_gray(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medfit.data.decode import decode_image

    path = tmp_path / "ct.png"
    Image.fromarray(RNG.integers(0, 4000, (32, 32), dtype=np.uint16)).save(path)
    decoded = decode_image(path)
    pixels = decoded.pixels[None]
    assert pixels.shape[-1] == 1
    assert choose_augmentation("auto", "auto", pixels).preset == "xray"


def test_threshold_sits_between_jpeg_noise_and_real_colour() -> None:
    faint = _gray_as_rgb(4).astype(np.int16)
    faint[..., 0] += 1  # one level of chroma noise
    assert colour_fraction(np.clip(faint, 0, 255).astype(np.uint8))[0] == 0.0
    assert GRAY_COLOURFULNESS < 10  # stained cells and fundus photos are far above


@pytest.mark.parametrize("modality", [m for m in MODALITIES if m != "auto"])
def test_every_named_modality_has_its_preset(modality: str) -> None:
    choice = choose_augmentation(modality, "auto", _colour(2))
    assert choice.preset == modality and choice.reason.startswith(f"--modality {modality}")


@pytest.mark.parametrize("modality", ["fundus", "dermoscopy", "microscopy", "histology"])
def test_colour_is_signal_so_jitter_is_mild(modality: str) -> None:
    p = PRESETS[modality]
    assert max(p.brightness, p.contrast, p.saturation) <= 0.1


@pytest.mark.parametrize("modality", ["xray", "ct"])
def test_laterality_modalities_never_flip(modality: str) -> None:
    assert not PRESETS[modality].hflip and not PRESETS[modality].vflip


def test_aug_overrides_modality() -> None:
    choice = choose_augmentation("xray", "light", _colour(2))
    assert choice.preset == "light" and choice.reason.startswith("--aug light")


def test_unknown_modality_is_a_config_error() -> None:
    cfg = RunConfig()
    cfg.data.modality = "endoscopy"
    with pytest.raises(ConfigError, match=r"data\.modality must be one of"):
        cfg.validate()
