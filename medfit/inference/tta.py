"""Test-time augmentation: which flips a run's predictions may average over."""

from __future__ import annotations

from medfit.data import augment

FLIP_DIMS = {"hflip": -1, "vflip": -2}  # NCHW: width is the last axis, height the one before


def allowed_flips(preset: str) -> tuple[str, ...]:
    """Flips the preset applied in training: TTA must not show the model views it never saw
    (a mirrored chest X-ray puts the heart on the wrong side)."""
    spec = augment.PRESETS.get(preset)  # the presets table is the single source of truth
    if spec is None:  # "none", or an unresolved/unknown name: no flips are known to be safe
        return ()
    return tuple(name for name, on in (("hflip", spec.hflip), ("vflip", spec.vflip)) if on)
