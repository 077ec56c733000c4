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

import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from medfit.errors import MedfitError
from medfit.training.seeds import SEEDS_FILE

ARTIFACTS = ("config.yaml", "summary.json", "metrics.csv", "report.html", SEEDS_FILE)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows seeds under the parent
# Per-epoch columns that are not metrics (epoch is the step; stage is a tag of the phase).
_NOT_METRICS = {"epoch", "stage"}
_BATCH = 100  # MLflow accepts at most 100 params or tags and 1000 metrics per log_batch call
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")  # characters MLflow rejects in names


def log_run_to_mlflow(
    run_dir: str | Path, uri: str, experiment: str = "medfit", tags: dict[str, str] | None = None
) -> str:
    """Log RUN (or the OUT of a seeds run) to the tracking server at URI; return the run id."""
    path = Path(run_dir).expanduser()
    client = _client(uri)
    experiment_id = _experiment_id(client, experiment, uri)
    if (path / SEEDS_FILE).is_file() and not (path / "config.yaml").is_file():
        return _log_seeds(client, experiment_id, path, tags or {})
    if not (path / "config.yaml").is_file():
        raise MedfitError(f"{path} is not a medfit run directory (no config.yaml nor {SEEDS_FILE})")
    return _log_one(client, experiment_id, path, tags or {})


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


def _log_one(client: Any, experiment_id: str, path: Path, tags: dict[str, str]) -> str:
    summary = _read_json(path / "summary.json")
    run_tags = {
        "medfit.run_dir": str(path.resolve()),
        "mlflow.runName": path.name,
        "mlflow.source.name": "medfit",
        "medfit.finished": str(summary is not None).lower(),
        **_summary_tags(summary or {}),
        **tags,
    }
    run = client.create_run(experiment_id, tags=run_tags)
    run_id = str(run.info.run_id)
    params = _flatten(yaml.safe_load((path / "config.yaml").read_text()) or {})
    metrics = [*_epoch_metrics(path / "metrics.jsonl"), *_summary_metrics(summary or {})]
    metrics += _eval_metrics(path)
    _log_batches(client, run_id, params, metrics)
    _log_artifacts(client, run_id, path, [*ARTIFACTS, *(p.name for p in _eval_files(path))])
    # A run dir without summary.json stopped before its end (crashed, killed, still training).
    client.set_terminated(run_id, "FINISHED" if summary is not None else "KILLED")
    return run_id


def _log_seeds(client: Any, experiment_id: str, out: Path, tags: dict[str, str]) -> str:
    """A parent run with the mean/sd over seeds, and one child run per seed dir."""
    seeds = json.loads((out / SEEDS_FILE).read_text())
    parent_tags = {
        "medfit.run_dir": str(out.resolve()),
        "mlflow.runName": out.name,
        "mlflow.source.name": "medfit",
        "medfit.seeds": str(seeds["n"]),
        **tags,
    }
    parent = client.create_run(experiment_id, tags=parent_tags)
    parent_id = str(parent.info.run_id)
    config = out / "seeds_config.yaml"
    params = _flatten(yaml.safe_load(config.read_text()) or {}) if config.is_file() else {}
    metrics = [
        _metric(f"{stat}.{key}", value, 0)
        for stat in ("mean", "sd")
        for key, value in seeds[stat].items()
        if _is_number(value)
    ]
    _log_batches(client, parent_id, params, metrics)
    _log_artifacts(client, parent_id, out, [SEEDS_FILE, "seeds_config.yaml"])
    for row in seeds["seeds"]:
        child_tags = {PARENT_TAG: parent_id, "seed": str(row["seed"]), **tags}
        _log_one(client, experiment_id, out / row["dir"], child_tags)
    client.set_terminated(parent_id, "FINISHED")
    return parent_id


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _summary_tags(summary: dict[str, Any]) -> dict[str, str]:
    keys = ("model", "weights", "selected_metric", "device")
    return {f"medfit.{k}": str(summary[k]) for k in keys if k in summary}


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


def _epoch_metrics(path: Path) -> list[Any]:
    """Every numeric column of metrics.jsonl, with step = epoch (1-based, as printed)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        _metric(key, value, int(row["epoch"]))
        for row in rows
        for key, value in row.items()
        if key not in _NOT_METRICS and _is_number(value)
    ]


def _summary_metrics(summary: dict[str, Any]) -> list[Any]:
    """summary.json numbers as `summary.<key>`: apart from per-epoch names like `compute_s`."""
    flat = _flatten(summary, "summary")
    return [_metric(key, value, 0) for key, value in flat.items() if _is_number(value)]


def _eval_files(path: Path) -> list[Path]:
    return sorted(path.glob("eval_*.json"))


def _eval_metrics(path: Path) -> list[Any]:
    """eval_<split>.json headline metrics and calibration as `eval.<split>.<name>`."""
    metrics = []
    for file in _eval_files(path):
        result = json.loads(file.read_text())
        split = file.stem.removeprefix("eval_")
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


def _log_artifacts(client: Any, run_id: str, path: Path, names: list[str]) -> None:
    for name in dict.fromkeys(names):  # unique, in order
        if (path / name).is_file():
            client.log_artifact(run_id, str(path / name))
