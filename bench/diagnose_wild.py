"""Score `medfit diagnose` on real published training runs against answer keys written blind.

    .venv/bin/python bench/diagnose_wild.py                      # every case, this tree
    .venv/bin/python bench/diagnose_wild.py --label after --save # ... and append to results
    .venv/bin/python bench/diagnose_wild.py --src /tmp/old --label before --save
    .venv/bin/python bench/diagnose_wild.py --case malaria --verbose

Cases: `bench/diagnose_wild/cases/<case>/` (log as published, SOURCE.yaml, key.yaml; script.py
where its licence allows) and the four runs in `../shared/fixtures/wild_runs/`, scored in place
with their keys in `bench/diagnose_wild/shared_keys/`. A script whose licence kept it out of the
repository is looked for in `bench/diagnose_wild/.cache/<case>/script.py` (git-ignored); without
it the case is scored on its log alone, and the table says so (`script` column).

Each case is one `medfit diagnose LOG... [--script S] --json OUT` in its own process (as a user
runs it: no --val-size, no --classes), timed, with its peak RSS. Scored (KEY_FORMAT.md):
- read: every phase/run of the key recovered with its epoch count, its columns and their
  first/last values, and no train/val loss or accuracy column that the key says is not there;
- findings: each non-info finding is mapped to a checklist kind (RULE_KINDS); the key's verdict
  for that kind makes it correct (present), wrong (absent) or debatable (unknown, or a finding
  no kind covers); precision = correct / all non-info findings. "question" findings (medfit says
  what it could not see) are counted apart, never as correct;
- found: the key's present kinds detectable from what medfit was given (the log; the script when
  it had one) that some finding names.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from machine_info import commit, cpu_description

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench" / "diagnose_wild"
SHARED_RUNS = ROOT.parent / "shared" / "fixtures" / "wild_runs"
RESULTS = ROOT / "bench" / "results" / "diagnose_wild.json"
NOT_LOGS = {"key.yaml", "SOURCE.yaml", "SOURCE.txt", "LICENSE.txt", "script.py", "args.yaml"}
CORE = {"train_loss", "train_acc", "val_loss", "val_acc"}

# medfit rule id -> checklist kind (KEY_FORMAT.md). Rules named after their kind map to it
# themselves; the others are listed. Info-level rules are never scored.
RULE_KINDS = {
    "finetune_lr": "finetune_lr_high",
    "aug_orientation": "aug_label_destroying",
    "class_weight_accuracy": "metric_mismatch",
    "epoch_time": "input_bound",
    "data_bound": "input_bound",
    "bn_small_batch": "bn_training_mode",
    "normalization": "input_scaling",
}
INFO_RULES = {"history_source", "script_elided", "question", "read_note"}


def kind_of(rule: str, kinds: set[str]) -> str | None:
    rule = RULE_KINDS.get(rule, rule)
    return rule if rule in kinds else None


@dataclass
class Case:
    name: str
    folder: Path
    key: dict[str, Any]
    logs: list[Path]
    script: Path | None
    script_where: str  # repo | cache | none


def _logs(folder: Path, source: dict[str, Any]) -> list[Path]:
    if source.get("log_files"):
        return [folder / f for f in source["log_files"]]
    return sorted(p for p in folder.iterdir() if p.name not in NOT_LOGS)


def find_cases(pattern: str | None, use_cache: bool) -> list[Case]:
    cases = []
    for key_path in sorted((HERE / "cases").glob("*/key.yaml")):
        folder = key_path.parent
        key = yaml.safe_load(key_path.read_text())
        source = yaml.safe_load((folder / "SOURCE.yaml").read_text()) or {}
        script, where = _script(folder.name, folder / "script.py", use_cache)
        cases.append(Case(folder.name, folder, key, _logs(folder, source), script, where))
    for key_path in sorted((HERE / "shared_keys").glob("*.yaml")):
        key = yaml.safe_load(key_path.read_text())
        folder = SHARED_RUNS / key_path.stem
        if not folder.is_dir():
            print(f"skip {key_path.stem}: {folder} not found", file=sys.stderr)
            continue
        script, where = _script(key_path.stem, None, use_cache)
        cases.append(Case(key_path.stem, folder, key, [folder / key["log"]], script, where))
    return [c for c in cases if pattern is None or pattern in c.name]


def _script(name: str, committed: Path | None, use_cache: bool) -> tuple[Path | None, str]:
    if committed is not None and committed.is_file():
        return committed, "repo"
    cached = HERE / ".cache" / name / "script.py"
    if use_cache and cached.is_file():
        return cached, "cache"
    return None, "none"


# --- running medfit -------------------------------------------------------------------------


def run_medfit(case: Case, src: Path, out: Path, python: str) -> dict[str, Any]:
    """One `medfit diagnose` process: exit code, wall s, peak RSS MB, stderr, the JSON."""
    argv = [python, "-m", "medfit", "diagnose", *map(str, case.logs), "--json", str(out)]
    if case.script is not None:
        argv += ["--script", str(case.script)]
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as std:
        proc = subprocess.Popen(argv, stdout=std, stderr=err, env=env, cwd=src)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        std.seek(0)
        stderr, stdout = err.read().decode(errors="replace"), std.read().decode(errors="replace")
    result = {
        "code": proc.returncode,
        "wall_s": wall,
        "rss_mb": usage.ru_maxrss / 1024,
        "stderr": stderr,
        "stdout": stdout,
        "json": json.loads(out.read_text()) if out.is_file() else None,
    }
    return result


def old_history(case: Case, src: Path, python: str) -> list[dict[str, Any]] | None:
    """For a medfit whose JSON carries no history (before this corpus existed): its own reader,
    one phase per run of consecutive epochs, as that reader presented the log."""
    code = (
        "import json,sys,math\n"
        "from medfit.diagnose.foreign import read_history\n"
        "h = read_history(sys.argv[1])\n"
        "out = []\n"
        "for seg in h.segments():\n"
        "    cols = {f: [getattr(r, f) for r in seg] for f in set(h.understood.values())}\n"
        "    cols = {k: [None if (x != x) else x for x in v] for k, v in cols.items()}\n"
        "    out.append({'epochs': [r.epoch for r in seg], 'values': cols})\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(
        [python, "-c", code, str(case.logs[0])], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- scoring --------------------------------------------------------------------------------

OLD_FIELDS = {"val_balanced_accuracy": "val_balanced_acc", "val_macro_f1": "val_f1"}


def _phases(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    doc = result["json"] or {}
    history = doc.get("history")
    if isinstance(history, dict):
        return list(history.get("phases") or [])
    return None


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    a, b = float(a), float(b)
    return math.isclose(a, b, rel_tol=2e-3, abs_tol=1e-6)


def read_errors(key: dict[str, Any], phases: list[dict[str, Any]] | None) -> list[str]:
    """What the reader got wrong against the key's `read` section; [] when read correctly."""
    if phases is None:
        return ["no history"]
    want = key.get("read") or []
    if len(phases) != len(want):
        counts = [len(p.get("epochs", [])) for p in phases]
        return [f"{len(want)} phase(s) in the key, {len(phases)} read (epochs {counts})"]
    errors = []
    for i, (w, got) in enumerate(zip(want, phases, strict=True), 1):
        values = {OLD_FIELDS.get(k, k): v for k, v in (got.get("values") or {}).items()}
        n = len(got.get("epochs", []))
        if n != w["epochs"]:
            errors.append(f"phase {i}: {w['epochs']} epochs in the key, {n} read")
            continue
        for col in w.get("columns", []):
            series = values.get(col)
            if series is None or not any(v is not None for v in series):
                errors.append(f"phase {i}: column {col} not read")
                continue
            for end, idx in (("first", 0), ("last", -1)):
                expect = (w.get(end) or {}).get(col)
                if expect is not None and not _close(series[idx], expect):
                    errors.append(f"phase {i}: {col} {end} {series[idx]} != {expect}")
        extra = sorted(
            c
            for c in CORE & set(values) - set(w.get("columns", []))
            if any(v is not None for v in values[c])
        )
        if extra:
            errors.append(
                f"phase {i}: read {', '.join(extra)}, which the log has no epoch value of"
            )
    return errors


