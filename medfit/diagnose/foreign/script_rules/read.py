"""One read of one script: source -> interpreter -> facts -> rules -> report."""

from __future__ import annotations

from pathlib import Path

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.facts import ScriptFacts
from medfit.diagnose.foreign.script.gather import build, framework
from medfit.diagnose.foreign.script.interp import Interp
from medfit.diagnose.foreign.script.report import ScriptReport
from medfit.diagnose.foreign.script.source import load
from medfit.diagnose.foreign.script.values import World
from medfit.diagnose.foreign.script_rules.rules import run_rules
from medfit.files import read_text_file

MAX_NOTES = 30


def read(path: Path, grayscale: bool | None) -> ScriptReport:
    text = read_text_file(path, "training script")
    notes = list(text.notes)
    facts = ScriptFacts()
    findings: list[Finding] = []
    fw = "unknown"
    try:
        src = load(text.text)
        notes += src.notes
        it = Interp(src, World())
        it.run_module()
        fw = framework(it)
        facts = build(it)
        findings = run_rules(it, facts, path, fw, grayscale)
        notes += it.world.notes
        undefined = [n for n in it.undefined if n not in it.defs]
        if undefined:
            shown = ", ".join(undefined[:8]) + (" ..." if len(undefined) > 8 else "")
            notes.append(f"names used but not defined in the script (elided?): {shown}")
    except Exception as exc:  # a reader bug must not cost the user the log's diagnosis
        notes.append(
            f"the script reader failed ({type(exc).__name__}: {exc}); findings are partial"
        )
    if len(notes) > MAX_NOTES:
        notes = [*notes[:MAX_NOTES], f"... and {len(notes) - MAX_NOTES} more notes"]
    return ScriptReport(path, fw, findings, notes, facts)


def read_script(path: str | Path, grayscale: bool | None = None) -> ScriptReport:
    """Findings and facts for a training script (never executed). `grayscale` (from the data,
    when known) helps decide whether flips and rotations destroy labels. Raises MedfitError only
    for a file that cannot be read as text (missing, a folder, binary, too large)."""
    return read(Path(path).expanduser(), grayscale)
