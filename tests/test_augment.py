"""Augmentation presets: shapes, per-sample randomness, oriented scans keep their orientation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_hsv

from medfit import config
from medfit.data.augment import (
    AUG_PRESETS,
    build_eval_transform,
    build_train_augment,
    describe_preset,
    resolve_preset,
)
from medfit.errors import ConfigError

CONCRETE = [p for p in AUG_PRESETS if p != "auto"]
SIZE, CACHE = 32, 37  # cache_size = ceil(32 * 1.15)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _bright_band(where: str, n: int = 64, channels: int = 1) -> torch.Tensor:
    """A dark batch whose top rows (or left columns) are bright: an image with an orientation."""
    x = torch.zeros(n, channels, CACHE, CACHE)
    band = CACHE // 4
    if where == "top":
        x[..., :band, :] = 1.0
    else:
        x[..., :, :band] = 1.0
    return x


def _centroid(y: torch.Tensor, dim: int) -> torch.Tensor:
    """Per sample, the row (dim=-2) or column (dim=-1) of the bright mass, as a fraction of side.

    The minimum is subtracted first so that a brightness shift does not pull it to the centre.
    """
    mass = y - y.amin(dim=(1, 2, 3), keepdim=True)
    pos = (
        torch.linspace(0, 1, y.shape[dim]).view(-1, 1)
        if dim == -2
        else torch.linspace(0, 1, y.shape[dim])
    )
    return (mass * pos).sum(dim=(1, 2, 3)) / mass.sum(dim=(1, 2, 3))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("preset", CONCRETE)
def test_output_shape_dtype_range(preset: str, channels: int) -> None:
    x = torch.rand(4, channels, CACHE, CACHE)
    y = build_train_augment(preset, SIZE)(x)
    assert y.shape == (4, channels, SIZE, SIZE)
    assert y.dtype == torch.float32
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_input_much_larger_than_img_size_is_shrunk_antialiased() -> None:
    # A 1-pixel checkerboard averages to flat grey; a non-antialiased 3× shrink would alias it.
    board = ((torch.arange(96).view(-1, 1) + torch.arange(96)) % 2).float()
    y = build_train_augment("light", SIZE)(board.expand(8, 3, 96, 96))
    assert y.shape == (8, 3, SIZE, SIZE)
    assert y.std(dim=(1, 2, 3)).max() < 0.02


def test_auto_must_be_resolved_first() -> None:
    with pytest.raises(ValueError, match="resolve_preset"):
        build_train_augment("auto", SIZE)


def test_randomness_is_per_sample() -> None:
    # torchvision.transforms.v2 on a batch tensor would make all 16 copies identical.
    x = torch.rand(1, 3, CACHE, CACHE).expand(16, -1, -1, -1).contiguous()
    y = build_train_augment("microscopy", SIZE)(x)
    assert len({tuple(row.tolist()) for row in y.flatten(1)}) >= 2


def test_eval_transform_is_deterministic_antialiased_resize() -> None:
    x = torch.rand(3, 3, CACHE, CACHE)
    tf = build_eval_transform(SIZE)
    expected = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    torch.testing.assert_close(tf(x), expected, atol=1e-5, rtol=0)
    assert torch.equal(tf(x), tf(x))
    assert torch.equal(tf(expected), expected)  # already at size: untouched


def test_none_preset_is_the_eval_transform() -> None:
    x = torch.rand(3, 1, CACHE, CACHE)
    torch.testing.assert_close(build_train_augment("none", SIZE)(x), build_eval_transform(SIZE)(x))


@pytest.mark.parametrize("preset", ["xray", "oct", "mri", "light"])
def test_oriented_presets_never_turn_images_upside_down(preset: str) -> None:
    # ±10° and a crop move the band a little; a flip or a 90° turn moves it to the middle or bottom.
    y = build_train_augment(preset, SIZE)(_bright_band("top"))
    assert _centroid(y, dim=-2).max() < 0.25


def test_microscopy_turns_images_upside_down() -> None:
    y = build_train_augment("microscopy", SIZE)(_bright_band("top", channels=3))
    assert _centroid(y, dim=-2).max() > 0.5


def test_xray_never_mirrors_left_right() -> None:
    y = build_train_augment("xray", SIZE)(_bright_band("left"))
    assert _centroid(y, dim=-1).max() < 0.25


@pytest.mark.parametrize("preset", ["light", "oct", "mri", "microscopy", "dermoscopy"])
def test_mirroring_presets_do_mirror(preset: str) -> None:
    y = build_train_augment(preset, SIZE)(_bright_band("left"))
    assert _centroid(y, dim=-1).max() > 0.5


def test_full_rotation_paints_no_black_corners() -> None:
    # A uniform image stays uniform under reflect padding; zero padding would darken the corners.
    y = build_train_augment("microscopy", SIZE)(torch.full((32, 3, CACHE, CACHE), 0.6))
    assert y.flatten(1).std(dim=1).max() < 1e-3


def test_dermoscopy_jitter_shifts_hue_on_colour_input() -> None:
    x = torch.tensor([0.3, 0.7, 0.2]).view(1, 3, 1, 1).expand(32, 3, CACHE, CACHE).contiguous()
    y = build_train_augment("dermoscopy", SIZE)(x)
    hue = rgb_to_hsv(y)[:, 0].mean(dim=(1, 2))  # radians, ~1.9 (green)
    assert hue.std() > 0.02


def test_microscopy_jitter_varies_saturation_but_keeps_stain_hue() -> None:
    x = torch.tensor([0.3, 0.7, 0.2]).view(1, 3, 1, 1).expand(32, 3, CACHE, CACHE).contiguous()
    hsv = rgb_to_hsv(build_train_augment("microscopy", SIZE)(x))
    assert hsv[:, 0].mean(dim=(1, 2)).std() < 0.01  # hue: granule colour is the label
    assert hsv[:, 1].mean(dim=(1, 2)).std() > 0.02  # saturation: stain strength varies


def test_resolve_preset() -> None:
    assert resolve_preset("auto", grayscale=True) == "xray"
    assert resolve_preset("auto", grayscale=False) == "microscopy"
    assert resolve_preset("oct", grayscale=True) == "oct"
    with pytest.raises(ConfigError) as err:
        resolve_preset("chest", grayscale=True)
    assert all(name in str(err.value) for name in AUG_PRESETS)


def test_preset_names_match_config() -> None:
    assert AUG_PRESETS == config.AUG_PRESETS


@pytest.mark.parametrize("preset", AUG_PRESETS)
def test_describe_preset_is_one_line(preset: str) -> None:
    line = describe_preset(preset)
    assert line.startswith(f"{preset}: ") and "\n" not in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("preset", CONCRETE)
def test_runs_on_cuda(preset: str, channels: int) -> None:
    x = torch.rand(8, channels, CACHE, CACHE, device="cuda")
    y = build_train_augment(preset, SIZE).to("cuda")(x)
    assert y.device.type == "cuda" and y.shape == (8, channels, SIZE, SIZE)
    assert y.min() >= 0.0 and y.max() <= 1.0
