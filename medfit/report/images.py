"""Thumbnails of dataset images for the report, decoded exactly as training decodes them."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from medfit.data.decode import decode_image
from medfit.errors import MedfitError

THUMB_PX = 112  # longest side: large enough to judge a 28 px MedMNIST image, small in the HTML


def find_image(path: str, bases: list[Path]) -> Path | None:
    """The file as written, else relative to each base (eval writes paths as given on its CLI)."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    if not candidate.is_absolute():
        for base in bases:
            if (base / candidate).is_file():
                return base / candidate
    return None


def png_base64(pixels: np.ndarray) -> str:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) -> base64 PNG."""
    array = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def fit_size(pixels: np.ndarray, px: int = THUMB_PX) -> np.ndarray:
    """Scale so the longest side is `px`: nearest-neighbour up (shows the real pixels of a tiny
    image instead of inventing smooth ones), Lanczos down."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    scale = px / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return np.asarray(image.resize(size, method))


def thumbnail(path: str, bases: list[Path]) -> tuple[str | None, str | None]:
    """(base64 PNG, None) or (None, why there is no picture)."""
    found = find_image(path, bases)
    if found is None:
        return None, "file not found"
    try:
        return png_base64(fit_size(decode_image(found).pixels)), None
    except MedfitError as exc:
        return None, str(exc).removeprefix(f"{found}: ")
