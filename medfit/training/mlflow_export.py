"""Log a finished run directory to MLflow, after the fact.

The run directory is the contract: everything MLflow gets is read from it (config.yaml,
metrics.jsonl, summary.json, eval_*.json), so logging adds nothing to the training loop and works
the same for finished, resumed and distributed runs, and for runs trained long before.

    log_run_to_mlflow("runs/blood", "sqlite:///mlflow.db")          # one MLflow run
    log_run_to_mlflow("runs/blood-seeds", "http://mlflow:5000")     # OUT of `--seeds N`: a parent
                                                                    # run + one child per seed

Needs the optional extra: pip install "medfit[mlflow]".
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from medfit.errors import MedfitError
from medfit.rundir import EpochRow, RunDir, Summary, read_run_text

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows seeds under the parent
# Per-epoch columns that are not metrics (epoch is the step; stage is a tag of the phase).
_NOT_METRICS = {"epoch", "stage"}
_BATCH = 100  # MLflow accepts at most 100 params or tags and 1000 metrics per log_batch call
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")  # characters MLflow rejects in names


def log_run_to_mlflow(
    run_dir: str | Path, uri: str, experiment: str = "medfit", tags: dict[str, str] | None = None
) -> str:
    """Log RUN (or the OUT of a seeds run) to the tracking server at URI; return the run id."""
    run = RunDir(Path(run_dir).expanduser())
    client = _client(uri)
    experiment_id = _experiment_id(client, experiment, uri)
    if run.seeds.is_file() and not run.config.is_file():
        return _log_seeds(client, experiment_id, run, tags or {})
    if not run.config.is_file():
        raise MedfitError(
            f"{run.path} is not a medfit run directory (no {run.config.name} nor {run.seeds.name})"
        )
    return _log_one(client, experiment_id, run, tags or {})


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MedfitError(
            'MLflow logging needs the mlflow package: pip install "medfit[mlflow]"'
        ) from None
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_experiment_by_name(name)
        return str(found.experiment_id if found else client.create_experiment(name))
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedfitError(f"could not use MLflow at {uri}: {first}") from None


def _log_one(client: Any, experiment_id: str, run: RunDir, tags: dict[str, str]) -> str:
    summary = run.read_summary()
    run_tags = {
        "medfit.run_dir": str(run.path.resolve()),
        "mlflow.runName": run.path.name,
        "mlflow.source.name": "medfit",
        "medfit.finished": str(summary is not None).lower(),
        **_summary_tags(summary),
        **tags,
    }
    created = client.create_run(experiment_id, tags=run_tags)
    run_id = str(created.info.run_id)
    params = _flatten(yaml.safe_load(read_run_text(run.config) or "") or {})
    metrics = [*_epoch_metrics(run.read_history()), *_summary_metrics(summary)]
    metrics += _eval_metrics(run)
    _log_batches(client, run_id, params, metrics)
    artifacts = [run.config, run.summary, run.metrics_csv, run.report, run.seeds]
    _log_artifacts(client, run_id, [*artifacts, *_eval_files(run)])
    # A run dir without summary.json stopped before its end (crashed, killed, still training).
    client.set_terminated(run_id, "FINISHED" if summary is not None else "KILLED")
    return run_id


def _log_seeds(client: Any, experiment_id: str, out: RunDir, tags: dict[str, str]) -> str:
    """A parent run with the mean/sd over seeds, and one child run per seed dir."""
    seeds = out.read_json(out.seeds)
    if not isinstance(seeds, dict):
        raise MedfitError(f"{out.seeds}: expected the JSON object `medfit train --seeds` writes")
    parent_tags = {
        "medfit.run_dir": str(out.path.resolve()),
        "mlflow.runName": out.path.name,
        "mlflow.source.name": "medfit",
        "medfit.seeds": str(seeds["n"]),
        **tags,
    }
    parent = client.create_run(experiment_id, tags=parent_tags)
    parent_id = str(parent.info.run_id)
    config = out.seeds_config
    params = _flatten(yaml.safe_load(read_run_text(config) or "") or {})
    metrics = [
        _metric(f"{stat}.{key}", value, 0)
        for stat in ("mean", "sd")
        for key, value in seeds[stat].items()
        if _is_number(value)
    ]
    _log_batches(client, parent_id, params, metrics)
    _log_artifacts(client, parent_id, [out.seeds, out.seeds_config])
    for row in seeds["seeds"]:
        child_tags = {PARENT_TAG: parent_id, "seed": str(row["seed"]), **tags}
        _log_one(client, experiment_id, RunDir(out.path / row["dir"]), child_tags)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def _summary_tags(summary: Summary | None) -> dict[str, str]:
    if summary is None:
        return {}
    keys = ("model", "weights", "selected_metric", "device")
    return {f"medfit.{k}": str(getattr(summary, k)) for k in keys}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.003}} -> {"train.lr": 0.003}; MLflow-invalid characters -> _."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        name = _BAD_KEY.sub("_", str(key))
        flat.update(_flatten(inner, f"{prefix}.{name}" if prefix else name))
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric(key: str, value: float, step: int) -> Any:
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


def _epoch_metrics(history: list[EpochRow]) -> list[Any]:
    """Every numeric column of metrics.jsonl, with step = epoch (1-based, as printed)."""
    return [
        _metric(key, value, row.epoch)
        for row in history
        for key, value in row.to_dict().items()
        if key not in _NOT_METRICS and _is_number(value)
    ]


def _summary_metrics(summary: Summary | None) -> list[Any]:
    """summary.json numbers as `summary.<key>`: apart from per-epoch names like `compute_s`."""
    flat = _flatten(summary.to_dict() if summary else {}, "summary")
    return [_metric(key, value, 0) for key, value in flat.items() if _is_number(value)]


def _eval_files(run: RunDir) -> list[Path]:
    return sorted(run.eval_json(split) for split in run.eval_splits())


def _eval_metrics(run: RunDir) -> list[Any]:
    """eval_<split>.json headline metrics and calibration as `eval.<split>.<name>`."""
    metrics = []
    for split in run.eval_splits():
        result = run.read_json(run.eval_json(split)) or {}
        scores = {
            key: value for key, value in result.get("metrics", {}).items() if _is_number(value)
        }
        scores["temperature"] = result.get("calibration", {}).get("temperature")
        scores["n_images"] = result.get("n_images")
        flat = _flatten(scores, f"eval.{_BAD_KEY.sub('_', split)}")
        metrics += [_metric(k, v, 0) for k, v in flat.items() if _is_number(v)]
    return metrics


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _log_batches(client: Any, run_id: str, params: dict[str, Any], metrics: list[Any]) -> None:
    from mlflow.entities import Param

    # NaN is stored by MLflow but breaks its plots; a missing point is the honest record.
    metrics = [m for m in metrics if math.isfinite(m.value)]
    param_list = [Param(k, str(v)) for k, v in params.items()]
    for chunk in _chunks(param_list, _BATCH):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, 10 * _BATCH):
        client.log_batch(run_id, metrics=chunk)


def _log_artifacts(client: Any, run_id: str, paths: list[Path]) -> None:
    for path in dict.fromkeys(paths):  # unique, in order
        if path.is_file():
            client.log_artifact(run_id, str(path))
