"""The value range that reaches a backbone, from the scaling steps on the way (`fold`); whether
it is what the backbone's weights were trained on is a rule (script_rules/pixels.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medfit.diagnose.foreign.script.tables import IMAGENET_MEAN, MODES
from medfit.diagnose.foreign.script.values import Step


@dataclass
class Range:
    lo_hi: tuple[float, float] | None  # None: not known
    norm: str | None = None  # caffe | tf | torch | imagenet | half | std | custom | bad
    order: str | None = None  # rgb | bgr | gray
    uint8: bool = False
    known: bool = True
    assumed_raw: bool = False  # the start was unknown and a /255 implied 0-255
    problems: list[str] = field(default_factory=list)
    lines: list[tuple[int, str]] = field(default_factory=list)  # the scaling steps, in order

    def describe(self) -> str:
        if not self.known:
            return "not known"
        if self.norm == "bad":
            return "; ".join(self.problems) or "garbled"
        if self.norm in ("caffe", "tf", "torch"):
            return f"{self.norm}-mode preprocess_input ({MODES[self.norm]})"
        if self.norm == "imagenet":
            return "0..1 normalised with the ImageNet mean/std"
        if self.norm in ("std", "custom", "half"):
            return "standardised values" if self.norm == "std" else "normalised values"
        if self.lo_hi is None:
            return "not known"
        lo, hi = self.lo_hi
        if abs(lo) < 0.01 and abs(hi - 1) < 0.02:
            return "0..1 (pixels divided by 255)"
        if abs(lo + 1) < 0.02 and abs(hi - 1) < 0.02:
            return "-1..1"
        if abs(lo) < 0.01 and abs(hi - 255) < 0.5:
            return "raw 0-255 pixels"
        return f"{lo:g}..{hi:g}"


def _close(a: float, b: float, tol: float = 0.02) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


def _is_imagenet(mean: object) -> bool:
    if isinstance(mean, (list, tuple)) and len(mean) == 3:
        return all(
            isinstance(m, (int, float)) and abs(m - r) < 0.01
            for m, r in zip(mean, IMAGENET_MEAN, strict=True)
        )
    return False


def _is_half(mean: object) -> bool:
    vals = mean if isinstance(mean, (list, tuple)) else [mean]
    return all(isinstance(m, (int, float)) and abs(m - 0.5) < 0.01 for m in vals) and bool(vals)


def fold(start: str, order: str | None, steps: tuple[Step, ...]) -> Range:
    r = Range((0.0, 255.0) if start == "raw" else None, order=order, uint8=start == "raw")
    for s in steps:
        _apply(r, s)
        if not r.known:
            break
    return r


def _scale(r: Range, factor: float, s: Step) -> None:
    if r.norm is not None:
        if r.norm in ("caffe", "tf", "torch", "imagenet") and factor < 0.1:
            r.norm = "bad"
            r.problems.append(f"line {s.line}: {s.text} after the backbone's preprocess_input")
        elif r.norm != "bad":
            r.norm, r.lo_hi = "custom", None
        return
    if r.lo_hi is None:
        if _close(factor, 1 / 255) or _close(factor, 1 / 127.5):
            r.lo_hi, r.assumed_raw = (0.0, 255.0), True
        else:
            r.known = False
            return
    lo, hi = r.lo_hi
    r.lo_hi = (lo * factor, hi * factor) if factor >= 0 else (hi * factor, lo * factor)
    r.uint8 = False


def _apply(r: Range, s: Step) -> None:
    op = s.op
    if op in ("decode", "decode_bgr"):
        r.lo_hi, r.uint8, r.norm = (0.0, 255.0), True, None
        r.order = "bgr" if op == "decode_bgr" else (r.order if r.order == "gray" else "rgb")
        return
    if op in ("rgb", "bgr", "gray"):
        r.order = op if r.order != "gray" or op == "gray" else "gray"
        return
    if op == "to_float":
        r.uint8 = False
        return
    r.lines.append((s.line, s.text))
    if op in ("convert_dtype", "to_unit"):
        if op == "convert_dtype" and not r.uint8:
            return
        if r.lo_hi is None or _close(r.lo_hi[1], 255, 0.01):
            r.lo_hi, r.uint8 = (0.0, 1.0), False
        return
    if op in ("mul", "div"):
        if s.arg == "max":
            r.lo_hi, r.norm = (0.0, 1.0), None
            return
        if not isinstance(s.arg, float) or s.arg == 0:
            r.known = False
            return
        _scale(r, s.arg if op == "mul" else 1.0 / s.arg, s)
        return
    if op in ("add", "sub"):
        if not isinstance(s.arg, float) or r.lo_hi is None:
            if r.norm is None and r.lo_hi is None:
                r.known = False
            return
        shift = s.arg if op == "add" else -s.arg
        if r.norm is not None:
            r.norm = "custom"
            return
        r.lo_hi = (r.lo_hi[0] + shift, r.lo_hi[1] + shift)
        return
    if op == "center":
        r.norm = "std" if r.norm in (None, "std") else "custom"
        r.lo_hi = None
        return
    if op == "scale_std":
        r.norm = "std" if r.norm in (None, "std") else "custom"
        r.lo_hi = None
        return
    if op == "pre":
        _pre(r, s)
        return
    if op in ("normalize", "normalize_255"):
        mean = s.arg[0]
        if op == "normalize_255" and r.lo_hi is not None and _close(r.lo_hi[1], 255, 0.01):
            r.lo_hi = (0.0, 1.0)
        if r.lo_hi is not None and _close(r.lo_hi[1], 255, 0.01):
            r.norm = "custom"  # Normalize on 0-255 values without ToTensor
        elif _is_imagenet(mean):
            r.norm = "imagenet"
        elif _is_half(mean):
            r.norm, r.lo_hi = "half", (-1.0, 1.0)
            return
        else:
            r.norm = "custom"
        r.lo_hi = None
        return
    r.known = False  # a step whose effect is not known


def _pre(r: Range, s: Step) -> None:
    mode = s.arg
    if mode == "builtin":
        return
    if mode == "unknown":
        r.known = False
        return
    if r.norm is not None:
        r.norm = "bad"
        r.problems.append(
            f"line {s.line}: preprocess_input applied to values already preprocessed ({s.text})"
        )
        return
    if r.lo_hi is not None and r.lo_hi[1] <= 2.0:
        r.norm = "bad"
        r.problems.append(
            f"line {s.line}: {mode}-mode preprocess_input on values already in {r.describe()}"
        )
        return
    if mode == "caffe":
        if r.order == "bgr":
            r.problems.append(
                "the images are BGR (cv2.imread), and preprocess_input flips RGB to BGR: channels "
                "end up swapped"
            )
        r.norm, r.lo_hi = "caffe", None
    elif mode == "tf":
        r.norm, r.lo_hi = "tf", (-1.0, 1.0)
    elif mode == "torch":
        r.norm, r.lo_hi = "torch", None
    else:
        r.known = False
