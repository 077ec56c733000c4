"""build_or_load / cache_key / resize_square / cache_size_for / prune: the decode-once cache returns
the right pixels in the right order, is reused when nothing changed, rebuilt when anything did
(decoding only the new or changed files), and never leaves a half-written entry that looks
complete."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import medfit.data.cache as cache_mod
from medfit.data.cache import (
    CACHE_MARGIN,
    build_or_load,
    cache_key,
    cache_size_for,
    resize_square,
)
from medfit.data.sources import Sample

SIZE = 12


def write_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def solid_rgb(path: Path, rgb: tuple[int, int, int], shape: tuple[int, int] = (16, 10)) -> Path:
    array = np.empty((*shape, 3), dtype=np.uint8)
    array[:] = rgb
    return write_image(path, array)


def solid_gray(path: Path, value: int, shape: tuple[int, int] = (9, 14)) -> Path:
    return write_image(path, np.full(shape, value, dtype=np.uint8))


def sample(path: Path, label: int = 0) -> Sample:
    return Sample(str(path), label, "train")


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.iterdir()) if cache_dir.exists() else []


def test_rgb_and_gray_pixels_round_trip_in_a_mixed_set(tmp_path: Path, cache_dir: Path) -> None:
    samples = [
        sample(solid_rgb(tmp_path / "red.png", (200, 30, 10)), 0),
        sample(solid_gray(tmp_path / "gray.png", 77), 1),
    ]
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert part.pixels.shape == (2, SIZE, SIZE, 3)
    assert part.pixels.dtype == np.uint8
    assert part.channels == 3
    assert (part.pixels[0] == np.array([200, 30, 10], dtype=np.uint8)).all()
    assert (part.pixels[1] == 77).all()  # gray replicated into all three channels


def test_all_grayscale_set_is_stored_with_one_channel(tmp_path: Path, cache_dir: Path) -> None:
    samples = [
        sample(solid_gray(tmp_path / "a.png", 5), 0),
        sample(solid_gray(tmp_path / "b.png", 250, shape=(20, 20)), 1),
        # An RGB file whose three channels are equal is grayscale too.
        sample(solid_rgb(tmp_path / "c.png", (90, 90, 90)), 1),
    ]
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert part.pixels.shape == (3, SIZE, SIZE, 1)
    assert part.channels == 1
    assert (part.pixels[0] == 5).all()
    assert (part.pixels[1] == 250).all()
    assert (part.pixels[2] == 90).all()


def test_order_labels_and_paths_preserved_and_pixels_memory_mapped(
    tmp_path: Path, cache_dir: Path
) -> None:
    labels = [2, 0, 1, 0, 2, 1, 1]
    values = [10, 40, 70, 100, 130, 160, 190]
    samples = [
        sample(solid_gray(tmp_path / f"img{i}.png", v), label)
        for i, (v, label) in enumerate(zip(values, labels, strict=True))
    ]
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert part.paths == [s.path for s in samples]
    assert part.labels.dtype == np.int64
    assert part.labels.tolist() == labels
    assert [int(part.pixels[i].mean()) for i in range(len(samples))] == values
    assert part.skipped == []
    assert isinstance(part.pixels, np.memmap) or hasattr(part.pixels, "filename")
    assert Path(part.pixels.filename).parent.parent == cache_dir


def test_process_pool_gives_the_same_result_as_one_worker(tmp_path: Path) -> None:
    samples = [
        sample(solid_rgb(tmp_path / f"img{i}.png", (i * 7, 255 - i * 7, i)), i % 3)
        for i in range(20)
    ]
    serial = build_or_load(samples, SIZE, tmp_path / "c1", workers=1)
    pooled = build_or_load(samples, SIZE, tmp_path / "c2", workers=2)
    assert np.array_equal(np.asarray(serial.pixels), np.asarray(pooled.pixels))
    assert serial.labels.tolist() == pooled.labels.tolist()
    assert serial.paths == pooled.paths


def test_second_call_reuses_the_entry(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = [sample(solid_gray(tmp_path / f"{i}.png", 20 * i), i % 2) for i in range(4)]
    first = build_or_load(samples, SIZE, cache_dir, workers=1)
    pixels_file = Path(first.pixels.filename)
    mtime = pixels_file.stat().st_mtime_ns

    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("cache rebuilt although nothing changed")

    monkeypatch.setattr(cache_mod, "_build", no_rebuild)
    second = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert np.array_equal(np.asarray(first.pixels), np.asarray(second.pixels))
    assert second.labels.tolist() == first.labels.tolist()
    assert second.paths == first.paths
    assert pixels_file.stat().st_mtime_ns == mtime
    assert len(entries(cache_dir)) == 1


def test_changed_source_file_invalidates_the_entry(tmp_path: Path, cache_dir: Path) -> None:
    paths = [solid_gray(tmp_path / f"{i}.png", 50) for i in range(3)]
    samples = [sample(p, i % 2) for i, p in enumerate(paths)]
    key_before = cache_key(samples, SIZE, "bicubic")
    before = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert (before.pixels[1] == 50).all()

    # Same dimensions, so possibly the same byte size: the mtime must carry the change.
    solid_gray(paths[1], 222)
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    key_after = cache_key(samples, SIZE, "bicubic")
    assert key_after != key_before
    after = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert (after.pixels[1] == 222).all()
    assert (after.pixels[0] == 50).all() and (after.pixels[2] == 50).all()
    assert {e.name for e in entries(cache_dir)} == {key_before, key_after}


def test_touching_a_file_alone_invalidates_the_key(tmp_path: Path) -> None:
    path = solid_gray(tmp_path / "a.png", 1)
    samples = [sample(path)]
    before = cache_key(samples, SIZE, "bicubic")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache_key(samples, SIZE, "bicubic") != before


def test_cache_key_covers_every_input(tmp_path: Path) -> None:
    a = solid_gray(tmp_path / "a.png", 1)
    b = solid_gray(tmp_path / "b.png", 2)
    base = [sample(a, 0), sample(b, 1)]
    key = cache_key(base, SIZE, "bicubic")
    assert cache_key(list(base), SIZE, "bicubic") == key  # deterministic
    assert len(key) == 24
    variants = {
        "size": cache_key(base, SIZE + 1, "bicubic"),
        "interpolation": cache_key(base, SIZE, "bilinear"),
        "label": cache_key([sample(a, 1), sample(b, 1)], SIZE, "bicubic"),
        "order": cache_key(base[::-1], SIZE, "bicubic"),
        "subset": cache_key(base[:1], SIZE, "bicubic"),
        "path": cache_key([sample(a, 0), sample(tmp_path / "c.png", 1)], SIZE, "bicubic"),
    }
    for what, other in variants.items():
        assert other != key, what
    assert len(set(variants.values())) == len(variants)


def test_changing_size_or_interpolation_builds_a_new_entry(tmp_path: Path, cache_dir: Path) -> None:
    samples = [sample(solid_gray(tmp_path / f"{i}.png", 30 + i), i % 2) for i in range(2)]
    a = build_or_load(samples, SIZE, cache_dir, workers=1)
    b = build_or_load(samples, SIZE + 4, cache_dir, workers=1)
    c = build_or_load(samples, SIZE, cache_dir, interpolation="nearest", workers=1)
    assert a.pixels.shape[1:3] == (SIZE, SIZE)
    assert b.pixels.shape[1:3] == (SIZE + 4, SIZE + 4)
    assert c.pixels.shape[1:3] == (SIZE, SIZE)
    assert len(entries(cache_dir)) == 3


def test_corrupt_file_is_skipped_with_its_reason(tmp_path: Path, cache_dir: Path) -> None:
    good0 = solid_gray(tmp_path / "good0.png", 11)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good1 = solid_gray(tmp_path / "good1.png", 99)
    samples = [sample(good0, 0), sample(bad, 1), sample(good1, 2)]
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert part.paths == [str(good0), str(good1)]
    assert part.labels.tolist() == [0, 2]
    assert part.pixels.shape[0] == 2
    assert (part.pixels[0] == 11).all() and (part.pixels[1] == 99).all()
    assert len(part.skipped) == 1
    path, reason = part.skipped[0]
    assert path == str(bad)
    assert str(bad) in reason and "not a readable" in reason
    # The skip list survives a reload from disk.
    again = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert again.skipped == part.skipped


def test_all_files_corrupt_gives_an_empty_split(tmp_path: Path, cache_dir: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    part = build_or_load([sample(bad)], SIZE, cache_dir, workers=1)
    assert part.pixels.shape[0] == 0
    assert part.labels.tolist() == []
    assert [p for p, _ in part.skipped] == [str(bad)]


def test_interrupted_build_leaves_nothing_and_is_rebuilt(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [10, 60, 110, 160, 210]
    samples = [sample(solid_gray(tmp_path / f"{i}.png", v), i % 2) for i, v in enumerate(values)]
    real_decode = cache_mod._decode_one
    calls = {"n": 0}

    def crash_on_third(args: tuple[str, int, str]) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_decode(args)

    monkeypatch.setattr(cache_mod, "_decode_one", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_or_load(samples, SIZE, cache_dir, workers=1)
    assert calls["n"] == 3
    assert list(cache_dir.rglob("index.json")) == []
    assert entries(cache_dir) == []  # no entry and no leftover temp folder

    monkeypatch.setattr(cache_mod, "_decode_one", real_decode)
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert part.labels.tolist() == [0, 1, 0, 1, 0]
    assert [int(part.pixels[i].mean()) for i in range(5)] == values
    assert [e.name for e in entries(cache_dir)] == [cache_key(samples, SIZE, "bicubic")]


def test_entry_without_index_json_is_rebuilt_not_used(tmp_path: Path, cache_dir: Path) -> None:
    # What a process killed mid-rename (or an older medfit) could leave: a folder with no index.
    samples = [sample(solid_gray(tmp_path / f"{i}.png", 40 * i + 5), i) for i in range(2)]
    entry = cache_dir / cache_key(samples, SIZE, "bicubic")
    entry.mkdir(parents=True)
    np.save(entry / "pixels.npy", np.full((2, SIZE, SIZE, 1), 255, dtype=np.uint8))
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert (part.pixels[0] == 5).all() and (part.pixels[1] == 45).all()
    index = json.loads((entry / "index.json").read_text())
    assert index["paths"] == [s.path for s in samples]
    assert entries(cache_dir) == [entry]


@pytest.mark.parametrize(
    ("shape", "size"),
    [((10, 14, 1), 6), ((9, 5, 3), 7), ((4, 6, 1), 16), ((12, 12, 3), 12)],
)
def test_resize_square_shape_and_dtype(shape: tuple[int, int, int], size: int) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    out = resize_square(pixels, size)
    assert out.shape == (size, size, shape[2])
    assert out.dtype == np.uint8


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_resize_square_keeps_a_constant_image_constant(interpolation: str) -> None:
    pixels = np.empty((13, 7, 3), dtype=np.uint8)
    pixels[:] = (3, 128, 251)
    out = resize_square(pixels, 9, interpolation)
    assert (out == np.array([3, 128, 251], dtype=np.uint8)).all()


def test_resize_square_squashes_instead_of_cropping() -> None:
    # A wide image whose left quarter is bright: a squash keeps it at the left edge,
    # a centre crop would lose it.
    pixels = np.zeros((8, 32, 1), dtype=np.uint8)
    pixels[:, :8] = 200
    out = resize_square(pixels, 8, "nearest")
    assert (out[:, :2, 0] == 200).all()
    assert (out[:, 2:, 0] == 0).all()


def test_cache_size_for_adds_the_crop_margin() -> None:
    assert cache_size_for(224) == 258
    assert cache_size_for(100) == 115
    for img_size in (16, 64, 128, 224, 256, 384, 512):
        size = cache_size_for(img_size)
        assert isinstance(size, int)
        assert img_size * CACHE_MARGIN <= size < img_size * CACHE_MARGIN + 1


# --- incremental rebuilds: only new or changed files are decoded -------------------------------


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every file decoded from now on (serial builds, workers=1)."""
    real_decode = cache_mod._decode_one
    seen: list[str] = []

    def counting(args: tuple[str, int, str]) -> Any:
        seen.append(args[0])
        return real_decode(args)

    monkeypatch.setattr(cache_mod, "_decode_one", counting)
    return seen


