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
  `window_to_uint8` (by default the 0.5th..99.5th percentile of the image's own values), never
  clipped at 255 the way `convert("L")` would.
- DICOM (.dcm/.dicom, needs pydicom >= 3): Modality LUT / rescale slope and intercept first; then
  the file's first Window Center/Width (low = c - w/2, high = c + w/2, linear) if it has one, else
  its VOI LUT followed by the percentile rule, else the percentile rule alone. MONOCHROME1 is
  inverted after windowing so that bright means dense, as in every other format. A multi-frame
  file gives its middle frame (index frames // 2), and `note` says so. Colour DICOM comes out RGB
  (pydicom converts YBR_* to RGB itself); PALETTE COLOR goes through its colour lookup table.
- Anything that cannot be read this way raises `DecodeError` ("<path>: <what is wrong>").
"""

from __future__ import annotations

import stat
import warnings
from collections.abc import Sequence
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


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the finite values; (0, 0) when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(finite, PERCENTILES)
    return float(low), float(high)


def window_to_uint8(
    values: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Map [low, high] linearly onto [0, 255], clip outside, round to uint8.

    A missing bound comes from `percentile_window` (0.5th / 99.5th percentile of `values`).
    If high <= low (a constant image) the result is all zeros. NaN maps to 0, +inf to 255.
    """
    values = np.asarray(values, dtype=np.float64)
    if low is None or high is None:
        auto_low, auto_high = percentile_window(values)
        low = auto_low if low is None else low
        high = auto_high if high is None else high
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def decode_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode one file by its suffix (DICOM or Pillow) into `Decoded`; see the module docstring."""
    path = Path(path)
    _require_regular_file(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        pixels, group, note = _decode_dicom(path, max_pixels)
    else:
        (pixels, note), group = _decode_pil(path, max_pixels), None
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


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise _fail(path, f"image has a zero dimension ({width}x{height})")
    if width * height > max_pixels:
        raise _fail(
            path,
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} (decompression-bomb guard); downscale it or raise max_pixels",
        )


def _decode_pil(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
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
        _check_size(path, image.width, image.height, max_pixels)  # before any pixel is decoded
        try:
            # Corrupt or truncated data surfaces here, as almost any exception type from the
            # decoders; truncation is an error unless ImageFile.LOAD_TRUNCATED_IMAGES was set.
            image.load()
            orientation = image.getexif().get(0x0112, 1)  # after load: PNG may keep EXIF late
            pixels, notes = _pil_pixels(ImageOps.exif_transpose(image))
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
        values = np.asarray(image, dtype=np.float64)
        low, high = percentile_window(values)
        depth = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, "16-bit")
        note = f"{depth} grayscale, window [{low:g}, {high:g}] -> 8 bit"
        return window_to_uint8(values, low, high), [note]
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


def _decode_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, str | None, str]:
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
    except (TypeError, ValueError) as err:
        raise _fail(path, f"malformed DICOM image header ({_reason(err)})") from None
    _check_size(path, columns, rows, max_pixels)  # per frame: only one frame is decoded
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
    values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
    window = _dicom_window(ds)
    if window is not None:
        source = "DICOM window"
    elif ds.get("VOILUTSequence"):
        values = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds), dtype=np.float64)
        window, source = percentile_window(values), "VOI LUT, then percentile window"
    else:
        window, source = percentile_window(values), "percentile window"
    pixels = window_to_uint8(values, *window)
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
