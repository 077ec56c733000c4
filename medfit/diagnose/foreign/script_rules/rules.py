"""Every script rule over what the reader followed (`run_rules`), and `script_read`: what was read.

Every rule checks its own preconditions and returns nothing when it cannot know; where only the
user can tell, it asks (`question`, severity info, `numbers["about"]` = the kind, the title is the
question, the evidence says what the script does not show, the fix says how to find out). Rule
ids are the problem kinds of bench/diagnose_wild/KEY_FORMAT.md, plus `script_read` (info) for
what was read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.facts import ScriptFacts
from medfit.diagnose.foreign.script_rules import rules_data, rules_input, rules_train
from medfit.diagnose.foreign.script_rules.context import Ctx

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.interp import Interp


def run_rules(
    it: Interp, facts: ScriptFacts, path: Path, fw: str, grayscale: bool | None
) -> list[Finding]:
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
