"""`diagnose_run`: read the run, apply every rule, optionally probe the checkpoint, rank, save."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medfit.diagnose.findings import Diagnosis, Finding, rank, render
from medfit.diagnose.own.facts import RunFacts, read_run_facts
from medfit.diagnose.own.fit_rules import fit_findings
from medfit.diagnose.own.history_rules import not_applicable, run_rules
from medfit.diagnose.own.probe_rules import aug_destroys_signal, bn_mismatch
from medfit.progress import Log
from medfit.rundir import RunDir

if TYPE_CHECKING:
    from medfit.diagnose.own.probes import ProbeResults


def diagnose_run(
    run_dir: str | Path,
    probes: bool = True,
    log: Log = print,
    json_path: str | Path | None = None,
    device: str = "auto",
) -> Diagnosis:
    """Ranked findings for RUN, printed through `log` and saved to RUN/diagnosis.json (or
    `json_path`). `probes=False` skips loading the checkpoint (history and config only)."""
    facts = read_run_facts(run_dir)
    probe_record: dict[str, object] = {"skipped": "--no-probes"}
    result = None
    if probes:
        from medfit.diagnose.own.probes import run_probes

        result = run_probes(facts, log=_quiet(log), device=device)
        probe_record = result.to_dict()
        if result.skipped:
            log(f"probes skipped: {result.skipped}")
    diagnosis = Diagnosis(
        facts.path, all_findings(facts, result), probe_record, not_applicable(facts)
    )
    out = diagnosis.write(Path(json_path) if json_path else RunDir(facts.path).diagnosis)
    log(render(diagnosis))
    if diagnosis.not_applicable:
        log(f"not applied to this multi-label run: {', '.join(diagnosis.not_applicable)}")
    log(f"saved {out}")
    return diagnosis


def all_findings(facts: RunFacts, result: ProbeResults | None = None) -> list[Finding]:
    """Every rule on one run, ranked: history and config, fit (probe-measured when `result` has
    it, else from the history), and the probe rules."""
    found = run_rules(facts) + fit_findings(facts, result)
    return rank(found + (probe_findings(result) if result else []))


def probe_findings(result: ProbeResults) -> list[Finding]:
    """The probe rules applied to one probe record (fresh, or read back from diagnosis.json)."""
    return [f for f in (bn_mismatch(result.bn), aug_destroys_signal(result.aug)) if f]


def _quiet(log: Log) -> Log:
    """Probe decoding logs only warnings (skipped files) and the probes' own progress lines,
    not the cache's."""
    return lambda line: log(line) if line.startswith(("warning", "  probes:")) else None
