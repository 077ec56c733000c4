"""Pixel hashes and a perceptual hash that sees through flips and 90° rotations.

- `pixel_hash`: BLAKE2b of the decoded pixels (shape included). A colour file whose three channels
  are equal hashes like the same picture saved as grayscale: re-saving a scan as RGB does not
  hide the copy.
- `dihedral_dhash`: the difference hash (dHash) of the 8 dihedral transforms of an image (the 4
  rotations by 90°, each with and without a mirror flip), `HASH_SIDE`² = 256 bits each. The image
  is squashed to a (HASH_SIDE + 1)² grayscale square first; squashing commutes with rot90 and
  flips, so hash k of a rotated copy equals hash 0 of the original (up to rounding).
- `hamming_search`: for each query, the nearest references by the minimum Hamming distance over
  the query's 8 transforms; a ±1 matrix product (BLAS or GPU), chunked so memory stays bounded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

HASH_SIDE = 16  # 16x16 = 256 bits: the resolution the shared-data README uses for BreastMNIST
HASH_BITS = HASH_SIDE * HASH_SIDE
HASH_BYTES = HASH_BITS // 8
TRANSFORMS = ("identity", "rot90", "rot180", "rot270", "flip", "flip+rot90", "flip+rot180",
              "flip+rot270")  # fmt: skip
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def pixel_hash(pixels: np.ndarray) -> str:
    """Hex digest of the decoded pixels (uint8 (H, W, C)); gray-as-RGB hashes as gray."""
    if pixels.shape[2] == 3 and is_gray_rgb(pixels):
        pixels = pixels[:, :, :1]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.asarray(pixels.shape, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def is_gray_rgb(pixels: np.ndarray) -> bool:
    """True for a 3-channel image whose channels are all equal (grayscale stored as RGB)."""
    return bool(
        (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    )


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float32 gray values of an (H, W, 1|3) uint8 image."""
    if pixels.shape[2] == 1:
        return pixels[:, :, 0].astype(np.float32)
    return pixels.astype(np.float32) @ _LUMA


def shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """(H, W) float gray squashed to side x side (box filter: every source pixel counts equally)."""
    image = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(image.resize((side, side), Image.Resampling.BOX), dtype=np.float32)


def dihedral(square: np.ndarray) -> list[np.ndarray]:
    """The 8 dihedral transforms of a square array, in the order of `TRANSFORMS`."""
    flipped = square[:, ::-1]
    return [np.rot90(square, k) for k in range(4)] + [np.rot90(flipped, k) for k in range(4)]


def dihedral_dhash(pixels: np.ndarray) -> np.ndarray:
    """(8, HASH_BYTES) uint8: the packed dHash of each dihedral transform of the image."""
    return dihedral_dhash_gray(luminance(pixels))


def dihedral_dhash_gray(gray: np.ndarray) -> np.ndarray:
    """`dihedral_dhash` of an (H, W) gray image already converted by `luminance`."""
    small = shrink(gray, HASH_SIDE + 1)
    hashes = [np.packbits(t[:HASH_SIDE, 1:] > t[:HASH_SIDE, :-1]) for t in dihedral(small)]
    return np.stack(hashes).astype(np.uint8)


@dataclass(frozen=True)
class Neighbours:
    """For each query: its `k` nearest references (ascending distance; -1 where fewer exist)."""

    index: np.ndarray  # int64 (Q, k), into the reference rows
    distance: np.ndarray  # int32 (Q, k), Hamming bits (HASH_BITS + 1 where no reference)
    transform: np.ndarray  # int8 (Q, k), which transform of the query matched (TRANSFORMS)


def _signs(packed: np.ndarray, device: str) -> torch.Tensor:
    import torch

    bits = np.unpackbits(packed, axis=-1).astype(np.float32)
    return torch.from_numpy(bits * 2.0 - 1.0).to(device)


def hamming_search(
    queries: np.ndarray,
    refs: np.ndarray,
    k: int = 5,
    device: str = "cpu",
    query_chunk: int = 256,
    ref_chunk: int = 8192,
) -> Neighbours:
    """Nearest references for every query by min over the query's 8 transforms of Hamming distance.

    `queries` is (Q, 8, HASH_BYTES) and `refs` (R, 8, HASH_BYTES) (only their identity hash is
    used). For ±1 vectors, Hamming = (bits - dot) / 2, so one matrix product gives all distances;
    chunks of about query_chunk * 8 * ref_chunk floats (64 MiB by default) keep memory bounded.
    """
    import torch

    n_q, n_r = len(queries), len(refs)
    k = max(1, min(k, n_r)) if n_r else 1
    best_d = np.full((n_q, k), HASH_BITS + 1, dtype=np.int32)
    best_i = np.full((n_q, k), -1, dtype=np.int64)
    best_t = np.zeros((n_q, k), dtype=np.int8)
    if n_q == 0 or n_r == 0:
        return Neighbours(best_i, best_d, best_t)
    n_bits = queries.shape[-1] * 8
    ref_signs = [
        _signs(refs[start : start + ref_chunk, 0], device) for start in range(0, n_r, ref_chunk)
    ]
    with torch.inference_mode():
        for q0 in range(0, n_q, query_chunk):
            q = _signs(queries[q0 : q0 + query_chunk], device)  # (q, 8, bits)
            n = q.shape[0]
            run_d = torch.full((n, k), n_bits + 1, dtype=torch.int32, device=device)
            run_i = torch.full((n, k), -1, dtype=torch.int64, device=device)
            run_t = torch.zeros((n, k), dtype=torch.int64, device=device)
            offset = 0
            for r in ref_signs:
                dot = (q.reshape(n * 8, n_bits) @ r.T).reshape(n, 8, -1)
                # The largest dot product is the smallest distance: pick the transform first and
                # convert only (n, r) values, not 8x that (most of the search time on a CPU).
                d_max, t_min = dot.max(dim=1)  # (n, r): best transform per pair
                d_min = ((n_bits - d_max) / 2).round().to(torch.int32)
                kk = min(k, d_min.shape[1])
                d_top, i_top = torch.topk(d_min, kk, dim=1, largest=False)
                t_top = torch.gather(t_min, 1, i_top)
                all_d = torch.cat([run_d, d_top], dim=1)
                all_i = torch.cat([run_i, i_top + offset], dim=1)
                all_t = torch.cat([run_t, t_top], dim=1)
                order = torch.argsort(all_d, dim=1, stable=True)[:, :k]
                run_d, run_i = all_d.gather(1, order), all_i.gather(1, order)
                run_t = all_t.gather(1, order)
                offset += r.shape[0]
            best_d[q0 : q0 + n] = run_d.cpu().numpy()
            best_i[q0 : q0 + n] = run_i.cpu().numpy()
            best_t[q0 : q0 + n] = run_t.cpu().numpy().astype(np.int8)
    return Neighbours(best_i, best_d, best_t)


def pair_distance(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(min Hamming distance over a's 8 transforms to b's identity hash, that transform)."""
    xor = np.bitwise_xor(a, b[0][None, :])
    dist = np.unpackbits(xor, axis=-1).sum(axis=-1)
    best = int(np.argmin(dist))
    return int(dist[best]), best
