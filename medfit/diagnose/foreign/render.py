"""The foreign diagnosis for a terminal and as a self-contained HTML page."""

from __future__ import annotations

from html import escape

from medfit.diagnose.foreign.run import ForeignDiagnosis

COLOUR = {"high": "#c62828", "medium": "#ef6c00", "low": "#546e7a", "info": "#90a4ae"}


def render_foreign(diagnosis: ForeignDiagnosis) -> str:
    """What was read, then the findings (most serious first), questions last, then the command."""
    questions = [f for f in diagnosis.findings if f.rule == "question"]
    findings = [f for f in diagnosis.findings if f.rule != "question"]
    lines = [f"diagnosis of {diagnosis.source}: {len(findings)} finding(s)"]
    for i, f in enumerate(findings, 1):
        lines.append(f"{i}. [{f.severity}] {f.title}  ({f.rule})")
        lines.append(f"   evidence: {f.evidence}")
        if f.numbers.get("why"):
            lines.append(f"   why: {f.numbers['why']}")
        if f.fix:
            lines.append(f"   fix: {f.fix}")
        if f.numbers.get("medfit"):
            lines.append(f"   medfit: {f.numbers['medfit']}")
    if diagnosis.script_notes:
        lines.append("script: " + "; ".join(diagnosis.script_notes))
    if questions:
        lines.append("questions (medfit could not see; the answer decides):")
        lines += [
            f"   ? {q.title} — {q.evidence}" + (f" ({q.fix})" if q.fix else "") for q in questions
        ]
    lines.append("train it with medfit:")
    lines.append(f"   {diagnosis.command}")
    if diagnosis.command_note:
        lines.append(f"   ({diagnosis.command_note})")
    return "\n".join(lines)


def render_html(diagnosis: ForeignDiagnosis) -> str:
    """A self-contained page: the same list, severity-coloured, and the command."""
    items = []
    for f in diagnosis.findings:
        extra = "".join(
            f"<div><b>{label}:</b> {escape(str(f.numbers[key]))}</div>"
            for label, key in (("why", "why"), ("medfit", "medfit"))
            if f.numbers.get(key)
        )
        items.append(
            f'<li><span style="color:{COLOUR[f.severity]}"><b>[{f.severity}]</b></span> '
            f"<b>{escape(f.title)}</b> <code>{escape(f.rule)}</code>"
            f"<div><b>evidence:</b> {escape(f.evidence)}</div>"
            + (f"<div><b>fix:</b> {escape(f.fix)}</div>" if f.fix else "")
            + f"{extra}</li>"
        )
    return (
        "<!doctype html><meta charset='utf-8'><title>medfit diagnose</title>"
        "<body style='font-family:sans-serif;max-width:60em'>"
        f"<h1>medfit diagnose: {escape(str(diagnosis.source))}</h1><ol>{''.join(items)}</ol>"
        f"<h2>Train it with medfit</h2><pre>{escape(diagnosis.command)}</pre>"
        f"<p>{escape(diagnosis.command_note)}</p></body>\n"
    )
