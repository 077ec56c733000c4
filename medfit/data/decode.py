"""Turn one image file into uint8 pixels for the classifier, and say what was done to them.

Every output is a C-contiguous uint8 array of shape (H, W, 1) (grayscale) or (H, W, 3) (colour).
What happens to your pixels:

- PNG/JPEG/BMP/TIFF are read with Pillow. EXIF orientation is applied. A multi-page TIFF gives its
  first page. Modes `1`/`L`/`LA` become grayscale; `RGB` stays RGB even when its three channels are
  identical (medfit does not guess); `CMYK`/`YCbCr`/other colour modes go through Pillow's
  `convert("RGB")`. A palette (`P`) image becomes grayscale when every colour it uses is a gray,
  else RGB.
- Alpha is dropped, never composited: the colour channels are kept exactly as stored, because
  compositing over white or black would invent pixel values an X-ray never had.
- 16/32-bit integer and float images (Pillow modes `I;16*`, `I`, `F`) are windowed to 8 bit by
  `window_to_uint8` (by default the 0.5th..99.5th percentile of the image's own values, estimated
  from an evenly strided sample of at most `SAMPLE_VALUES` of them), never clipped at 255 the way
  `convert("L")` would.
- DICOM (.dcm/.dicom, needs pydicom >= 3): Modality LUT / rescale slope and intercept first; then
  the file's first Window Center/Width (low = c - w/2, high = c + w/2, linear) if it has one, else
  its VOI LUT followed by the percentile rule, else the percentile rule alone. MONOCHROME1 is
  inverted after windowing so that bright means dense, as in every other format. A multi-frame
  file gives its middle frame (index frames // 2), and `note` says so. Colour DICOM comes out RGB
  (pydicom converts YBR_* to RGB itself); PALETTE COLOR goes through its colour lookup table.
- `min_side`: a JPEG whose two sides are both at least twice `min_side` is decoded at 1/2, 1/4
  or 1/8 scale in the DCT itself (Pillow's `draft`: libjpeg's scaled IDCT keeps only the low
  frequencies, a low-pass downscale), to the smallest of those scales that keeps both sides
  >= `min_side`. The cache and `predict` pass their square's side: a 4,000 px scan bound for a
  74 px square (64 px input) decodes at 1/8 scale. Other formats ignore it.
- Anything that cannot be read this way raises `DecodeError` ("<path>: <what is wrong>").

Memory: an image is refused from its header when its decoded raster would exceed `max_bytes`
(default `MAX_DECODE_BYTES`), and windowing works on row strips of at most `STRIP_VALUES` float32
values, so a decode holds the raster, the uint8 result and one strip, never whole-image floats.
"""

from __future__ import annotations

import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medfit.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
JUNK_NAMES = frozenset(
    {".DS_Store", "__MACOSX", ".ipynb_checkpoints", "Thumbs.db", ".medfit-cache"}
)
# Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS by default; medfit uses the same bound.
MAX_PIXELS = 178_956_970
# The pixel bound alone lets a few hundred KB of 16-bit PNG claim 338 MB of raster (13000^2 x 2),
# and memory, not pixels, is what runs out (serve decodes uploads concurrently). 512 MiB admits
# everything the pixel bound admits in 8-bit gray and 16-bit gray up to ~268 Mpx; a decode's
# peak is the raster plus its uint8 result (at most 2x this) plus one float32 strip (16 MiB).
MAX_DECODE_BYTES = 512 * 1024 * 1024
STRIP_VALUES = 1 << 22  # float32 values windowed at a time: 16 MiB of working memory
SAMPLE_VALUES = 1 << 20  # percentiles come from at most this many (strided) values
PERCENTILES = (0.5, 99.5)  # the automatic window: robust to a few hot or dead pixels
_DICOM_PLUGINS = 'pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or "python-gdcm")'


class DecodeError(DataError):
    """One file cannot be decoded; the message is '<path>: <what is wrong>' on one line."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8, (H, W, 1) or (H, W, 3), C-contiguous
    group: str | None  # DICOM PatientID, else StudyInstanceUID, else None
    note: str  # what conversion was applied, "" when none


def is_junk(path: Path) -> bool:
    """True when any part of `path` is OS/tool clutter (.DS_Store, __MACOSX, ._x, ...)."""
    return any(part in JUNK_NAMES or part.startswith("._") for part in Path(path).parts)


def is_image_path(path: Path) -> bool:
    """True for a file medfit reads: a known suffix (any case) and no junk in the path."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES and not is_junk(path)


