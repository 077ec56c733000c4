"""BatchLoader / to_model_input: every sample once per epoch, labels paired with their pixels,
seeded orders, class-balanced sampling, and the background prefetch that must neither change the
batches nor swallow errors."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from medfit.data.augment import unit_float
from medfit.data.loader import BatchLoader, to_model_input

S = 4


class _Unit(torch.nn.Module):
    """The smallest transform: uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1]."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return unit_float(pixels)


def indexed_split(n: int, n_classes: int = 3, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose value is the sample's index; labels = index % n_classes."""
    assert n <= 256
    pixels = np.empty((n, S, S, channels), dtype=np.uint8)
    pixels[:] = np.arange(n, dtype=np.uint8)[:, None, None, None]
    labels = np.arange(n, dtype=np.int64) % n_classes
    return pixels, labels


def indices_of(pixels: torch.Tensor) -> list[int]:
    return pixels[:, 0, 0, 0].tolist()


def epoch_indices(loader: BatchLoader) -> list[int]:
    return [i for pixels, _ in loader for i in indices_of(pixels)]


def test_shuffled_epoch_covers_every_index_once_with_a_partial_last_batch() -> None:
    pixels, labels = indexed_split(23)
    loader = BatchLoader(pixels, labels, batch_size=5, shuffle=True, seed=1)
    batches = list(loader)
    assert len(loader) == 5
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3]
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.shape[1:] == (S, S, 1)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
    seen = epoch_indices(loader)
    assert sorted(seen) == list(range(23))
    assert seen != list(range(23))  # actually shuffled


def test_drop_last_drops_the_partial_batch() -> None:
    pixels, labels = indexed_split(23)
    loader = BatchLoader(pixels, labels, batch_size=5, shuffle=True, drop_last=True)
    batches = list(loader)
    assert len(loader) == 4
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5]
    seen = epoch_indices(loader)
    assert len(set(seen)) == 20


@pytest.mark.parametrize(("n", "batch", "drop_last", "expected"), [
    (10, 5, False, 2), (10, 5, True, 2), (11, 5, False, 3), (4, 5, False, 1), (4, 5, True, 0),
])  # fmt: skip
def test_len_matches_the_number_of_batches(
    n: int, batch: int, drop_last: bool, expected: int
) -> None:
    pixels, labels = indexed_split(n)
    loader = BatchLoader(pixels, labels, batch_size=batch, shuffle=True, drop_last=drop_last)
    assert len(loader) == expected
    assert len(list(loader)) == expected


def test_unshuffled_order_is_sequential() -> None:
    pixels, labels = indexed_split(13)
    loader = BatchLoader(pixels, labels, batch_size=4)
    assert epoch_indices(loader) == list(range(13))
    loader.set_epoch(5)
    assert epoch_indices(loader) == list(range(13))


def test_order_is_seeded_by_seed_and_epoch() -> None:
    pixels, labels = indexed_split(40)

    def order(seed: int, epoch: int) -> list[int]:
        loader = BatchLoader(pixels, labels, batch_size=40, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return loader.epoch_order().tolist()

    assert order(0, 0) == order(0, 0)
    assert order(7, 3) == order(7, 3)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    # A fresh loader (a resumed run) sees the same batches as the original at that epoch.
    a = BatchLoader(pixels, labels, batch_size=6, shuffle=True, seed=2)
    a.set_epoch(4)
    b = BatchLoader(pixels, labels, batch_size=6, shuffle=True, seed=2)
    b.set_epoch(4)
    assert epoch_indices(a) == epoch_indices(b)


def test_labels_stay_paired_with_their_pixels() -> None:
    pixels, labels = indexed_split(50, n_classes=7, channels=3)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=50).astype(np.int64)
    for loader in (
        BatchLoader(pixels, labels, batch_size=8, shuffle=True, seed=3),
        BatchLoader(pixels, labels, batch_size=8, sample_weights=np.ones(50), seed=3),
        BatchLoader(pixels, labels, batch_size=8),
    ):
        for epoch in range(3):
            loader.set_epoch(epoch)
            for x, y in loader:
                idx = indices_of(x)
                assert y.tolist() == labels[idx].tolist()
                assert (x == x[:, :1, :1, :1]).all()  # every pixel of a row is its own sample's


def test_class_balanced_weights_draw_the_rare_class_half_the_time() -> None:
    pixels, labels = indexed_split(100)
    labels = np.array([0] * 90 + [1] * 10, dtype=np.int64)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    loader = BatchLoader(pixels, labels, batch_size=25, sample_weights=weights, seed=0, prefetch=0)
    drawn: Counter[int] = Counter()
    for epoch in range(40):
        loader.set_epoch(epoch)
        for _, y in loader:
            drawn.update(y.tolist())
    total = sum(drawn.values())
    assert total == 40 * 100  # an epoch is still n draws
    assert abs(drawn[1] / total - 0.5) < 0.04


def test_sample_weights_of_zero_are_never_drawn() -> None:
    pixels, labels = indexed_split(20)
    weights = np.ones(20)
    weights[::2] = 0.0
    loader = BatchLoader(pixels, labels, batch_size=20, sample_weights=weights, prefetch=0)
    assert all(i % 2 == 1 for i in epoch_indices(loader))


