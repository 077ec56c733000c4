"""`refresh_report`: rewrite RUN/report.html after train, eval or diagnose changed the run."""

from __future__ import annotations

from pathlib import Path

from medfit.progress import Log


def refresh_report(run: str | Path, gradcam: bool, log: Log = print) -> None:
    """Rewrite RUN/report.html after train/eval/diagnose; never fails the command that ran.

    The report is a view of the run directory: if it cannot be written, the run's own files are
    intact and `medfit report RUN` says why.
    """
    from medfit.report.html import write_report

    try:
        path = write_report(run, log=lambda _: None, gradcam=gradcam)
    except Exception as exc:
        log(f"warning: report.html not written ({exc}); run `medfit report {run}`")
    else:
        log(f"report: {path}")
