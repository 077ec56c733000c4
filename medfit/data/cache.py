"""Decode every image once into a compact on-disk array that training memory-maps.

Our user's epochs took 500-4000 s because every epoch re-decoded full-size JPEGs on the CPU. Here
one parallel pass decodes, converts and resizes each image to a square of side `cache_size`
(the training size plus a margin for random crops) and writes uint8 pixels into a `.npy` file.
Training then reads batches straight from the memory map, so RAM stays bounded by the OS page
cache rather than by N x H x W x C.

Layout of a cache entry (a folder named by a hash of its inputs):
    pixels.npy   uint8 (N, S, S, C), C = 1 when every image is grayscale else 3
    index.json   paths, labels, which ones failed to decode and why; written LAST, so a folder
                 without it is an interrupted build and is rebuilt, never used.
The key covers every source file's (path, size, mtime) and every preprocessing parameter, so a
stale cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from medfit.data.decode import DecodeError, decode_image
from medfit.data.sources import Sample

CACHE_VERSION = 1
# Random-resized crops come from a slightly larger image: real pixels, not upsampling.
CACHE_MARGIN = 1.15
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def cache_size_for(img_size: int) -> int:
    return int(np.ceil(img_size * CACHE_MARGIN))


def default_cache_dir() -> Path:
    env = os.environ.get("MEDFIT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medfit"


def resize_square(pixels: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Resize (H, W, C) uint8 to (size, size, C), squashing the aspect ratio.

    Squashing keeps the whole field of view (a finding at the edge of a scan is not cropped away);
    it is what Keras' flow_from_directory does, so users' data looks as they expect.
    """
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    resized = np.asarray(image.resize((size, size), RESAMPLE[interpolation], reducing_gap=3.0))
    return resized.reshape(size, size, channels)


@dataclass(frozen=True)
class CachedSplit:
    pixels: np.ndarray  # uint8 (N, S, S, C), memory-mapped
    labels: np.ndarray  # int64 (N,)
    paths: list[str]  # the N decoded images, same order
    skipped: list[tuple[str, str]]  # (path, reason) for files that failed to decode

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[3])


def cache_key(samples: Sequence[Sample], size: int, interpolation: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}|{size}|{interpolation}".encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"|{s.path}|{s.label}|{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def _decode_one(args: tuple[str, int, str]) -> tuple[np.ndarray | None, str]:
    path, size, interpolation = args
    try:
        decoded = decode_image(path)
    except DecodeError as exc:
        return None, str(exc)
    return resize_square(decoded.pixels, size, interpolation), decoded.note


def _decoded_stream(
    samples: Sequence[Sample], size: int, interpolation: str, workers: int
) -> Iterator[tuple[np.ndarray | None, str]]:
    jobs = [(s.path, size, interpolation) for s in samples]
    if workers <= 1:
        yield from map(_decode_one, jobs)
        return
    # Results come back in order and are written one by one: memory stays bounded by the pool's
    # in-flight chunks, not by the dataset.
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_decode_one, jobs, chunksize=16)


def build_or_load(
    samples: Sequence[Sample],
    size: int,
    cache_dir: Path,
    interpolation: str = "bicubic",
    workers: int | None = None,
    desc: str = "cache",
) -> CachedSplit:
    """Return the cached pixels for `samples`, building them first if needed."""
    entry = Path(cache_dir) / cache_key(samples, size, interpolation)
    if not (entry / "index.json").exists():
        _build(samples, size, interpolation, entry, workers or os.cpu_count() or 1, desc)
    return _load(entry)


def _build(
    samples: Sequence[Sample],
    size: int,
    interpolation: str,
    entry: Path,
    workers: int,
    desc: str,
) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        # Worst case 3 channels; trimmed to 1 at the end when every image is grayscale.
        raw = np.lib.format.open_memmap(
            tmp / "raw.npy", mode="w+", dtype=np.uint8, shape=(len(samples), size, size, 3)
        )
        ok = np.zeros(len(samples), dtype=bool)
        any_colour = False
        skipped: list[tuple[str, str]] = []
        stream = _decoded_stream(samples, size, interpolation, workers)
        for i, (pixels, note) in enumerate(
            tqdm(stream, total=len(samples), desc=desc, leave=False)
        ):
            if pixels is None:
                skipped.append((samples[i].path, note))
                continue
            ok[i] = True
            raw[i] = pixels  # (S, S, 1) broadcasts to 3 channels
            any_colour = any_colour or (pixels.shape[2] == 3 and not _is_gray(pixels))
        _compact(raw, ok, 3 if any_colour else 1, tmp / "pixels.npy")
        del raw
        (tmp / "raw.npy").unlink()
        kept = [s for s, good in zip(samples, ok, strict=True) if good]
        index = {
            "version": CACHE_VERSION,
            "paths": [s.path for s in kept],
            "labels": [s.label for s in kept],
            "skipped": skipped,
        }
        (tmp / "index.json").write_text(json.dumps(index))
        if entry.exists():  # an interrupted earlier build: it has no index.json, so it is garbage
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _is_gray(pixels: np.ndarray) -> bool:
    return bool(
        (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    )


def _compact(raw: np.ndarray, ok: np.ndarray, channels: int, out: Path) -> None:
    """Copy the successfully decoded rows into the final array, in chunks (bounded memory)."""
    rows = np.flatnonzero(ok)
    final = np.lib.format.open_memmap(
        out, mode="w+", dtype=np.uint8, shape=(len(rows), raw.shape[1], raw.shape[2], channels)
    )
    for start in range(0, len(rows), 1024):
        chunk = rows[start : start + 1024]
        final[start : start + len(chunk)] = raw[chunk, :, :, :channels]
    final.flush()
    del final


def _load(entry: Path) -> CachedSplit:
    index = json.loads((entry / "index.json").read_text())
    pixels = np.load(entry / "pixels.npy", mmap_mode="r")
    labels = np.asarray(index["labels"], dtype=np.int64)
    skipped = [(p, r) for p, r in index["skipped"]]
    return CachedSplit(pixels, labels, list(index["paths"]), skipped)
