"""Augmentation presets: shapes, per-sample randomness, oriented scans keep their orientation, and
the OpenCV (CPU) and kornia (GPU) warps agree."""

from __future__ import annotations

import math

import kornia.enhance as KE
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_hsv

from medfit import config
from medfit.data.augment import (
    AUG_PRESETS,
    PRESETS,
    TrainAugment,
    build_eval_transform,
    build_train_augment,
    colour_map,
    describe_preset,
    recolour,
    resolve_preset,
    sample_affine,
    unit_float,
    warp_cpu,
    warp_torch,
)
from medfit.errors import ConfigError

CONCRETE = [p for p in AUG_PRESETS if p != "auto"]
SIZE, CACHE = 32, 37  # cache_size = ceil(32 * 1.15)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _u8(x: torch.Tensor) -> torch.Tensor:
    """float (B, C, H, W) in [0, 1] -> the cache's uint8 (B, H, W, C)."""
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _bright_band(where: str, n: int = 64, channels: int = 1) -> torch.Tensor:
    """A dark uint8 batch, top rows (or left columns) bright: an image with an orientation."""
    x = torch.zeros(n, CACHE, CACHE, channels, dtype=torch.uint8)
    band = CACHE // 4
    if where == "top":
        x[:, :band] = 255
    else:
        x[:, :, :band] = 255
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


def _solid(rgb: tuple[float, float, float], n: int = 32) -> torch.Tensor:
    return _u8(torch.tensor(rgb).view(1, 3, 1, 1).expand(n, 3, CACHE, CACHE))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("preset", CONCRETE)
def test_output_shape_dtype_range(preset: str, channels: int) -> None:
    x = torch.randint(0, 256, (4, CACHE, CACHE, channels), dtype=torch.uint8)
    y = build_train_augment(preset, SIZE)(x)
    assert y.shape == (4, channels, SIZE, SIZE)
    assert y.dtype == torch.float32
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_input_much_larger_than_img_size_is_shrunk_antialiased() -> None:
    # A 1-pixel checkerboard averages to flat grey; a non-antialiased 3× shrink would alias it.
    board = ((torch.arange(96).view(-1, 1) + torch.arange(96)) % 2).float()
    y = build_train_augment("light", SIZE)(_u8(board.expand(8, 3, 96, 96)))
    assert y.shape == (8, 3, SIZE, SIZE)
    assert y.std(dim=(1, 2, 3)).max() < 0.02


def test_auto_must_be_resolved_first() -> None:
    with pytest.raises(ValueError, match="resolve_preset"):
        build_train_augment("auto", SIZE)


def test_randomness_is_per_sample() -> None:
    # torchvision.transforms.v2 on a batch tensor would make all 16 copies identical.
    x = torch.randint(0, 256, (1, CACHE, CACHE, 3), dtype=torch.uint8).expand(16, -1, -1, -1)
    y = build_train_augment("microscopy", SIZE)(x.contiguous())
    assert len({tuple(row.tolist()) for row in y.flatten(1)}) >= 2


