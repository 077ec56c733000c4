"""What every script rule shares: `Ctx` (the read script, its facts, the file and framework) and
how a finding or a question is written, and the modality words that decide which flips and
rotations keep a label."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.facts import ScriptFacts
from medfit.diagnose.foreign.script.models import uses_of
from medfit.diagnose.foreign.script.tables import (
    CHEST_WORDS,
    ORIENTED_WORDS,
    UNORIENTED_WORDS,
    XRAY_WORDS,
    modality_words,
)
from medfit.diagnose.foreign.script.values import Backbone, Data, FitRec, Pix, Seq, Use, Val

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.interp import Interp

LIBS = {
    "keras": "Keras", "pytorch": "PyTorch", "timm": "PyTorch", "lightning": "Lightning",
    "hf": "the HF Trainer", "ultralytics": "Ultralytics", "fastai": "fastai",
}  # fmt: skip
COLOUR_ORIENTED = {"fundus", "retina", "retinal", "oct", "glaucoma"}
NOTEBOOK_WORDS = {"cell", "cells", "patch", "patches"}


@dataclass
class Ctx:
    it: Interp
    facts: ScriptFacts
    path: Path
    fw: str
    grayscale: bool | None
    memo: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def fits(self) -> list[FitRec]:
        return self.it.world.fits

    def finding(
        self,
        rule: str,
        severity: str,
        line: int,
        title: str,
        evidence: str,
        why: str,
        fix: str,
        medfit: str,
        strength: float = 1.0,
        **numbers: Any,
    ) -> Finding:
        nums: dict[str, Any] = {**numbers, "source": "script", "file": str(self.path), "line": line}
        nums["why"] = why
        nums["keras_fix" if self.fw == "keras" else "framework_fix"] = fix
        nums["medfit"] = medfit
        lib = LIBS.get(self.fw, "the script")
        return Finding(
            rule, severity, title, f"{self.path.name}:{line}: {evidence}",
            f"in {lib}: {fix}" if fix else "", nums, strength,
        )  # fmt: skip

    def question(
        self, about: str, line: int, title: str, evidence: str, fix: str, **numbers: Any
    ) -> Finding:
        nums = {"about": about, "source": "script", "file": str(self.path), "line": line, **numbers}
        return Finding(
            "question", "info", title, f"{self.path.name}:{line}: {evidence}", fix, nums, 0.0
        )

    def uses(self, rec: FitRec) -> list[Use]:
        found = uses_of(self.it, rec.model)
        if found:
            return found
        pretrained = [b for b in self.it.world.backbones if b.pretrained]
        return (
            [Use(pretrained[0], (), None, pretrained[0].line, "direct")]
            if len(pretrained) == 1
            else []
        )

    def state(self, rec: FitRec, base: Backbone) -> tuple[str, bool, int, str, str] | None:
        return rec.states.get(id(base))


def train_pix(v: Val | None) -> Pix | None:
    if isinstance(v, Data):
        return v.pix
    if isinstance(v, Pix):
        return v
    if isinstance(v, Seq) and v.items and isinstance(v.items[0], Pix):
        return v.items[0]
    return None


def modality(ctx: Ctx) -> tuple[str | None, set[str]]:
    """oriented | unoriented | ambiguous | oriented_gray (grayscale, kind unknown) | None."""
    strings = " ".join(ctx.it.world.strings).lower().replace("patch_size", "")
    words = modality_words(strings)
    # in comments "cell" and "patch" are notebook words ("run this cell"), not microscopy
    words |= modality_words(" ".join(ctx.it.src.comments)) - NOTEBOOK_WORDS
    oriented, unoriented = words & ORIENTED_WORDS, words & UNORIENTED_WORDS
    if ctx.grayscale is False and not words & COLOUR_ORIENTED:
        return ("unoriented", words) if not oriented else ("ambiguous", words)
    if oriented and not unoriented:
        return "oriented", words
    if unoriented and not oriented:
        return "unoriented", words
    if oriented and unoriented:
        return "ambiguous", words
    return ("oriented_gray" if ctx.grayscale else None), words


def is_chest(words: set[str]) -> bool:
    return bool(words & CHEST_WORDS)


def xray_only(words: set[str]) -> bool:
    return bool(words & XRAY_WORDS) and not is_chest(words)


def lines_text(lines: list[tuple[int, str]], limit: int = 3) -> str:
    return "; ".join(f"line {n}: {t}" for n, t in lines[:limit])
