"""Drive the scan over a dataset: workers decode, this process embeds, arrays fill in order."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from medfit.check.embed import Embedder, as_rgb, augmented_copy, default_embed_size
from medfit.check.hashing import HASH_BYTES
from medfit.check.options import CheckOptions
from medfit.check.scan import ImageInfo, ScanResult, scan_stream
from medfit.data.sources import Sample

N_COPIES = 64  # synthetic augmented copies that calibrate the embedding threshold


class _Batcher:
    """Collects thumbnails and embeds them in batches; keeps a reservoir for the copies."""

    def __init__(self, embedder: Embedder, n: int, batch_size: int, seed: int) -> None:
        self.embedder, self.batch_size = embedder, batch_size
        self.rows: list[int] = []
        self.thumbs: list[np.ndarray] = []
        self.out: np.ndarray | None = None
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.reservoir: list[tuple[int, np.ndarray]] = []
        self.seen = 0

    def add(self, row: int, thumb: np.ndarray) -> None:
        thumb = as_rgb(thumb)
        self.rows.append(row)
        self.thumbs.append(thumb)
        self._sample(row, thumb)
        if len(self.rows) >= self.batch_size:
            self.flush()

    def _sample(self, row: int, thumb: np.ndarray) -> None:
        # Reservoir sampling: a uniform sample of N_COPIES readable images, in one pass.
        self.seen += 1
        if len(self.reservoir) < N_COPIES:
            self.reservoir.append((row, thumb))
        else:
            j = int(self.rng.integers(self.seen))
            if j < N_COPIES:
                self.reservoir[j] = (row, thumb)

    def flush(self) -> None:
        if not self.rows:
            return
        vectors = self.embedder(np.stack(self.thumbs))
        if self.out is None:
            self.out = np.zeros((self.n, vectors.shape[1]), dtype=np.float16)
        self.out[self.rows] = vectors
        self.rows, self.thumbs = [], []

    def copies(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the originals, embeddings of one augmented copy of each)."""
        if not self.reservoir:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.float16)
        rows = np.array([row for row, _ in self.reservoir], dtype=np.int64)
        copies = np.stack([augmented_copy(thumb, self.rng) for _, thumb in self.reservoir])
        return rows, self.embedder(copies)


def scan_dataset(samples: Sequence[Sample], options: CheckOptions) -> ScanResult:
    """Decode every sample once; hashes, properties, features and (optionally) embeddings."""
    n = len(samples)
    infos: list[ImageInfo] = []
    hashes: list[str] = []
    dhash = np.zeros((n, 8, HASH_BYTES), dtype=np.uint8)
    features = np.zeros((n, 70), dtype=np.float32)
    batcher: _Batcher | None = None
    embed_size = 0
    if options.features == "backbone" and n:
        embed_size = options.embed_size or default_embed_size(options.device)
        embedder = Embedder.create(options.model, options.weights, embed_size, options.device)
        batcher = _Batcher(embedder, n, options.batch_size, options.seed)
    start = time.perf_counter()
    stream = scan_stream([s.path for s in samples], embed_size, options.workers)
    for row, item in enumerate(
        tqdm(stream, total=n, desc="check: scan", leave=False, disable=not options.progress)
    ):
        infos.append(item.info)
        hashes.append(item.hash)
        if item.dhash is not None and item.features is not None:
            dhash[row], features[row] = item.dhash, item.features
        if batcher is not None and item.thumb is not None:
            batcher.add(row, item.thumb)
    result = ScanResult(infos, hashes, dhash, features, None)
    if batcher is not None:
        batcher.flush()
        result.embeddings = batcher.out
        result.embed_note = batcher.embedder.note
        rows, copies = batcher.copies()
        result.extra["copy_rows"], result.extra["copy_embeddings"] = rows, copies
    result.seconds = time.perf_counter() - start
    return result