RowSource = Callable[[int, int], np.ndarray]  # (top, bottom) -> those rows, any numeric dtype


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the finite values; (0, 0) when there are none.

    Exact up to `SAMPLE_VALUES` values; above, estimated on an evenly strided subsample (every
    k-th row and column), which keeps the cost of a huge image to a few MB.
    """
    rows = _as_rows(np.asarray(values))
    height, width = rows.shape
    return _percentiles(_sample(lambda top, bottom: rows[top:bottom], height, width))


def window_to_uint8(
    values: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Map [low, high] linearly onto [0, 255], clip outside, round to uint8.

    A missing bound comes from `percentile_window` (0.5th / 99.5th percentile of `values`).
    If high <= low (a constant image) the result is all zeros. NaN maps to 0, +inf to 255.
    Works in float32 on strips of rows, never on a float copy of the whole array.
    """
    values = np.asarray(values)
    if low is None or high is None:
        auto_low, auto_high = percentile_window(values)
        low = auto_low if low is None else low
        high = auto_high if high is None else high
    rows = _as_rows(values)
    height, width = rows.shape
    out = _window_rows(lambda top, bottom: rows[top:bottom], height, width, low, high)
    return out.reshape(values.shape)


def _as_rows(values: np.ndarray) -> np.ndarray:
    """A 2-D view: (rows, everything else); a 0-D or 1-D array becomes one column."""
    return values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(-1, 1)


