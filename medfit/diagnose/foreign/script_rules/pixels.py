"""Whether the value range that reaches a backbone (script/pixels.py) is what its weights were
trained on: a `Verdict` with its severity, for the input_scaling rule."""

from __future__ import annotations

from dataclasses import dataclass

from medfit.diagnose.foreign.script.pixels import Range, _close


@dataclass
class Verdict:
    ok: bool | None  # None: cannot tell
    severity: str = "high"
    what: str = ""  # what is wrong, in words


def judge(mode: str, r: Range) -> Verdict:
    """Whether `r` is what a backbone of `mode` expects."""
    if not r.known:
        return Verdict(None)
    desc = r.describe()
    if r.norm == "bad":
        return Verdict(False, "high", desc)
    if r.norm in ("std", "custom") and mode != "hub":
        return Verdict(None)  # standardised: not raw pixels, close enough to tell nothing
    lo_hi = r.lo_hi
    unit = lo_hi is not None and _close(lo_hi[0], 0, 0.01) and _close(lo_hi[1], 1, 0.02)
    sym = lo_hi is not None and _close(lo_hi[0], -1, 0.02) and _close(lo_hi[1], 1, 0.02)
    raw = (
        lo_hi is not None
        and _close(lo_hi[0], 0, 0.01)
        and _close(lo_hi[1], 255, 0.01)
        and r.norm is None
    )
    if r.norm is None and lo_hi is None:
        return Verdict(None)
    if mode == "caffe":
        if r.norm == "caffe":
            swapped = [p for p in r.problems if "swapped" in p]
            return Verdict(False, "medium", swapped[0]) if swapped else Verdict(True)
        if raw:
            if r.order == "bgr":
                return Verdict(
                    False,
                    "medium",
                    "raw 0-255 BGR pixels: the channel order happens to match, but the ImageNet "
                    "channel means are not subtracted",
                )
            return Verdict(
                False,
                "high",
                "raw 0-255 RGB pixels: wrong in channel order (RGB, not BGR) and mean (not "
                "subtracted)",
            )
        return Verdict(False, "high", desc)
    if mode == "tf":
        if r.norm == "tf" or sym:
            return Verdict(True)
        return Verdict(False, "high", desc)
    if mode == "torch":
        if r.norm in ("torch", "imagenet"):
            return Verdict(True)
        if sym or r.norm == "half":
            return Verdict(False, "medium", desc)
        return Verdict(False, "high", desc)
    if mode == "builtin":
        if raw or (lo_hi is not None and _close(lo_hi[1], 255, 0.01) and r.norm is None):
            return Verdict(True)
        return Verdict(False, "high", desc)
    if mode == "hub":
        if unit:
            return Verdict(True)
        if r.norm in ("std", "custom"):
            return Verdict(None)
        return Verdict(False, "high" if raw else "medium", desc)
    if mode == "imagenet":
        if r.norm in ("imagenet", "half", "custom", "std", "torch"):
            return Verdict(True)
        if unit:
            return Verdict(
                False, "medium", "0..1 (ToTensor) without transforms.Normalize(ImageNet mean/std)"
            )
        if raw:
            return Verdict(False, "high", desc)
        return Verdict(None)
    return Verdict(None)
