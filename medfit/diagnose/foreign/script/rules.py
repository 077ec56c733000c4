"""The rules over what the reader followed, and how their findings are written.

Every rule checks its own preconditions and returns nothing when it cannot know; where only the
user can tell, it asks (`question`, severity info, `numbers["about"]` = the kind, the title is the
question, the evidence says what the script does not show, the fix says how to find out). Rule
ids are the problem kinds of bench/diagnose_wild/KEY_FORMAT.md, plus `script_read` (info) for
what was read.
"""

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


def run_rules(
    it: Interp, facts: ScriptFacts, path: Path, fw: str, grayscale: bool | None
) -> list[Finding]:
    from medfit.diagnose.foreign.script import rules_data, rules_input, rules_train

    ctx = Ctx(it, facts, path, fw, grayscale)
    out: list[Finding] = [script_read(ctx)]
    for rule in (*rules_input.RULES, *rules_train.RULES, *rules_data.RULES):
        out += rule(ctx)
    return out


def script_read(ctx: Ctx) -> Finding:
    f = ctx.facts
    parts = [f"framework {ctx.fw}"]
    if f.backbone:
        pre = {True: "pretrained", False: "from scratch", None: "weights unknown"}[f.pretrained]
        parts.append(f"backbone {f.backbone} ({pre})")
    elif f.pretrained is False:
        parts.append("a CNN built from scratch")
    for fc in f.fits:
        lr = (
            f"{fc.optimizer or '?'} lr {fc.lr:g}"
            if fc.lr is not None
            else f"{fc.optimizer or '?'} lr unknown"
        )
        parts.append(
            f"training call at line {fc.line} ({fc.epochs or '?'} epochs, {lr}, body {fc.body})"
        )
    if not f.fits:
        parts.append("no training call found")
    if f.data_dirs:
        parts.append("data " + ", ".join(f"{k} {v}" for k, v in f.data_dirs.items()))
    skipped = len(ctx.it.src.skipped_lines)
    if skipped:
        parts.append(f"{skipped} part(s) skipped (see notes)")
    return Finding(
        "script_read", "info", "what the script reader followed",
        f"{ctx.path.name}:1: " + "; ".join(parts),
        "", {"source": "script", "file": str(ctx.path), "line": 1, "framework": ctx.fw}, 0.0,
    )  # fmt: skip