@dataclass
class Score:
    case: str
    fmt: str
    script: str
    code: int
    traceback: bool
    read_ok: bool
    read_errors: list[str]
    correct: int
    wrong: int
    debatable: int
    questions: int
    found: int
    detectable: int
    wall_s: float
    rss_mb: float
    findings: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def score(case: Case, result: dict[str, Any], phases: list[dict[str, Any]] | None) -> Score:
    problems = case.key.get("problems") or {}
    kinds = set(problems)
    findings = (result["json"] or {}).get("findings") or []
    verdicts: dict[str, int] = {"correct": 0, "wrong": 0, "debatable": 0, "questions": 0}
    named: set[str] = set()
    shown = []
    for f in findings:
        rule, severity = str(f.get("rule")), str(f.get("severity"))
        if rule == "question":
            verdicts["questions"] += 1
            shown.append(f"?{(f.get('numbers') or {}).get('about', '')}")
            continue
        if severity == "info" or rule in INFO_RULES:
            continue
        kind = kind_of(rule, kinds)
        verdict = (problems.get(kind) or {}).get("verdict") if kind else None
        outcome = {"present": "correct", "absent": "wrong"}.get(str(verdict), "debatable")
        verdicts[outcome] += 1
        if outcome == "correct" and kind:
            named.add(kind)
        mark = {"correct": "+", "wrong": "-", "debatable": "~"}[outcome]
        shown.append(f"{mark}{rule}")
    sources = {"log"} | ({"script"} if case.script is not None else set())
    detectable = [
        k
        for k, p in problems.items()
        if (p or {}).get("verdict") == "present"
        and ((p or {}).get("source") in sources or (p or {}).get("source") == "both")
    ]
    errors = read_errors(case.key, phases)
    tb = result["code"] not in (0, 2) or "Traceback (most recent call last)" in result["stderr"]
    return Score(
        case=case.name,
        fmt=str(case.key.get("log_format", "?")),
        script=case.script_where,
        code=result["code"],
        traceback=tb,
        read_ok=not errors,
        read_errors=errors,
        correct=verdicts["correct"],
        wrong=verdicts["wrong"],
        debatable=verdicts["debatable"],
        questions=verdicts["questions"],
        found=len([k for k in detectable if k in named]),
        detectable=len(detectable),
        wall_s=round(result["wall_s"], 2),
        rss_mb=round(result["rss_mb"]),
        findings=shown,
        missed=sorted(k for k in detectable if k not in named),
    )


