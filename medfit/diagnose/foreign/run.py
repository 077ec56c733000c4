"""`diagnose_foreign`: another tool's log(s), the training script and the data, in one ranked list.

    medfit diagnose fit_log.txt --script train.py
    medfit diagnose head.csv finetune.csv           # two fit() calls logged to two files
    medfit diagnose trainer_state.json --val-size 120

What was read and what was not is said first (`read_note`, info): the format, the phases, every
column dropped or value refused; then the findings, most severe first, a cause read in the script
before the symptom it produces in the log. Nothing in the inputs is imported or executed, and
neither torch nor timm is loaded (a data folder given with --data is the exception: its check
decodes images).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.history import History
from medfit.diagnose.foreign.log_rules import Context, log_findings
from medfit.diagnose.foreign.read import read_history
from medfit.errors import MedfitError

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.report import ScriptReport

# At equal severity a cause read in the script outranks what the data check found, which outranks
# the log's symptoms: the symptoms are what the causes produce.
SOURCE_ORDER = {"script": 0, "data": 1, "log": 2}
SEVERITY_ORDER = ("high", "medium", "low", "info")


@dataclass
class ForeignDiagnosis:
    source: Path
    findings: list[Finding]
    command: str
    command_note: str
    history: History | None = None
    script_notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.source),
            "findings": [f.to_dict() for f in self.findings],
            "history": self.history.to_dict() if self.history else None,
            "script_notes": self.script_notes,
            "probes": {"skipped": "a foreign history has no medfit checkpoint to probe"},
            "command": self.command,
            "command_note": self.command_note,
        }


def rank_all(findings: list[Finding]) -> list[Finding]:
    return sorted(
        findings,
        key=lambda f: (
            SEVERITY_ORDER.index(f.severity),
            SOURCE_ORDER.get(str(f.numbers.get("source", "log")), 2),
            -f.strength,
        ),
    )


def diagnose_foreign(
    logs: list[str | Path] | str | Path | None,
    script: str | Path | None = None,
    data: str | None = None,
    val_size: int | None = None,
    classes: int | None = None,
) -> ForeignDiagnosis:
    """Findings for foreign logs and/or a training script and/or a data folder, ranked, with the
    medfit command that trains the same data."""
    paths = [logs] if isinstance(logs, (str, Path)) else list(logs or [])
    if not paths and script is None:
        raise MedfitError("give a training log, a run directory or --script train.py")
    history = read_history(paths) if paths else None
    grayscale = _data_grayscale(data) if data else None
    report = _read_script(script, grayscale) if script else None
    found: list[Finding] = []
    if history is not None:
        ctx = _context(history, report, val_size, classes)
        found += [_read_note(history, ctx), *log_findings(ctx)]
    if report is not None:
        found += report.findings
        found += _known(report, paths)
    found = _merge(found)
    if data:
        found += _check_data(data)
    command, note = _command(report, data)
    source = Path(paths[0]) if paths else Path(str(script))
    notes = report.notes if report is not None else []
    return ForeignDiagnosis(source, rank_all(found), command, note, history, notes)


def _read_script(script: str | Path, grayscale: bool | None) -> ScriptReport:
    from medfit.diagnose.foreign.script_rules import read_script

    return read_script(script, grayscale)


def _known(report: ScriptReport, paths: list[str | Path]) -> list[Finding]:
    """What the recognised public data set adds (its class counts, patients, known flaws)."""
    from medfit.diagnose.foreign.known_rules import known_findings, read_logs

    answered = {f.rule for f in report.findings if f.severity != "info"}
    logs = read_logs([Path(p) for p in paths])
    return known_findings(report.facts, report.framework, report.path, logs, answered)


def _context(
    history: History, report: ScriptReport | None, val_size: int | None, classes: int | None
) -> Context:
    facts = report.facts if report is not None else None
    n_val, how = val_size, "given with --val-size" if val_size else ""
    if n_val is None and facts is not None and facts.val_size:
        n_val, how = facts.val_size, "from the script"
    framework = history.framework
    if framework in ("unknown", "pytorch", "tensorboard") and report is not None:
        framework = report.framework if report.framework != "unknown" else framework
    if framework == "tensorboard":
        framework = "keras" if any(c.startswith("epoch_") for c in _sources(history)) else "*"
    return Context(
        history=history,
        n_val=n_val,
        n_val_source=how,
        classes=classes or (facts.classes if facts else None),
        framework=framework,
        family=facts.family if facts else None,
        pretrained=facts.pretrained if facts else None,
        device=facts.device if facts else None,
        early_stopping=facts.early_stopping if facts else None,
        fits=len(facts.fits) if facts else None,
        bodies=[f.body for f in facts.fits] if facts else None,
        pipeline=facts.pipeline if facts else None,
    )


def _sources(history: History) -> list[str]:
    return [s for p in history.phases for s in p.source.values()]


def _read_note(history: History, ctx: Context) -> Finding:
    """What was read, as data: the first thing a reader checks before trusting the rest."""
    known = ctx.n_val or ctx.inferred
    unknown = [] if known else ["the val set size (--val-size N weighs the swings)"]
    unknown += [] if ctx.classes else ["the number of classes (--classes K gives chance level)"]
    lines = [history.describe(), *history.notes]
    return Finding(
        rule="read_note",
        severity="info",
        title=f"read {history.format}: {len(history.phases)} phase(s), {history.epochs} epoch(s)",
        evidence="; ".join(lines),
        fix=f"not known: {'; '.join(unknown)}" if unknown else "",
        numbers={"source": "log", "format": history.format, "notes": history.notes},
        strength=0.0,
    )


def _merge(found: list[Finding]) -> list[Finding]:
    """One finding per problem: the script's cause and the log's evidence of the same kind
    become one finding (the script's, with the log's numbers added to its evidence); a question
    about a kind the other source answered with a finding is dropped."""
    answered = {f.rule for f in found if f.severity != "info"}
    found = [f for f in found if not (f.rule == "question" and f.numbers.get("about") in answered)]
    by_rule: dict[str, Finding] = {}
    out: list[Finding] = []
    for f in found:
        if f.rule in ("question", "read_note", "script_read"):
            out.append(f)
            continue
        other = by_rule.get(f.rule)
        if other is None:
            by_rule[f.rule] = f
            out.append(f)
            continue
        script, log = (other, f) if other.numbers.get("source") == "script" else (f, other)
        merged = replace(
            script,
            evidence=f"{script.evidence}; the log: {log.evidence}",
            severity=min(script.severity, log.severity, key=SEVERITY_ORDER.index),
            strength=max(script.strength, log.strength),
        )
        out[out.index(other)] = merged
        by_rule[f.rule] = merged
    return out


def _command(report: ScriptReport | None, data: str | None) -> tuple[str, str]:
    if report is not None:
        from medfit.diagnose.foreign.script import medfit_command

        return medfit_command(report, data)
    return f"medfit train {data or 'DATA'}", "give --script to carry over the backbone"


def _data_grayscale(data: str) -> bool | None:
    """Whether the data's training images are grayscale (a sample of 8), for the augmentation
    rule; None when the folder cannot be indexed."""
    import numpy as np

    from medfit.config import DataConfig
    from medfit.data.dataset import load_index
    from medfit.data.decode import DecodeError, decode_image

    index = load_index(DataConfig(root=data), 0)
    train = index.split("train")
    seen = 0
    for sample in train[:: max(1, len(train) // 8)][:8]:
        try:
            pixels = decode_image(sample.path).pixels
        except (DecodeError, OSError):
            continue
        seen += 1
        if pixels.shape[2] == 3 and not (
            np.array_equal(pixels[..., 0], pixels[..., 1])
            and np.array_equal(pixels[..., 1], pixels[..., 2])
        ):
            return False
    return True if seen else None


def _check_data(data: str) -> list[Finding]:
    """`medfit check DATA` (thumbnail features: no model download) as findings."""
    from medfit.check import CheckOptions, run_check
    from medfit.config import DataConfig
    from medfit.data.dataset import load_index
    from medfit.diagnose.check_rules import check_findings_of

    report = run_check(load_index(DataConfig(root=data), 0), CheckOptions(features="thumbnail"))
    return [
        replace(f, numbers={**f.numbers, "source": "data"})
        for f in check_findings_of(report.to_dict())
    ]
