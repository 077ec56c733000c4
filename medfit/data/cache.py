"""Decode every image once into a compact on-disk array that training memory-maps.

Our user's epochs took 500-4000 s because every epoch re-decoded full-size JPEGs on the CPU. Here
one parallel pass decodes, converts and resizes each image to a square of side `cache_size`
(the training size plus a margin for random crops) and writes uint8 pixels into a `.npy` file.
Training then reads batches straight from the memory map, so RAM stays bounded by the OS page
cache rather than by N x H x W x C.

Layout of a cache entry (a folder named by a hash of its inputs):
    pixels.npy   uint8 (N, S, S, C), C = 1 when every image is grayscale else 3
    index.json   paths, labels, per-row stamps ("size|mtime_ns" of the source file), the
                 preprocessing params, which files failed to decode and why; written LAST, so a
                 folder without it is an interrupted build and is rebuilt, never used.
The key covers every source file's (path, size, mtime) and every preprocessing parameter, so a
stale cache is never used.

Incremental rebuilds: when the key misses (a file was added, changed, relabelled or removed), the
complete entry in the same cache folder with the same params that shares the most (path, stamp)
rows with the new split donates those rows (copied from its memory map in bounded chunks); only new
or changed files are decoded. Train and val usually share a cache folder, hence "most rows shared"
rather than "newest". Labels are not part of a row: a relabelled file is reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medfit.data.decode import DecodeError, decode_image
from medfit.data.parallel import bounded_map
from medfit.data.sources import Sample
from medfit.errors import DataError
from medfit.progress import Progress

CACHE_VERSION = 2  # 2: JPEGs decoded at draft scale (decode_image's min_side)
# Random-resized crops come from a slightly larger image: real pixels, not upsampling.
CACHE_MARGIN = 1.15
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
# Rows are copied (donor rows, channel promotion) in chunks of about this many bytes.
COPY_CHUNK_BYTES = 32 << 20
# Only this many of the most recently used complete entries are considered as donors.
MAX_DONOR_CANDIDATES = 16
_DECODE_CHUNK = 16  # files per task sent to a decode worker
_MISSING = "missing"
_ENTRY_NAME = re.compile(r"[0-9a-f]{24}")
_TEMP_NAME = re.compile(r"\.[0-9a-f]{24}\..+")


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
    labels: np.ndarray  # int64 (N,) class indices, or (N, L) 0/1 for multi-label
    paths: list[str]  # the N decoded images, same order
    skipped: list[tuple[str, str]]  # (path, reason) for files that failed to decode
    # What this call did: rows copied from an older entry / files decoded (both 0 on a cache hit).
    reused: int = 0
    decoded: int = 0

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[3])


def _stamp(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return _MISSING
    return f"{st.st_size}|{st.st_mtime_ns}"


def _params(size: int, interpolation: str) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "size": size, "interpolation": interpolation}


def _key(samples: Sequence[Sample], stamps: Sequence[str], size: int, interpolation: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}|{size}|{interpolation}".encode())
    for s, stamp in zip(samples, stamps, strict=True):
        label = s.label if s.targets is None else s.targets
        digest.update(f"|{s.path}|{label}|{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:24]


def cache_key(samples: Sequence[Sample], size: int, interpolation: str) -> str:
    return _key(samples, [_stamp(s.path) for s in samples], size, interpolation)


def _decode_one(args: tuple[str, int, str]) -> tuple[np.ndarray | None, str]:
    path, size, interpolation = args
    try:
        decoded = decode_image(path, min_side=size)
    except DecodeError as exc:
        return None, str(exc)
    return resize_square(decoded.pixels, size, interpolation), decoded.note


def _decode_many(jobs: list[tuple[str, int, str]]) -> list[tuple[np.ndarray | None, str]]:
    return [_decode_one(job) for job in jobs]


def _decoded_stream(
    paths: Sequence[str], size: int, interpolation: str, workers: int
) -> Generator[tuple[np.ndarray | None, str], None, None]:
    jobs = ((path, size, interpolation) for path in paths)
    if workers <= 1:
        yield from map(_decode_one, jobs)
        return
    yield from bounded_map(_decode_many, jobs, workers, chunk=_DECODE_CHUNK)


def build_or_load(
    samples: Sequence[Sample],
    size: int,
    cache_dir: Path,
    interpolation: str = "bicubic",
    workers: int | None = None,
    desc: str = "cache",
    log: Callable[[str], None] | None = None,
) -> CachedSplit:
    """Return the cached pixels for `samples`, building them first if needed.

    A build reuses the unchanged rows of the best matching older entry (see the module
    docstring); `reused` and `decoded` on the result say how many rows came from where.
    """
    stamps = [_stamp(s.path) for s in samples]
    entry = Path(cache_dir) / _key(samples, stamps, size, interpolation)
    if (entry / "index.json").exists():
        return _load(entry)
    try:
        reused, decoded = _build(
            samples, stamps, size, interpolation, entry, workers or os.cpu_count() or 1, desc, log
        )
    except OSError as exc:  # the cache folder: full disk, read-only, no permission, a file
        need = len(samples) * size * size * 3 / 1e6
        raise DataError(
            f"cannot write the image cache in {cache_dir}: {exc.strerror or exc}; "
            f"{_cache_remedy(Path(cache_dir), exc, need)}"
        ) from None
    return dataclasses.replace(_load(entry), reused=reused, decoded=decoded)


def _cache_remedy(cache_dir: Path, exc: OSError, need_mb: float) -> str:
    """What to do about a failed cache write, by its cause."""
    blocker = next((p for p in (cache_dir, *cache_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is a file, not a folder: move it away or pass --cache-dir elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable or pass --cache-dir on a writable disk"
    return f"needs up to {need_mb:.0f} MB: free space there or pass --cache-dir on another disk"


@dataclass
class _Donor:
    pixels: np.ndarray  # the older entry's (M, S, S, C) memory map
    rows: dict[tuple[str, str], int]  # (path, stamp) -> row in `pixels`


def _find_donor(
    cache_dir: Path, entry: Path, wanted: set[tuple[str, str]], params: dict[str, Any]
) -> _Donor | None:
    """The complete entry with `params` that shares the most (path, stamp) rows with `wanted`."""
    if not wanted or not cache_dir.is_dir():
        return None
    candidates: list[tuple[int, Path]] = []
    for child in cache_dir.iterdir():
        if child == entry or child.name.startswith("."):
            continue
        try:
            candidates.append(((child / "index.json").stat().st_mtime_ns, child))
        except OSError:  # not an entry, or an incomplete one
            continue
    candidates.sort(reverse=True)  # most recently built or used first: wins ties
    best: tuple[int, Path, dict[tuple[str, str], int]] | None = None
    for _, child in candidates[:MAX_DONOR_CANDIDATES]:
        try:
            index = json.loads((child / "index.json").read_text())
            if index.get("params") != params or len(index["stamps"]) != len(index["paths"]):
                continue
            rows = {
                key: row
                for row, key in enumerate(zip(index["paths"], index["stamps"], strict=True))
                if key in wanted
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable or from an older medfit: not a donor
        if rows and (best is None or len(rows) > best[0]):
            best = (len(rows), child, rows)
    if best is None:
        return None
    _, child, rows = best
    try:
        pixels = np.load(child / "pixels.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    size = params["size"]
    if (
        pixels.dtype != np.uint8
        or pixels.ndim != 4
        or pixels.shape[1:3] != (size, size)
        or pixels.shape[3] not in (1, 3)
        or max(rows.values()) >= pixels.shape[0]
    ):
        return None
    return _Donor(pixels, rows)


class _RowWriter:
    """Appends rows to a .npy preallocated for `capacity` rows.

    It stores 1 channel until the first colour row arrives, then copies the rows written so far
    into a 3-channel file once (gray replicated) and goes on there; so an all-gray split never
    takes 3 channels of disk and a colour split (colour from its first row) is never copied.
    Rows of files that failed to decode are simply not appended; `finish` cuts the unused tail.
    """

    def __init__(self, folder: Path, capacity: int, size: int) -> None:
        self.folder, self.capacity, self.size = folder, capacity, size
        self.count = 0
        self.path = folder / "pixels.gray.npy"
        self.array = self._open(self.path, 1)

    @property
    def channels(self) -> int:
        return int(self.array.shape[3])

    def _open(self, path: Path, channels: int) -> np.memmap:
        shape = (self.capacity, self.size, self.size, channels)
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        assert isinstance(array, np.memmap)
        _reserve(path)
        return array

    def append(self, rows: np.ndarray) -> None:
        """Append (m, S, S, 1 or 3) uint8 rows."""
        if self.channels == 1 and rows.shape[3] == 3:
            if _is_gray(rows):
                rows = rows[..., :1]
            else:
                self._promote()
        self.array[self.count : self.count + len(rows)] = rows  # 1 channel broadcasts to 3
        self.count += len(rows)

    def _promote(self) -> None:
        path = self.folder / "pixels.rgb.npy"
        rgb = self._open(path, 3)
        step = _rows_per_chunk(self.size, 3)
        for start in range(0, self.count, step):
            end = min(start + step, self.count)
            rgb[start:end] = self.array[start:end]
        del self.array
        self.path.unlink()
        self.path, self.array = path, rgb

    def finish(self, out: Path) -> None:
        """Flush, drop the unused rows and move the file to `out`."""
        self.array.flush()
        del self.array
        if self.count < self.capacity:
            _shrink_npy_rows(self.path, self.count)
        os.replace(self.path, out)


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of the (sparse) file now, so a full disk fails here.

    Otherwise a store into the memory map on a full disk kills the process with SIGBUS: no
    message, no traceback, just "Bus error". posix_fallocate raises ENOSPC instead.
    """
    if not hasattr(os, "posix_fallocate"):  # macOS/Windows: no such call, keep the sparse file
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # the filesystem cannot reserve
                return
            raise