def test_eval_transform_is_deterministic_antialiased_resize() -> None:
    x = torch.randint(0, 256, (3, CACHE, CACHE, 3), dtype=torch.uint8)
    tf = build_eval_transform(SIZE)
    unit = x.permute(0, 3, 1, 2).float() / 255
    expected = F.interpolate(unit, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    torch.testing.assert_close(tf(x), expected, atol=1e-5, rtol=0)
    assert torch.equal(tf(x), tf(x))
    small = x[:, :SIZE, :SIZE]
    assert torch.equal(tf(small), unit[..., :SIZE, :SIZE])  # already at size: untouched


def test_none_preset_is_the_eval_transform() -> None:
    x = torch.randint(0, 256, (3, CACHE, CACHE, 1), dtype=torch.uint8)
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
    y = build_train_augment("microscopy", SIZE)(_solid((0.6, 0.6, 0.6)))
    spread = y.flatten(1).amax(dim=1) - y.flatten(1).amin(dim=1)
    assert spread.max() <= 2 / 255  # uint8 rounding of the colour map, not a dark corner


@pytest.mark.parametrize("preset", ["microscopy", "dermoscopy", "histology"])
def test_colour_presets_vary_saturation_but_keep_hue(preset: str) -> None:
    hsv = rgb_to_hsv(build_train_augment(preset, SIZE)(_solid((0.3, 0.7, 0.2))))
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
    x = torch.randint(0, 256, (8, CACHE, CACHE, channels), dtype=torch.uint8, device="cuda")
    y = build_train_augment(preset, SIZE).to("cuda")(x)
    assert y.device.type == "cuda" and y.shape == (8, channels, SIZE, SIZE)
    assert y.min() >= 0.0 and y.max() <= 1.0


# --- the warp itself ----------------------------------------------------------------------------


def test_crop_one_without_rotation_or_flips_is_the_plain_resize() -> None:
    still = PRESETS["light"]._replace(crop=1.0, hflip=False)
    m = sample_affine(still, 64, CACHE, SIZE)
    s = SIZE / CACHE
    t = (SIZE - 1) / 2 - s * (CACHE - 1) / 2  # pixel centres: centre maps to centre
    expected = torch.tensor([[s, 0.0, t], [0.0, s, t]], dtype=torch.float64)
    torch.testing.assert_close(m, expected.expand(64, 2, 3))


def test_crops_stay_inside_the_image_and_near_square() -> None:
    straight = PRESETS["dermoscopy"]._replace(degrees=0, hflip=False, vflip=False)
    m = sample_affine(straight, 500, 100, 50)
    sx, sy = m[:, 0, 0], m[:, 1, 1]
    w, h = 50 / sx, 50 / sy  # source pixels covered by the output
    assert (w <= 100 + 1e-9).all() and (h <= 100 + 1e-9).all()
    assert ((w * h) / 100**2 >= 0.6 - 1e-9).all()  # dermoscopy keeps at least 60% of the area
    assert ((w / h) >= 0.9 - 1e-9).all() and ((w / h) <= 1.1 + 1e-9).all()
    # the crop's corners map inside [-0.5, 99.5]: output pixel -0.5 and 49.5 back to the source
    last_row = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(500, 1, 3)
    inv = torch.linalg.inv(torch.cat([m, last_row], 1))
    for corner in ([-0.5, -0.5], [49.5, 49.5]):
        p = inv @ torch.tensor([*corner, 1.0], dtype=torch.float64)
        assert (p[:, :2] >= -0.5 - 1e-6).all() and (p[:, :2] <= 99.5 + 1e-6).all()


def test_rotation_matrices_are_scaled_rotations_of_the_full_range() -> None:
    m = sample_affine(PRESETS["rotate90"], 2000, CACHE, SIZE)  # crop 1.0, rotation ±90°, flips
    linear = m[:, :, :2] / (SIZE / CACHE)
    ortho = linear @ linear.transpose(1, 2)
    torch.testing.assert_close(ortho, torch.eye(2, dtype=torch.float64).expand(2000, 2, 2))
    det = torch.linalg.det(linear)
    assert (det > 0).any() and (det < 0).any()  # one flip mirrors, two flips rotate by 180°
    # the source centre always lands on the output centre (a crop of the whole square)
    centre = torch.tensor([(CACHE - 1) / 2, (CACHE - 1) / 2, 1.0], dtype=torch.float64)
    torch.testing.assert_close(m @ centre, torch.full((2000, 2), (SIZE - 1) / 2).double())
    angles = torch.rad2deg(torch.atan2(linear[:, 1, 0], linear[:, 0, 0]).abs())
    assert angles.max() > 80  # (a flip adds 180° to the apparent angle of some)


def test_warp_moves_a_dot_where_the_matrix_says() -> None:
    x = torch.zeros(1, CACHE, CACHE, 1, dtype=torch.uint8)
    x[0, 5, 30] = 255  # row 5, column 30
    angle = math.radians(90)
    s = SIZE / CACHE
    linear = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = linear.double() * s
    c_src, c_out = (CACHE - 1) / 2, (SIZE - 1) / 2
    shift = c_out - linear @ torch.tensor([c_src, c_src], dtype=torch.float64)
    m = torch.cat([linear, shift[:, None]], 1)[None]
    expected = linear @ torch.tensor([30.0, 5.0], dtype=torch.float64) + shift  # (x, y)
    for y in (warp_cpu(x, m, SIZE), warp_torch(unit_float(x), m, SIZE)):
        peak = int(y[0, 0].argmax())
        assert abs(peak % SIZE - expected[0]) <= 1 and abs(peak // SIZE - expected[1]) <= 1


@pytest.mark.parametrize("preset", ["microscopy", "xray", "rotate90"])
def test_opencv_and_kornia_warps_agree(preset: str) -> None:
    # The CPU path (OpenCV on uint8) and the GPU path (kornia on float) are one augmentation.
    rng = np.random.default_rng(0)
    smooth = rng.random((8, 3, 8, 8))
    x = _u8(F.interpolate(torch.from_numpy(smooth).float(), size=(CACHE, CACHE), mode="bicubic"))
    m = sample_affine(PRESETS[preset], 8, CACHE, SIZE)
    a, b = warp_cpu(x, m, SIZE), warp_torch(unit_float(x), m, SIZE)
    assert (a - b).abs().max() < 3 / 255  # OpenCV rounds to uint8 and uses fixed-point weights


def test_same_seed_same_batch_on_either_backend() -> None:
    x = torch.randint(0, 256, (6, CACHE, CACHE, 3), dtype=torch.uint8)
    runs = []
    for backend in ("opencv", "opencv", "kornia"):
        torch.manual_seed(7)
        runs.append(TrainAugment("microscopy", SIZE, cpu_backend=backend)(x))
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().max() < 3 / 255


# --- the colour map -----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_map_is_kornias_brightness_contrast_saturation_in_one_step(channels: int) -> None:
    # Mid-range pixels and ±20% factors: no step leaves [0, 1], so the single clamp and
    # kornia's clamp-per-step must agree exactly (up to float rounding).
    x = 0.3 + 0.4 * torch.rand(16, channels, 8, 8)
    b, c, s = (0.8 + 0.4 * torch.rand(16) for _ in range(3))
    expected = KE.adjust_contrast_with_mean_subtraction(KE.adjust_brightness_accumulative(x, b), c)
    if channels == 3:
        expected = KE.adjust_saturation_with_gray_subtraction(expected, s)
    got = recolour(x, colour_map(b, c, s, channels))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_identity_factors_leave_the_image_alone() -> None:
    x = torch.rand(4, 3, 8, 8)
    ones = torch.ones(4)
    torch.testing.assert_close(recolour(x, colour_map(ones, ones, ones, 3)), x)


@pytest.mark.parametrize("preset", ["xray", "microscopy"])
@pytest.mark.parametrize("channels", [1, 3])
def test_opencv_and_torch_colour_agree(preset: str, channels: int) -> None:
    rng = np.random.default_rng(1)
    smooth = torch.from_numpy(rng.random((8, channels, 8, 8))).float()
    x = _u8(F.interpolate(smooth, size=(CACHE, CACHE), mode="bicubic").clamp(0, 1))
    runs = []
    for backend in ("opencv", "kornia"):
        torch.manual_seed(3)
        runs.append(TrainAugment(preset, SIZE, cpu_backend=backend)(x))
    assert (runs[0] - runs[1]).abs().max() < 4 / 255  # two uint8 roundings on the OpenCV side
    assert (runs[0] - _no_colour(preset, x)).abs().max() > 10 / 255  # the colour map did act


def _no_colour(preset: str, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(3)
    plain = PRESETS[preset]._replace(brightness=0, contrast=0, saturation=0)
    return warp_cpu(x, sample_affine(plain, len(x), CACHE, SIZE), SIZE)