@pytest.mark.parametrize("shuffle", [False, True])
def test_prefetch_does_not_change_the_batches(shuffle: bool) -> None:
    pixels, labels = indexed_split(37)

    def batches(prefetch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = BatchLoader(
            pixels, labels, batch_size=6, shuffle=shuffle, seed=5, prefetch=prefetch
        )
        loader.set_epoch(2)
        return list(loader)

    reference = batches(0)
    for prefetch in (1, 2, 4):
        other = batches(prefetch)
        assert len(other) == len(reference)
        for (xa, ya), (xb, yb) in zip(reference, other, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


class ExplodingPixels:
    """Indexable like an array, but the `fail_on`-th read raises."""

    def __init__(self, pixels: np.ndarray, fail_on: int) -> None:
        self.pixels = pixels
        self.fail_on = fail_on
        self.reads = 0

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        self.reads += 1
        if self.reads == self.fail_on:
            raise OSError("disk went away")
        return self.pixels[rows]


@pytest.mark.parametrize("prefetch", [0, 2])
def test_producer_error_is_raised_in_the_consumer(prefetch: int) -> None:
    pixels, labels = indexed_split(20)
    loader = BatchLoader(
        ExplodingPixels(pixels, fail_on=2),  # type: ignore[arg-type]
        labels,
        batch_size=5,
        prefetch=prefetch,
    )
    received = []
    with pytest.raises(OSError, match="disk went away"):
        for x, _ in loader:
            received.append(indices_of(x))
    assert received == [[0, 1, 2, 3, 4]]  # the batch before the failure arrived intact


def test_abandoned_prefetching_epoch_does_not_leak_its_thread() -> None:
    pixels, labels = indexed_split(200)
    before = set(threading.enumerate())
    loader = BatchLoader(pixels, labels, batch_size=2, shuffle=True, prefetch=2)
    iterator = iter(loader)
    next(iterator)
    producers = set(threading.enumerate()) - before
    assert producers  # the prefetch thread is running
    iterator.close()  # what `break` in a for loop does
    assert not any(t.is_alive() for t in producers)


def test_to_model_input_replicates_gray_and_normalises() -> None:
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, size=(2, S, S, 1), dtype=np.uint8))
    original = pixels.clone()
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    out = to_model_input(pixels, torch.device("cpu"), _Unit(), mean, std)
    assert out.shape == (2, 3, S, S)
    assert out.dtype == torch.float32
    gray = pixels.permute(0, 3, 1, 2).float() / 255.0  # (B, 1, S, S)
    for c in range(3):
        expected = (gray[:, 0] - mean[c]) / std[c]
        torch.testing.assert_close(out[:, c], expected)
    assert torch.equal(pixels, original)  # the caller's batch is not modified


def test_to_model_input_keeps_rgb_channels_in_place() -> None:
    rng = np.random.default_rng(1)
    pixels = torch.from_numpy(rng.integers(0, 256, size=(3, S, S + 2, 3), dtype=np.uint8))
    mean = torch.tensor([0.1, 0.5, 0.9])
    std = torch.tensor([0.5, 0.25, 2.0])
    out = to_model_input(pixels, torch.device("cpu"), _Unit(), mean, std)
    assert out.shape == (3, 3, S, S + 2)
    for c in range(3):
        expected = (pixels[..., c].float() / 255.0 - mean[c]) / std[c]
        torch.testing.assert_close(out[:, c], expected)


def test_to_model_input_hands_the_transform_uint8_and_replicates_gray_after() -> None:
    seen: list[torch.Tensor] = []

    class Record(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return unit_float(x) * 0.5

    pixels = torch.full((2, S, S, 1), 255, dtype=torch.uint8)
    zero, one = torch.zeros(3), torch.ones(3)
    out = to_model_input(pixels, torch.device("cpu"), Record(), zero, one)
    assert seen[0].dtype == torch.uint8 and torch.equal(seen[0], pixels)
    torch.testing.assert_close(out, torch.full((2, 3, S, S), 0.5))  # transform output is used


def test_to_model_input_channels_last_same_values() -> None:
    pixels = torch.from_numpy(np.arange(2 * S * S * 3, dtype=np.uint8).reshape(2, S, S, 3))
    mean, std = torch.tensor([0.2, 0.3, 0.4]), torch.tensor([0.5, 0.6, 0.7])
    args = (pixels, torch.device("cpu"), _Unit(), mean, std)
    plain = to_model_input(*args)
    packed = to_model_input(*args, channels_last=True)
    assert packed.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(plain, packed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device")
def test_pin_memory_yields_page_locked_batches() -> None:
    pixels = np.zeros((8, 4, 4, 3), dtype=np.uint8)
    loader = BatchLoader(pixels, np.arange(8), batch_size=4, pin_memory=True)
    for x, y in loader:
        assert x.is_pinned() and y.is_pinned()
    unpinned = next(iter(BatchLoader(pixels, np.arange(8), batch_size=4)))[0]
    assert not unpinned.is_pinned()