def _strips(height: int, width: int) -> Iterator[tuple[int, int]]:
    step = max(1, STRIP_VALUES // max(1, width))
    for top in range(0, height, step):
        yield top, min(height, top + step)


def _sample(rows: RowSource, height: int, width: int) -> np.ndarray:
    """Every k-th value of every k-th row (k = 1 up to SAMPLE_VALUES values) as float64."""
    k = 1
    while -(-height // k) * -(-width // k) > SAMPLE_VALUES:
        k += 1
    parts = [
        np.asarray(rows(top, bottom)[(-top) % k :: k, ::k], dtype=np.float64).ravel()
        for top, bottom in _strips(height, width)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def _percentiles(sample: np.ndarray) -> tuple[float, float]:
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(finite, PERCENTILES)
    return float(low), float(high)


def _window_rows(rows: RowSource, height: int, width: int, low: float, high: float) -> np.ndarray:
    """The (height, width) uint8 windowing of `rows`, one float32 strip at a time."""
    out = np.zeros((height, width), dtype=np.uint8)
    if not high > low:
        return out
    scale = np.float32(255.0 / (high - low))
    for top, bottom in _strips(height, width):
        strip = np.array(rows(top, bottom), dtype=np.float32)  # a copy: edited in place below
        strip -= np.float32(low)
        strip *= scale
        np.nan_to_num(strip, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(strip, 0.0, 255.0, out=strip)
        np.rint(strip, out=strip)
        out[top:bottom] = strip
    return out


def decode_image(
    path: str | Path,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = None,
    min_side: int | None = None,
) -> Decoded:
    """Decode one file by its suffix (DICOM or Pillow) into `Decoded`; see the module docstring
    (`min_side`: JPEG draft decoding).

    Refused from the header: more than `max_pixels` pixels, or a decoded raster over `max_bytes`
    (default: `MAX_DECODE_BYTES`, read at each call).
    """
    path = Path(path)
    _require_regular_file(path)
    limits = (max_pixels, MAX_DECODE_BYTES if max_bytes is None else max_bytes)
    if path.suffix.lower() in DICOM_SUFFIXES:
        pixels, group, note = _decode_dicom(path, limits)
    else:
        (pixels, note), group = _decode_pil(path, limits, min_side), None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    # Writable too: Pillow hands out read-only arrays, which torch.from_numpy warns about.
    return Decoded(np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"]), group, note)


def _fail(path: Path, problem: str) -> DecodeError:
    return DecodeError(f"{path}: {problem}")


def _reason(err: BaseException) -> str:
    """The library's own message, folded onto one line (pydicom's span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def _require_regular_file(path: Path) -> None:
    try:
        info = path.stat()  # follows symlinks: a loop raises OSError (ELOOP) here
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as err:
        raise _fail(path, f"cannot access file ({err.strerror or _reason(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "is not a regular file")
    if info.st_size == 0:
        raise _fail(path, "file is empty (0 bytes); re-copy it or delete it")


def _check_size(
    path: Path, width: int, height: int, bytes_per_pixel: int, limits: tuple[int, int]
) -> None:
    max_pixels, max_bytes = limits
    if width <= 0 or height <= 0:
        raise _fail(path, f"image has a zero dimension ({width}x{height})")
    if width * height > max_pixels:
        raise _fail(
            path,
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} (decompression-bomb guard); downscale it or raise max_pixels",
        )
    raster = width * height * bytes_per_pixel
    if raster > max_bytes:
        raise _fail(
            path,
            f"image is {width}x{height} at {bytes_per_pixel} bytes/pixel = {raster} bytes decoded, "
            f"more than the limit of {max_bytes} (memory guard); downscale it or raise max_bytes",
        )


def _pil_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of Pillow's raster: 1 for 1/L/P, 2 for I;16*, else 4 (RGB is stored 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _decode_pil(
    path: Path, limits: tuple[int, int], min_side: int | None = None
) -> tuple[np.ndarray, str]:
    try:
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; medfit applies its own
        # limit below, so the warning is muted for this call only (the filter is restored after).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise _fail(path, f"{_reason(err)} Raise PIL.Image.MAX_IMAGE_PIXELS to allow it") from None
    except UnidentifiedImageError:
        raise _fail(
            path, "not a readable PNG/JPEG/BMP/TIFF image (corrupt, or wrong suffix)"
        ) from None
    except Exception as err:  # OSError and whatever a format plugin raises on a broken header
        raise _fail(path, f"cannot open image ({_reason(err)})") from None
    with image:
        # Before any pixel is decoded.
        _check_size(path, image.width, image.height, _pil_bytes_per_pixel(image.mode), limits)
        try:
            if min_side and image.format == "JPEG":
                # Pillow picks the largest 1/2^k reduction whose sides stay >= the request.
                image.draft(image.mode, (min_side, min_side))
            # Corrupt or truncated data surfaces here, as almost any exception type from the
            # decoders; truncation is an error unless ImageFile.LOAD_TRUNCATED_IMAGES was set.
            image.load()
            orientation = image.getexif().get(0x0112, 1)  # after load: PNG may keep EXIF late
            ImageOps.exif_transpose(image, in_place=True)  # no copy of an upright raster
            pixels, notes = _pil_pixels(image)
        except Exception as err:
            raise _fail(path, f"corrupt or truncated image ({_reason(err)})") from None
    if orientation not in (1, None):
        notes.insert(0, f"EXIF orientation {orientation} applied")
    return pixels, "; ".join(notes)


def _pil_pixels(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Pixels as (H, W) gray or (H, W, 3) RGB uint8, plus what was done (see module docstring)."""
    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        dropped = ["alpha channel dropped"] if "A" in mode or "a" in mode else []
        return np.asarray(image.convert("L")), dropped
    if mode.startswith("I") or mode == "F":
        # Strips cropped from Pillow's raster: np.asarray(image) would copy all of it first.
        def rows(top: int, bottom: int) -> np.ndarray:
            return np.asarray(image.crop((0, top, image.width, bottom)))

        low, high = _percentiles(_sample(rows, image.height, image.width))
        depth = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, "16-bit")
        note = f"{depth} grayscale, window [{low:g}, {high:g}] -> 8 bit"
        return _window_rows(rows, image.height, image.width, low, high), [note]
    if mode in ("P", "PA"):
        # Via RGBA so that a transparent palette entry keeps its stored colour, not a warning.
        rgba = np.asarray(image.convert("RGBA"))
        if _palette_is_gray(image):
            return rgba[..., 0], ["grayscale palette -> gray"]
        return rgba[..., :3], ["palette -> RGB"]
    if mode == "RGB":
        return np.asarray(image), []
    note = "alpha channel dropped" if mode in ("RGBA", "RGBa", "RGBX") else f"{mode} -> RGB"
    return np.asarray(image.convert("RGB")), [note]


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette("RGB")
    if not palette:
        return False
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    used = colours[np.unique(np.asarray(image if image.mode == "P" else image.getchannel("P")))]
    return bool((used == used[:, :1]).all())


def _decode_dicom(path: Path, limits: tuple[int, int]) -> tuple[np.ndarray, str | None, str]:
    try:
        import pydicom
    except ImportError:
        raise _fail(path, 'reading DICOM needs pydicom: pip install "medfit[dicom]"') from None
    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise _fail(path, "not a DICOM file (no 'DICM' file header)") from None
    except Exception as err:  # pydicom reports malformed files with many exception types
        raise _fail(path, f"corrupt DICOM file ({_reason(err)})") from None
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise _fail(path, "DICOM file has no pixel data (a report or other non-image object?)")
    try:
        columns, rows = int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
        frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
        samples = max(1, int(ds.get("SamplesPerPixel", 1) or 1))
        stored = -(-max(8, int(ds.get("BitsAllocated", 8) or 8)) // 8)
    except (TypeError, ValueError) as err:
        raise _fail(path, f"malformed DICOM image header ({_reason(err)})") from None
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        samples, stored = 3, 2  # the colour lookup gives 3 x 16 bits per pixel
    # Per frame: only one frame is decoded.
    _check_size(path, columns, rows, samples * stored, limits)
    frame = _dicom_frame(path, ds, frames // 2 if frames > 1 else None)
    notes = [f"middle frame {frames // 2} of {frames}"] if frames > 1 else []
    try:
        pixels, conversion = _dicom_to_uint8(ds, frame)
    except Exception as err:  # malformed LUT / window elements
        raise _fail(path, f"cannot convert DICOM pixel values ({_reason(err)})") from None
    return pixels, _dicom_group(ds), "; ".join([*notes, *conversion])


def _dicom_frame(path: Path, ds: Any, index: int | None) -> np.ndarray:
    """Decode one frame (or the only one), refusing up front when no decoder is installed."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise _fail(
                path,
                f"pixel data is compressed as '{syntax.name}' and no decoder is "
                f"installed for it: {_DICOM_PLUGINS}",
            )
    try:
        if index is not None:
            ds.pixel_array_options(index=index)  # decodes this frame only
        return np.asarray(ds.pixel_array)
    except Exception as err:  # corrupt or inconsistent pixel data, any type
        raise _fail(path, f"cannot decode DICOM pixel data ({_reason(err)})") from None


def _dicom_to_uint8(ds: Any, frame: np.ndarray) -> tuple[np.ndarray, list[str]]:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        return window_to_uint8(rgb, 0, np.iinfo(rgb.dtype).max), ["palette colour -> RGB"]
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        notes = [f"{photometric} -> RGB"] if photometric.startswith("YBR") else []
        if frame.dtype == np.uint8:
            return frame, notes
        top = 2 ** int(ds.get("BitsStored", 8)) - 1
        return window_to_uint8(frame, 0, top), [*notes, f"{top.bit_length()}-bit RGB -> 8 bit"]
    frame = frame.reshape(frame.shape[0], -1)  # (rows, columns): every step below is per pixel
    height, width = frame.shape

    def modality(top: int, bottom: int) -> np.ndarray:
        return np.asarray(apply_modality_lut(frame[top:bottom], ds))

    def voi(top: int, bottom: int) -> np.ndarray:
        return np.asarray(apply_voi_lut(np.rint(modality(top, bottom)).astype(np.int64), ds))

    rows: RowSource = modality
    window = _dicom_window(ds)
    if window is not None:
        source = "DICOM window"
    elif ds.get("VOILUTSequence"):
        rows, source = voi, "VOI LUT, then percentile window"
    else:
        source = "percentile window"
    if window is None:
        window = _percentiles(_sample(rows, height, width))
    pixels = _window_rows(rows, height, width, *window)
    notes = [f"{source} [{window[0]:g}, {window[1]:g}] -> 8 bit"]
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
        notes.append("MONOCHROME1 inverted")
    return pixels, notes


def _dicom_window(ds: Any) -> tuple[float, float] | None:
    """The first Window Center/Width pair as (low, high); None when absent or width <= 0."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center, width = _first_number(center), _first_number(width)
    return (center - width / 2, center + width / 2) if width > 0 else None


def _first_number(value: Any) -> float:
    """A DICOM value may hold several alternatives (a MultiValue); medfit uses the first."""
    return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)


def _dicom_group(ds: Any) -> str | None:
    """PatientID when present and non-empty, else StudyInstanceUID, else None."""
    for keyword in ("PatientID", "StudyInstanceUID"):
        value = str(ds.get(keyword) or "").strip()
        if value:
            return value
    return None
