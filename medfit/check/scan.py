"""One streaming pass over the images: decode each file once, keep only small per-image facts.

Per image we keep its file properties (format, mode, size, JPEG quality), a pixel hash, the 8
dihedral dHashes, corner/border brightness, burned-in corner strokes (`markers`), a 70-number
thumbnail feature vector and, when the backbone is used, a small square copy for the embedding
model that is consumed batch by batch.
Nothing full-size outlives its worker call, so memory grows with N by a few hundred bytes (plus
the embedding when on), never by N x H x W.

Decoding runs in a process pool (the decoders hold the GIL); at most a few chunks per worker are in
flight, so a slow consumer (the embedding model) cannot make finished results pile up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medfit.check.hashing import dihedral_dhash_gray, is_gray_rgb, luminance, pixel_hash, shrink
from medfit.check.markers import marker_stats
from medfit.data.cache import resize_square
from medfit.data.decode import DICOM_SUFFIXES, DecodeError, decode_image
from medfit.data.parallel import bounded_map

CORNER_FRACTION = 0.05  # a corner patch is 5% of the short side (at least 1 pixel)
THUMB_SIDE = 8  # thumbnail features: 8x8 gray + per-channel mean and std = 70 numbers
_CHUNK = 16  # files per task sent to a worker
# IJG standard luminance quantisation table (JPEG Annex K); JPEG quality is read off its scale.
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
     56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104,
     113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


@dataclass
class ImageInfo:
    """What one file is, before and after decoding; `error` is set when it could not be read."""

    format: str = ""  # PNG, JPEG, DICOM, ... ("" when the header cannot be read)
    mode: str = ""  # the stored mode: L, RGB, I;16, P, RGBA, DICOM MONOCHROME2 16-bit, ...
    width: int = 0
    height: int = 0
    gray_rgb: bool = False  # stored with 3 channels that are all equal
    jpeg_quality: int | None = None  # estimated from the luminance table (JPEG only)
    corners: tuple[float, ...] = ()  # mean gray of the 4 corner patches (TL, TR, BL, BR)
    border: float = 0.0  # mean gray of the outer 5% frame
    marks: tuple[float, ...] = ()  # burned-in text/markers in the corners (see check.markers)
    file_bytes: int = 0
    note: str = ""  # what decoding converted (16-bit windowing, EXIF rotation, ...)
    error: str = ""  # the one-line decode error, "" when the image is readable

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def shown_mode(self) -> str:
        """The mode as the report shows it: gray saved as RGB is told apart from colour."""
        return f"{self.mode} (gray values)" if self.gray_rgb else self.mode


@dataclass
class Scanned:
    """One image's result from a worker (small arrays only)."""

    info: ImageInfo
    hash: str = ""
    dhash: np.ndarray | None = None  # (8, HASH_BYTES) uint8
    features: np.ndarray | None = None  # (70,) float32 thumbnail features
    thumb: np.ndarray | None = None  # (S, S, C) uint8 for the embedding model, when asked


@dataclass
class ScanJob:
    path: str
    embed_size: int = 0  # 0: no thumbnail for the embedding model


def header_info(path: Path) -> ImageInfo:
    """Format, stored mode and size from the file header (no pixels decoded)."""
    info = ImageInfo()
    try:
        info.file_bytes = path.stat().st_size
    except OSError:
        return info
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _dicom_header(path, info)
    try:
        with Image.open(path) as image:
            info.format = image.format or path.suffix.lstrip(".").upper()
            info.mode, (info.width, info.height) = image.mode, image.size
            tables = getattr(image, "quantization", None)
            if info.format == "JPEG" and tables:
                info.jpeg_quality = jpeg_quality(np.asarray(tables[0], dtype=np.float64))
    except Exception:  # decode_image reports the reason; the header is best effort
        pass
    return info


def _dicom_header(path: Path, info: ImageInfo) -> ImageInfo:
    info.format = "DICOM"
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        photometric = str(ds.get("PhotometricInterpretation", "")).upper()
        info.mode = f"DICOM {photometric} {int(ds.get('BitsStored', 0) or 0)}-bit".strip()
        info.width, info.height = int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
    except Exception:
        pass
    return info