# --- the table --------------------------------------------------------------------------------


def totals(scores: list[Score]) -> dict[str, Any]:
    non_info = sum(s.correct + s.wrong + s.debatable for s in scores)
    detectable = sum(s.detectable for s in scores)
    walls = sorted(s.wall_s for s in scores)
    return {
        "cases": len(scores),
        "read_ok": sum(s.read_ok for s in scores),
        "tracebacks": sum(s.traceback for s in scores),
        "diagnosed": sum(s.code == 0 for s in scores),
        "correct": sum(s.correct for s in scores),
        "wrong": sum(s.wrong for s in scores),
        "debatable": sum(s.debatable for s in scores),
        "questions": sum(s.questions for s in scores),
        "precision": round(sum(s.correct for s in scores) / non_info, 3) if non_info else None,
        "found": sum(s.found for s in scores),
        "detectable": detectable,
        "recall": round(sum(s.found for s in scores) / detectable, 3) if detectable else None,
        "wall_s_median": walls[len(walls) // 2] if walls else None,
        "wall_s_max": walls[-1] if walls else None,
        "rss_mb_max": max((s.rss_mb for s in scores), default=None),
    }


def print_table(scores: list[Score], verbose: bool) -> None:
    head = f"{'case':42s} {'format':19s} {'scr':5s} {'rc':>2s} {'read':4s} "
    head += f"{'+':>2s} {'-':>2s} {'~':>2s} {'?':>2s} {'found':>5s} {'s':>5s} {'MB':>5s}"
    print(head)
    for s in scores:
        read = "ok" if s.read_ok else "NO"
        print(
            f"{s.case[:42]:42s} {s.fmt[:19]:19s} {s.script:5s} {s.code:2d} {read:4s} "
            f"{s.correct:2d} {s.wrong:2d} {s.debatable:2d} {s.questions:2d} "
            f"{s.found:2d}/{s.detectable:<2d} {s.wall_s:5.1f} {s.rss_mb:5.0f}"
            + ("  TRACEBACK" if s.traceback else "")
        )
        if verbose:
            print(f"    findings: {' '.join(s.findings) or '-'}")
            if s.missed:
                print(f"    missed:   {' '.join(s.missed)}")
            for e in s.read_errors:
                print(f"    read: {e}")
    t = totals(scores)
    print(
        f"\n{t['cases']} cases: read correctly {t['read_ok']}/{t['cases']}, tracebacks "
        f"{t['tracebacks']}, diagnosed (exit 0) {t['diagnosed']}; findings {t['correct']} "
        f"correct / {t['wrong']} wrong / {t['debatable']} debatable (precision {t['precision']}), "
        f"{t['questions']} questions; key problems found {t['found']}/{t['detectable']} "
        f"(recall {t['recall']}); wall median {t['wall_s_median']} s (max {t['wall_s_max']}), "
        f"peak RSS max {t['rss_mb_max']} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--src", default=str(ROOT), help="the medfit source tree to score")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--case", help="only cases whose name contains this")
    ap.add_argument("--no-scripts", action="store_true", help="score every case on its log alone")
    ap.add_argument("--label", default="", help="a name for this row in the results file")
    ap.add_argument("--save", action="store_true", help=f"append the result to {RESULTS}")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    src = Path(args.src).resolve()
    cases = find_cases(args.case, not args.no_scripts)
    scores = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            result = run_medfit(case, src, Path(tmp) / f"{case.name}.json", args.python)
            phases = _phases(result)
            if phases is None and result["json"] is not None:
                phases = old_history(case, src, args.python)
            scores.append(score(case, result, phases))
            if args.verbose and scores[-1].traceback:
                print(result["stderr"][-2000:], file=sys.stderr)
    print_table(scores, args.verbose)
    if args.save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
        rows.append(
            {
                "label": args.label,
                "date": dt.datetime.now().isoformat(timespec="seconds"),
                "commit": commit(src),
                "cpu": cpu_description(),
                "scripts": not args.no_scripts,
                "totals": totals(scores),
                "cases": [asdict(s) for s in scores],
            }
        )
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