def _rows_per_chunk(size: int, channels: int) -> int:
    return max(1, COPY_CHUNK_BYTES // (size * size * channels))


def _shrink_npy_rows(path: Path, rows: int) -> None:
    """Keep only the first `rows` rows of a C-order .npy file, in place.

    The header is rewritten with the new shape, padded to its old length (a smaller number never
    needs more room), and the file is truncated; no data is copied.
    """
    with open(path, "r+b") as f:
        major, _ = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif major == 2:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{path}: unsupported .npy version {major}")
        if fortran:
            raise ValueError(f"{path}: Fortran-order arrays cannot be cut by rows")
        data_start = f.tell()
        prefix = 8 + (2 if major == 1 else 4)  # magic + version, then the header length field
        new_shape = (rows, *shape[1:])
        header = repr(
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": new_shape,
            }
        )
        room = data_start - prefix - 1  # the header ends with "\n"
        if len(header) > room:
            raise ValueError(f"{path}: no room for the new header")
        f.seek(prefix)
        f.write((header.ljust(room) + "\n").encode("latin1"))
        f.truncate(data_start + int(np.prod(new_shape)) * dtype.itemsize)


def _build(
    samples: Sequence[Sample],
    stamps: Sequence[str],
    size: int,
    interpolation: str,
    entry: Path,
    workers: int,
    desc: str,
    log: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Build `entry` atomically; return (rows reused from an older entry, files decoded)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    params = _params(size, interpolation)
    wanted = {(s.path, st) for s, st in zip(samples, stamps, strict=True) if st != _MISSING}
    donor = _find_donor(entry.parent, entry, wanted, params)
    donor_rows = donor.rows if donor is not None else {}
    source = [donor_rows.get((s.path, st)) for s, st in zip(samples, stamps, strict=True)]
    to_decode = [s.path for s, row in zip(samples, source, strict=True) if row is None]
    n_reused = len(samples) - len(to_decode)

    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    decoded = _decoded_stream(to_decode, size, interpolation, workers)
    try:
        writer = _RowWriter(tmp, len(samples), size)
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        run: list[tuple[int, int]] = []  # consecutive (sample, donor row) pairs to copy
        step = _rows_per_chunk(size, 3)
        label = f"{desc} ({len(to_decode)} to decode, {n_reused} reused)" if donor else desc
        with Progress(len(samples), label, log) as progress:

            def copy_run() -> None:
                if donor is not None and run:
                    writer.append(np.asarray(donor.pixels[[row for _, row in run]]))
                    kept.extend(i for i, _ in run)
                    progress.update(len(run))
                    run.clear()

            for i, row in enumerate(source):
                if row is not None:
                    run.append((i, row))
                    if len(run) >= step:
                        copy_run()
                    continue
                copy_run()
                pixels, note = next(decoded)
                if pixels is None:
                    skipped.append((samples[i].path, note))
                else:
                    writer.append(pixels[None])
                    kept.append(i)
                progress.update(1)
            copy_run()
        writer.finish(tmp / "pixels.npy")
        index = {
            "version": CACHE_VERSION,
            "params": params,
            "paths": [samples[i].path for i in kept],
            "labels": [_label(samples[i]) for i in kept],
            "stamps": [stamps[i] for i in kept],
            "skipped": skipped,
            "built": {"reused": n_reused, "decoded": len(to_decode)},
        }
        (tmp / "index.json").write_text(json.dumps(index))
        # If another process finished the same entry meanwhile, theirs is kept and ours dropped.
        if not (entry / "index.json").exists():
            if entry.exists():  # an interrupted earlier build: it has no index.json
                shutil.rmtree(entry)
            os.replace(tmp, entry)
    finally:
        decoded.close()  # shuts the worker pool down if the build stopped early
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return n_reused, len(to_decode)


def _label(sample: Sample) -> int | list[int]:
    """What a cache row stores as its label: the class index, or the multi-label 0/1 list."""
    return sample.label if sample.targets is None else list(sample.targets)


def _is_gray(pixels: np.ndarray) -> bool:
    return bool(
        (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    )


def _load(entry: Path) -> CachedSplit:
    index = json.loads((entry / "index.json").read_text())
    pixels = np.load(entry / "pixels.npy", mmap_mode="r")
    labels = np.asarray(index["labels"], dtype=np.int64)
    skipped = [(p, r) for p, r in index["skipped"]]
    # The index's mtime records the last use (for `prune` and the choice of a donor); a read-only
    # cache folder keeps its old times.
    with contextlib.suppress(OSError):
        os.utime(entry / "index.json")
    return CachedSplit(pixels, labels, list(index["paths"]), skipped)


def prune(cache_dir: Path, older_than_days: float) -> list[Path]:
    """Delete cache entries (and leftover temp folders) not used for `older_than_days` days.

    Returns the deleted folders. An entry that is in use by a running process stays readable
    there (POSIX keeps unlinked memory-mapped files alive) but will be rebuilt next time.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    cutoff = time.time() - older_than_days * 86400
    deleted: list[Path] = []
    for child in sorted(cache_dir.iterdir()):
        index = child / "index.json"
        try:
            if _TEMP_NAME.fullmatch(child.name):  # a temp folder left by a killed build
                last_used = child.stat().st_mtime
            elif _ENTRY_NAME.fullmatch(child.name) and index.is_file():
                last_used = index.stat().st_mtime
            else:
                continue  # not ours (e.g. downloaded demo data)
        except OSError:
            continue
        if child.is_dir() and last_used < cutoff:
            shutil.rmtree(child, ignore_errors=True)
            deleted.append(child)
    return deleted