def jpeg_quality(table: np.ndarray) -> int:
    """IJG quality (1-100) whose scaled standard table best matches this luminance table.

    libjpeg scales the standard table by s = 5000/q (q < 50) or 200 - 2q (q >= 50), in percent;
    inverting the mean ratio recovers q within a few points for libjpeg/Pillow/OpenCV files.
    """
    scale = 100.0 * float(np.mean(table)) / float(np.mean(_IJG_LUMA))
    quality = 5000.0 / scale if scale > 100.0 else (200.0 - scale) / 2.0
    return int(np.clip(round(quality), 1, 100))


def corner_stats(gray: np.ndarray) -> tuple[tuple[float, ...], float]:
    """Mean gray of the 4 corner patches and of the outer frame (5% of the short side)."""
    h, w = gray.shape
    c = max(1, round(CORNER_FRACTION * min(h, w)))
    corners = (gray[:c, :c], gray[:c, -c:], gray[-c:, :c], gray[-c:, -c:])
    frame = np.concatenate([gray[:c].ravel(), gray[-c:].ravel(), gray[:, :c].ravel(),
                            gray[:, -c:].ravel()])  # fmt: skip
    return tuple(round(float(p.mean()), 2) for p in corners), round(float(frame.mean()), 2)


def thumb_features(pixels: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """70 numbers: 8x8 gray thumbnail + per-channel mean and std (of a 32 px copy), in [0, 1]."""
    small = shrink(gray, THUMB_SIDE).ravel() / 255.0
    colour = resize_square(pixels, 32, "bilinear").reshape(-1, pixels.shape[2]) / 255.0
    if colour.shape[1] == 1:
        colour = np.repeat(colour, 3, axis=1)
    return np.concatenate([small, colour.mean(0), colour.std(0)]).astype(np.float32)


def scan_one(job: ScanJob) -> Scanned:
    """Everything the check needs from one file, decoding it once."""
    path = Path(job.path)
    info = header_info(path)
    try:
        decoded = decode_image(path)
    except DecodeError as err:
        info.error = str(err)
        return Scanned(info)
    pixels = decoded.pixels
    info.note = decoded.note
    info.gray_rgb = pixels.shape[2] == 3 and is_gray_rgb(pixels)
    if not info.width:  # header unreadable by Pillow but decodable (e.g. DICOM without tags)
        info.height, info.width = pixels.shape[:2]
    gray = luminance(pixels)
    info.corners, info.border = corner_stats(gray)
    info.marks = marker_stats(gray)
    thumb = resize_square(pixels, job.embed_size) if job.embed_size else None
    features = thumb_features(pixels, gray)
    return Scanned(info, pixel_hash(pixels), dihedral_dhash_gray(gray), features, thumb)


def _scan_many(jobs: list[ScanJob]) -> list[Scanned]:
    return [scan_one(job) for job in jobs]


def scan_stream(
    paths: Sequence[str], embed_size: int = 0, workers: int | None = None
) -> Iterator[Scanned]:
    """`Scanned` for each path, in order, decoded by `workers` processes (1: in this process)."""
    jobs = (ScanJob(p, embed_size) for p in paths)
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 2 * _CHUNK:
        yield from map(scan_one, jobs)
        return
    yield from bounded_map(_scan_many, jobs, workers, chunk=_CHUNK)


@dataclass
class ScanResult:
    """Per-image facts for N samples, in sample order (unreadable rows have `ok` False)."""

    infos: list[ImageInfo]
    hashes: list[str]
    dhash: np.ndarray  # (N, 8, HASH_BYTES) uint8 (zeros for unreadable rows)
    features: np.ndarray  # (N, 70) float32 thumbnail features
    embeddings: np.ndarray | None  # (N, D) float16, L2-normalised, when the backbone ran
    seconds: float = 0.0
    embed_note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        return np.array([info.ok for info in self.infos], dtype=bool)

    @property
    def images_per_second(self) -> float:
        return len(self.infos) / self.seconds if self.seconds > 0 else 0.0
