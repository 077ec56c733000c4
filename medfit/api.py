"""The Python face of medfit; the CLI is a thin layer over these calls.

import medfit
run = medfit.train("DATA", out="runs/blood", img_size=128, epochs=10)
model = medfit.load(run.dir)                  # medfit.inference.Predictor
result = model.predict(["a.png", "b.png"])   # result.labels, result.probs

Training is imported inside `train` and `resume`: loading a model for prediction never imports
it (`medfit.load` is `medfit.inference.load`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfit.config import RunConfig, flat_to_dotted
from medfit.inference import Predictions, Predictor, load
from medfit.rundir import existing_run_dir

if TYPE_CHECKING:
    from medfit.training.fit import RunResult

# The loaded-run object was called Classifier before inference had one home; the name stays.
Classifier = Predictor

__all__ = ["Classifier", "Predictions", "Predictor", "load", "resume", "train"]


def train(
    data_dir: str | Path,
    out: str = "runs/run",
    config: str | Path | None = None,
    log: Callable[[str], None] = print,
    report: bool = True,
    **options: Any,
) -> RunResult:
    """Fine-tune on DATA_DIR (train/<class>/..., val/<class>/...); returns the finished run,
    with RUN/report.html written as `medfit train` writes it (`report=False`: skip it)."""
    from medfit.training.fit import fit

    cfg = RunConfig.load(Path(config)) if config else RunConfig()
    cfg.override(flat_to_dotted(options))
    cfg.data.root = str(data_dir)
    cfg.out = str(out)
    result = fit(cfg, log=log)
    if report and result.is_main:
        from medfit.report.refresh import refresh_report

        refresh_report(result.dir, gradcam=False, log=log)
    return result


def resume(run_dir: str | Path, log: Callable[[str], None] = print) -> RunResult:
    """Continue an interrupted run from RUN/checkpoints/last.pt."""
    from medfit.training.fit import fit

    run = existing_run_dir(str(run_dir))
    return fit(RunConfig.load(run.config), resume_dir=str(run.path), log=log)
