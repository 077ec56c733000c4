"""`Preprocess` owns the input pipeline: the cache square, the eval resize and the normalisation.

Train, eval, predict, check's embeddings and diagnose's probes all feed the model through
`Preprocess.square` / `Preprocess.input_fn`. The reference below is the pipeline as those five
sites wrote it out before (decode -> `resize_square` to `cache_size_for(img_size)` -> gray to 3
channels -> `build_eval_transform` -> `to_model_input`); the pixels must stay bit-identical, or
a deployed model would see other inputs than it was trained and evaluated on.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfit.data.augment import build_eval_transform, build_train_augment
from medfit.data.cache import cache_size_for, resize_square
from medfit.data.loader import to_model_input
from medfit.model.backbones import Preprocess

CPU = torch.device("cpu")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (45, 70), dtype=np.uint8),  # gray without a channel axis
        rng.integers(0, 256, (20, 20, 1), dtype=np.uint8),  # gray, upsampled
        rng.integers(0, 256, (90, 33, 3), dtype=np.uint8),  # colour, tall
        rng.integers(0, 256, (300, 250, 3), dtype=np.uint8),  # colour, much larger
    ]


def _reference_square(pre: Preprocess, pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    size = cache_size_for(pre.img_size)
    square = resize_square(pixels.astype(np.uint8), size, pre.interpolation)
    return square if square.shape[2] == 3 else np.repeat(square, 3, axis=2)


def _reference_input(
    pre: Preprocess, batch: torch.Tensor, transform: torch.nn.Module, channels_last: bool = False
) -> torch.Tensor:
    mean, std = torch.tensor(pre.mean), torch.tensor(pre.std)
    return to_model_input(batch, CPU, transform, mean, std, channels_last)


@pytest.mark.parametrize(
    ("size", "interpolation"), [(32, "bicubic"), (29, "bilinear"), (64, "nearest")]
)
def test_eval_pipeline_is_bit_identical_to_the_reference(size: int, interpolation: str) -> None:
    pre = Preprocess(size, *IMAGENET, interpolation, 0.875)
    images = _images()
    squares = np.stack([pre.square(i) for i in images])
    expected = np.stack([_reference_square(pre, i) for i in images])
    assert squares.shape == (len(images), pre.cache_size, pre.cache_size, 3)
    assert squares.dtype == np.uint8
    np.testing.assert_array_equal(squares, expected)

    x = pre.input_fn(CPU)(torch.from_numpy(squares))
    ref = _reference_input(pre, torch.from_numpy(expected), build_eval_transform(size))
    assert x.shape == (len(images), 3, size, size)
    assert torch.equal(x, ref)


def test_train_augment_goes_before_the_same_normalisation() -> None:
    pre = Preprocess(32, *IMAGENET, "bicubic", 0.875)
    batch = torch.from_numpy(np.stack([pre.square(i) for i in _images()]))
    torch.manual_seed(1)
    x = pre.input_fn(CPU, build_train_augment("light", 32), channels_last=True)(batch)
    torch.manual_seed(1)
    ref = _reference_input(pre, batch, build_train_augment("light", 32), channels_last=True)
    assert torch.equal(x, ref)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(x, pre.input_fn(CPU)(batch))  # the augmentation did run


def test_normalisation_uses_the_weights_mean_and_std() -> None:
    # A uniform mid-gray image: every output pixel is (0.5 - mean) / std of its channel.
    pre = Preprocess(16, (0.1, 0.5, 0.9), (0.5, 0.25, 0.125), "bilinear", 0.875)
    gray = np.full((40, 30), 128, np.uint8)
    x = pre.input_fn(CPU)(torch.from_numpy(pre.square(gray)[None]))
    expected = (128 / 255 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(x[0].mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


def test_cache_size_adds_the_crop_margin() -> None:
    assert Preprocess(224, *IMAGENET, "bicubic", 0.875).cache_size == 258
    assert Preprocess(32, *IMAGENET, "bicubic", 0.875).cache_size == 37
