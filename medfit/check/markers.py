"""Burned-in text and markers: bright thin strokes in the image corners, as numbers per image.

X-rays carry lead "L"/"R" letters, rulers and annotations burned into the pixels, usually near a
corner; when one hospital (or one class) has them and another does not, a network reads the
letters instead of the lungs (Zech et al., PLoS Med 2018). An OCR model would be slow and needs
weights; what tells a burned-in glyph apart from anatomy is cheap to measure:

- it is near-white: overlays are drawn at (or close to) the brightest displayable value;
- it is a thin stroke: much brighter than what lies a few pixels away, which a grey-level white
  top-hat (the image minus its morphological opening, `scipy.ndimage.white_tophat`) isolates —
  broad bright regions (bone, padding, a white corner fill) are removed by the opening;
- it comes in glyph-sized pieces: connected components (`scipy.ndimage.label`) taller or wider
  than a stroke is thick, yet well inside the patch — neither speckle nor a line or edge that
  runs through it.

Per image this gives, for each of the 4 corner patches, the share of its pixels in such strokes,
plus the number of stroke components: 5 numbers that `shortcuts` tests like any other property
(can they alone predict the class?). Dark text on a bright background is not looked for, and a
long ruler line is not a glyph (its tick labels may be). Bright thin anatomy can still qualify
(a few OCT scans have such pieces in their retinal layers): that is why the feature is only
reported when it predicts the class, like every other shortcut property.
"""

from __future__ import annotations

import numpy as np

PATCH_FRACTION = 0.25  # corner patch side / short side: where L/R letters and annotations sit
WHITE = 200.0  # stroke pixels are at least this bright (of 255): overlays are drawn near white;
# below 255 so that antialiased or JPEG-smeared letters still count
CONTRAST = 64.0  # ... and this much brighter than their opened surroundings (1/4 of the range)
STROKE_FRACTION = 1 / 16  # top-hat footprint / patch side: narrower structures survive (strokes)
PATCH_MAX = 128  # pixels: larger patches are max-pooled (by an integer factor) to about this
# side first; the block maximum keeps a white stroke white (a mean would grey it), and the cost
# per image stays about constant however large the scan
MIN_FOOTPRINT = 3  # pixels: the smallest footprint that still has a centre and a surround
MIN_AREA = 3  # pixels: smaller components are speckle, not a glyph
# A glyph's longer bounding-box side is at least the top-hat footprint (a letter is taller than
# its strokes are wide: this drops bright speckle, e.g. in the retinal layers of OCT scans) and at
# most this share of the patch (longer components are lines or edges running through it)
MAX_EXTENT_FRACTION = 0.75
N_VALUES = 5  # the 4 corners' stroke fractions (TL, TR, BL, BR) and the component count


def corner_patches(gray: np.ndarray) -> list[np.ndarray]:
    """The 4 corner patches (TL, TR, BL, BR), each PATCH_FRACTION of the short side, pooled to
    at most about PATCH_MAX pixels a side."""
    h, w = gray.shape
    c = max(1, round(PATCH_FRACTION * min(h, w)))
    return [_max_pool(p) for p in (gray[:c, :c], gray[:c, -c:], gray[-c:, :c], gray[-c:, -c:])]


def _max_pool(patch: np.ndarray) -> np.ndarray:
    factor = patch.shape[0] // PATCH_MAX
    if factor < 2:
        return patch
    side = (patch.shape[0] // factor) * factor
    square = patch[:side, :side]
    # Strided maxima (factor + factor passes over views) instead of reshape(...).max(axis=(1, 3)):
    # 0.2 ms vs 30 ms for a 512 px patch, since the reshape copies the strided corner view.
    rows = square[0::factor]
    for i in range(1, factor):
        rows = np.maximum(rows, square[i::factor])
    pooled = rows[:, 0::factor]
    for i in range(1, factor):
        pooled = np.maximum(pooled, rows[:, i::factor])
    return pooled


def stroke_components(patch: np.ndarray) -> tuple[int, int]:
    """(pixels in glyph-sized bright thin strokes, number of such components) of one patch."""
    from scipy import ndimage

    side = min(patch.shape)
    footprint = max(MIN_FOOTPRINT, round(STROKE_FRACTION * side))
    tophat = ndimage.white_tophat(patch, size=footprint)
    mask = (patch >= WHITE) & (tophat >= CONTRAST)
    if not mask.any():
        return 0, 0
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel())[1:]
    extents = np.array([max(s.stop - s.start for s in box) for box in ndimage.find_objects(labels)])
    keep = (areas >= MIN_AREA) & (extents >= footprint) & (extents <= MAX_EXTENT_FRACTION * side)
    return int(areas[keep].sum()), int(keep.sum())


def marker_stats(gray: np.ndarray) -> tuple[float, ...]:
    """N_VALUES numbers: each corner's share of stroke pixels, then the stroke component count.

    `gray` is the (H, W) float32 luminance in 0..255 (as `hashing.luminance` makes it).
    """
    fractions: list[float] = []
    components = 0
    for patch in corner_patches(gray):
        pixels, count = stroke_components(patch)
        fractions.append(round(pixels / patch.size, 5))
        components += count
    return (*fractions, float(components))
