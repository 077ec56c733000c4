"""What one read of a training script gives: its findings, the facts read, and notes on what could
not be read (`ScriptReport`, made by script_rules.read_script)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script.facts import ScriptFacts


@dataclass
class ScriptReport:
    path: Path
    framework: str  # keras | pytorch | lightning | hf | ultralytics | fastai | timm | unknown
    findings: list[Finding]
    notes: list[str]
    facts: ScriptFacts = field(default_factory=ScriptFacts)
