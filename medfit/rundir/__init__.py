"""The run directory: the contract between train, eval, predict and export.

RUN/config.yaml               resolved config (re-run with --config)
RUN/classes.json              class names in label order
RUN/preprocess.json           size, mean/std, interpolation from the weights' config
RUN/split.csv                 which file went to which split (and any skipped file)
RUN/metrics.jsonl|csv         one row per epoch (`EpochRow`)
RUN/summary.json              the outcome in a few numbers (`Summary`)
RUN/checkpoints/              best.pt (selected weights), last.pt (everything needed to resume)
RUN/tb/                       TensorBoard events
RUN/lr_find_<stage>.png       the LR range test, when --lr auto ran it
RUN/calibration.json          the temperature `medfit eval` fitted on val
RUN/eval_<split>.json         `medfit eval` metrics; predictions_<split>.csv its per-image output
RUN/check.json                `medfit check DATA --out RUN`
RUN/diagnosis.json            `medfit diagnose RUN`
RUN/report.html               `medfit report RUN`
OUT/seeds.json                `--seeds N`: per-seed table, mean and sd (OUT holds seed<k>/ runs)
OUT/seeds_config.yaml         `--seeds N`: the config as requested

Every file is written here and read here, with one policy: an absent optional file reads as
None or [], a file that exists but cannot be parsed is a one-line MedfitError naming it and the
command that writes it again. The one exception is a torn last line of metrics.jsonl (a run
killed mid-write by an older medfit or a copy): it is skipped, the epochs before it stand.

Modules: `records` (the typed records), `io` (reading with one error policy), `layout` (RunDir:
paths, reading, writing, the lock).
"""

from __future__ import annotations

from medfit.rundir.io import read_json, read_run_text
from medfit.rundir.layout import (
    RunDir,
    existing_run_dir,
    fresh_run_dir,
    last_locked_run,
)
from medfit.rundir.records import (
    METRIC_KEYS,
    MIN_CALIBRATION_IMAGES,
    EpochRow,
    PredictionRow,
    SplitRow,
    Summary,
)

__all__ = [
    "METRIC_KEYS",
    "MIN_CALIBRATION_IMAGES",
    "EpochRow",
    "PredictionRow",
    "RunDir",
    "SplitRow",
    "Summary",
    "existing_run_dir",
    "fresh_run_dir",
    "last_locked_run",
    "read_json",
    "read_run_text",
]
