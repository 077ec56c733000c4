"""One read of one script: source -> interpreter -> facts -> rules -> report."""

from __future__ import annotations

from pathlib import Path

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script import ScriptReport
from medfit.diagnose.foreign.script.facts import ScriptFacts, build
from medfit.diagnose.foreign.script.interp import Interp
from medfit.diagnose.foreign.script.source import load
from medfit.diagnose.foreign.script.values import World
from medfit.files import read_text_file

MAX_NOTES = 30
IMPORT_FRAMEWORKS = (
    ("ultralytics", "ultralytics"),
    ("lightning", "lightning"),
    ("transformers", "hf"),
    ("fastai", "fastai"),
    ("keras", "keras"),
    ("tensorflow", "keras"),
    ("timm", "timm"),
    ("torch", "pytorch"),
)


def framework(it: Interp) -> str:
    apis = [r.api for r in it.world.fits]
    if apis:
        api = apis[0]
        if api == "torch":
            libs = {b.lib for b in it.world.backbones}
            return "timm" if "timm" in libs and "torchvision" not in libs else "pytorch"
        return {"keras": "keras"}.get(api, api)
    libs = {b.lib for b in it.world.backbones}
    for lib, name in (("ultralytics", "ultralytics"), ("hf", "hf"), ("fastai", "fastai"),
                      ("keras", "keras"), ("hub", "keras"), ("timm", "timm"),
                      ("torchvision", "pytorch")):  # fmt: skip
        if lib in libs:
            return name
    text = " ".join(it.src.lines[:400])
    for word, name in IMPORT_FRAMEWORKS:
        if f"import {word}" in text or f"from {word}" in text:
            return name
    return "unknown"


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
        from medfit.diagnose.foreign.script.rules import run_rules

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