def rewrite_gray(path: Path, value: int) -> None:
    """Change a file's pixels and make sure its mtime moves (same size is likely)."""
    before = path.stat().st_mtime_ns
    solid_gray(path, value)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, max(stat.st_mtime_ns, before) + 2_000_000_000))


def gray_set(folder: Path, n: int, start: int = 10) -> list[Sample]:
    return [sample(solid_gray(folder / f"{i}.png", start + 20 * i), i % 3) for i in range(n)]


def test_one_changed_file_of_six_is_the_only_one_decoded(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = gray_set(tmp_path / "data", 6)
    first = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert (first.reused, first.decoded) == (0, 6)
    rewrite_gray(Path(samples[3].path), 250)

    decodes = count_decodes(monkeypatch)
    second = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert decodes == [samples[3].path]
    assert (second.reused, second.decoded) == (5, 1)
    assert [int(second.pixels[i].mean()) for i in range(6)] == [10, 30, 50, 250, 90, 110]
    assert second.paths == [s.path for s in samples]
    assert second.labels.tolist() == [s.label for s in samples]
    assert second.channels == 1
    # The rebuilt entry equals a build from scratch.
    scratch = build_or_load(samples, SIZE, tmp_path / "scratch", workers=1)
    assert np.array_equal(np.asarray(second.pixels), np.asarray(scratch.pixels))
    # And a third call is a plain hit: nothing built, nothing decoded.
    decodes.clear()
    third = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert decodes == [] and (third.reused, third.decoded) == (0, 0)


def test_an_added_file_is_the_only_one_decoded(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = gray_set(tmp_path / "data", 5)
    build_or_load(samples, SIZE, cache_dir, workers=1)
    new = sample(solid_gray(tmp_path / "data" / "new.png", 222), 1)
    grown = [*samples[:2], new, *samples[2:]]  # inserted in the middle: order is kept

    decodes = count_decodes(monkeypatch)
    part = build_or_load(grown, SIZE, cache_dir, workers=1)
    assert decodes == [new.path]
    assert (part.reused, part.decoded) == (5, 1)
    assert part.paths == [s.path for s in grown]
    assert [int(part.pixels[i].mean()) for i in range(6)] == [10, 30, 222, 50, 70, 90]


def test_a_removed_file_or_a_new_label_decodes_nothing(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = gray_set(tmp_path / "data", 4)
    build_or_load(samples, SIZE, cache_dir, workers=1)
    decodes = count_decodes(monkeypatch)

    shrunk = build_or_load([samples[0], samples[2], samples[3]], SIZE, cache_dir, workers=1)
    assert (shrunk.reused, shrunk.decoded) == (3, 0)
    assert [int(shrunk.pixels[i].mean()) for i in range(3)] == [10, 50, 70]

    relabelled = [Sample(s.path, 2 - s.label, s.split) for s in samples]
    part = build_or_load(relabelled, SIZE, cache_dir, workers=1)
    assert (part.reused, part.decoded) == (4, 0)
    assert part.labels.tolist() == [2 - s.label for s in samples]
    assert decodes == []


def test_different_size_or_interpolation_reuses_nothing(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = gray_set(tmp_path / "data", 4)
    build_or_load(samples, SIZE, cache_dir, workers=1)
    decodes = count_decodes(monkeypatch)
    bigger = build_or_load(samples, SIZE + 2, cache_dir, workers=1)
    assert len(decodes) == 4 and (bigger.reused, bigger.decoded) == (0, 4)
    assert bigger.pixels.shape == (4, SIZE + 2, SIZE + 2, 1)
    other = build_or_load(samples, SIZE, cache_dir, interpolation="nearest", workers=1)
    assert len(decodes) == 8 and (other.reused, other.decoded) == (0, 4)


def test_a_new_colour_image_turns_a_gray_entry_into_three_channels(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = gray_set(tmp_path / "data", 4)
    gray = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert gray.channels == 1
    colour = sample(solid_rgb(tmp_path / "data" / "red.png", (200, 30, 10)), 0)

    decodes = count_decodes(monkeypatch)
    part = build_or_load([*samples[:3], colour, samples[3]], SIZE, cache_dir, workers=1)
    assert decodes == [colour.path]
    assert (part.reused, part.decoded) == (4, 1)
    assert part.pixels.shape == (5, SIZE, SIZE, 3)
    for i, value in zip((0, 1, 2, 4), (10, 30, 50, 70), strict=True):
        assert (part.pixels[i] == value).all()  # gray replicated into all three channels
    assert (part.pixels[3] == np.array([200, 30, 10], dtype=np.uint8)).all()

    # Back again: the colour file turns gray, so the entry has one channel again; the gray rows
    # come from the 3-channel entry.
    rewrite_gray(Path(colour.path), 123)
    decodes.clear()
    again = build_or_load([*samples[:3], colour, samples[3]], SIZE, cache_dir, workers=1)
    assert decodes == [colour.path]
    assert again.pixels.shape == (5, SIZE, SIZE, 1)
    assert [int(again.pixels[i].mean()) for i in range(5)] == [10, 30, 50, 123, 70]


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_colour_after_gray_rows_and_failures_in_between(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    # Exercises the 1 -> 3 channel switch after rows were written (copied in chunks) and the
    # cut of the rows that failed to decode.
    monkeypatch.setattr(cache_mod, "COPY_CHUNK_BYTES", chunk_rows * SIZE * SIZE * 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    samples = [
        sample(solid_gray(tmp_path / "g0.png", 5), 0),
        sample(bad, 1),
        sample(solid_gray(tmp_path / "g1.png", 15), 1),
        sample(solid_gray(tmp_path / "g2.png", 25), 0),
        sample(solid_rgb(tmp_path / "c.png", (1, 2, 3)), 1),
        sample(bad, 0),
    ]
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert part.pixels.shape == (4, SIZE, SIZE, 3)
    assert [(part.pixels[i] == v).all() for i, v in enumerate((5, 15, 25))] == [True] * 3
    assert (part.pixels[3] == np.array([1, 2, 3], dtype=np.uint8)).all()
    assert [p for p, _ in part.skipped] == [str(bad), str(bad)]
    assert part.labels.tolist() == [0, 1, 0, 1]
    assert sorted(f.name for f in Path(part.pixels.filename).parent.iterdir()) == [
        "index.json",
        "pixels.npy",
    ]
    # The file on disk holds exactly the kept rows.
    pixels_file = Path(part.pixels.filename)
    assert np.load(pixels_file).shape == (4, SIZE, SIZE, 3)
    # A rebuild with a new label reuses the 4 rows and decodes only the two bad files again.
    decodes = count_decodes(monkeypatch)
    relabelled = [Sample(s.path, 1 - s.label, s.split) for s in samples]
    again = build_or_load(relabelled, SIZE, cache_dir, workers=1)
    assert decodes == [str(bad), str(bad)]
    assert np.array_equal(np.asarray(again.pixels), np.asarray(part.pixels))


def test_the_donor_is_the_entry_sharing_most_rows_not_the_newest(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Train and val live in the same cache folder: rebuilding train must not pick val.
    train = gray_set(tmp_path / "train", 6)
    val = gray_set(tmp_path / "val", 3, start=15)
    build_or_load(train, SIZE, cache_dir, workers=1)
    build_or_load(val, SIZE, cache_dir, workers=1)  # newer
    rewrite_gray(Path(train[0].path), 1)
    decodes = count_decodes(monkeypatch)
    part = build_or_load(train, SIZE, cache_dir, workers=1)
    assert decodes == [train[0].path]
    assert part.reused == 5


def test_entries_without_stamps_are_not_donors(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = gray_set(tmp_path / "data", 3)
    old = build_or_load(samples, SIZE, cache_dir, workers=1)
    index_file = Path(old.pixels.filename).parent / "index.json"
    index = json.loads(index_file.read_text())
    for key in ("params", "stamps"):  # what medfit wrote before incremental rebuilds
        del index[key]
    index_file.write_text(json.dumps(index))
    rewrite_gray(Path(samples[0].path), 3)
    decodes = count_decodes(monkeypatch)
    part = build_or_load(samples, SIZE, cache_dir, workers=1)
    assert len(decodes) == 3 and part.reused == 0


def test_reuse_with_a_process_pool_matches_a_serial_build(tmp_path: Path) -> None:
    samples = [
        sample(solid_rgb(tmp_path / f"img{i}.png", (i * 6, 255 - i * 6, i)), i % 3)
        for i in range(40)
    ]
    build_or_load(samples, SIZE, tmp_path / "c", workers=2)
    extra = [sample(solid_rgb(tmp_path / f"new{i}.png", (i, i, 99)), 1) for i in range(20)]
    grown = [*samples[::2], *extra, *samples[1::2]]
    pooled = build_or_load(grown, SIZE, tmp_path / "c", workers=2)
    serial = build_or_load(grown, SIZE, tmp_path / "scratch", workers=1)
    assert (pooled.reused, pooled.decoded) == (40, 20)
    assert np.array_equal(np.asarray(pooled.pixels), np.asarray(serial.pixels))
    assert pooled.paths == serial.paths


def test_prune_deletes_only_entries_unused_for_n_days(tmp_path: Path, cache_dir: Path) -> None:
    old = build_or_load(gray_set(tmp_path / "a", 2), SIZE, cache_dir, workers=1)
    recent = gray_set(tmp_path / "b", 2)
    new = build_or_load(recent, SIZE, cache_dir, workers=1)
    old_entry = Path(old.pixels.filename).parent
    new_entry = Path(new.pixels.filename).parent
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old_entry / "index.json", (ten_days_ago, ten_days_ago))
    stale_tmp = cache_dir / f".{'0' * 24}.abc"
    stale_tmp.mkdir()
    os.utime(stale_tmp, (ten_days_ago, ten_days_ago))
    foreign = cache_dir / "demo"
    foreign.mkdir()
    os.utime(foreign, (ten_days_ago, ten_days_ago))

    assert sorted(cache_mod.prune(cache_dir, older_than_days=7)) == sorted([old_entry, stale_tmp])
    assert sorted(entries(cache_dir)) == sorted([foreign, new_entry])
    # Loading an entry counts as a use.
    os.utime(new_entry / "index.json", (ten_days_ago, ten_days_ago))
    build_or_load(recent, SIZE, cache_dir, workers=1)
    assert cache_mod.prune(cache_dir, older_than_days=7) == []


def test_a_build_logged_to_a_file_writes_lines_not_a_bar(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """Redirected output (pytest's capture is no terminal) gets no tqdm carriage returns, and a
    line through `log` every LINE_EVERY_S seconds (0 here: after every image but the last)."""
    import medfit.progress as progress

    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    samples = [sample(solid_gray(tmp_path / f"g{i}.png", 10 * i)) for i in range(3)]
    lines: list[str] = []
    build_or_load(samples, SIZE, cache_dir, workers=1, desc="decode train", log=lines.append)
    assert "\r" not in capsys.readouterr().err
    assert [line.split(",")[0] for line in lines] == ["  decode train: 1/3", "  decode train: 2/3"]
