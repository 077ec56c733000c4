"""MLflow logging from the run directory, read back from a local SQLite-backed store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from medfit.errors import MedfitError
from medfit.training.mlflow_export import log_run_to_mlflow
from medfit.training.seeds import seed_row, summarize, write_seeds_json
from tests.deploy_helpers import copy_run

EXPERIMENT = "medfit-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    """A SQLite tracking store (created once: MLflow's migrations take seconds) and its client."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'medfit[mlflow]')")
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    # Artifacts under the temp dir (MLflow's default would be ./mlruns in the working directory).
    client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    return uri, client


def add_eval(run: Path) -> dict[str, Any]:
    """An eval_test.json shaped as medfit.evaluate.runner writes it, and a report.html."""
    result = {
        "split": "test",
        "n_images": 16,
        "calibration": {"temperature": 1.25},
        "metrics": {"accuracy": 0.8125, "balanced_accuracy": 0.8, "auc": 0.9, "ci95": {}},
    }
    (run / "eval_test.json").write_text(json.dumps(result))
    (run / "report.html").write_text("<html></html>")
    return result


def test_a_run_is_logged_from_its_directory(
    store: tuple[str, Any], run: Path, tmp_path: Path
) -> None:
    uri, client = store
    run = copy_run(run, tmp_path / "run")
    add_eval(run)
    run_id = log_run_to_mlflow(run, uri, experiment=EXPERIMENT)

    logged = client.get_run(run_id)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert logged.data.params["train.lr"] == str(config["train"]["lr"])
    assert logged.data.params["model.name"] == config["model"]["name"]
    assert logged.data.params["data.img_size"] == str(config["data"]["img_size"])

    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val_acc"]) for r in epochs]

    summary = json.loads((run / "summary.json").read_text())
    assert logged.data.metrics["summary.best_metric"] == pytest.approx(summary["best_metric"])
    assert logged.data.metrics["summary.final.val_acc"] == pytest.approx(
        summary["final"]["val_acc"]
    )
    assert logged.data.metrics["eval.test.accuracy"] == pytest.approx(0.8125)
    assert logged.data.metrics["eval.test.temperature"] == pytest.approx(1.25)

    assert logged.data.tags["medfit.run_dir"] == str(run.resolve())
    assert logged.data.tags["medfit.model"] == summary["model"]
    assert logged.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "summary.json", "report.html", "eval_test.json"} <= artifacts


def test_an_unfinished_run_is_logged_as_killed(
    store: tuple[str, Any], run: Path, tmp_path: Path
) -> None:
    uri, client = store
    run = copy_run(run, tmp_path / "run")
    (run / "summary.json").unlink()
    run_id = log_run_to_mlflow(run, uri, experiment=EXPERIMENT)
    logged = client.get_run(run_id)
    assert logged.info.status == "KILLED" and logged.data.tags["medfit.finished"] == "false"
    assert client.get_metric_history(run_id, "train_loss")


def test_seeds_become_a_parent_run_with_one_child_per_seed(
    store: tuple[str, Any], run: Path, tmp_path: Path
) -> None:
    uri, client = store
    out = tmp_path / "seeds"
    rows = []
    for seed in (3, 4):
        copy_run(run, out / f"seed{seed}")
        rows.append(seed_row(out / f"seed{seed}", seed, "trained"))
    rows[1]["final_val_acc"] = rows[0]["final_val_acc"] - 0.1  # a spread to aggregate
    result = summarize(out, rows)
    write_seeds_json(result, base_seed=3)

    parent_id = log_run_to_mlflow(out, uri, experiment=EXPERIMENT)

    parent = client.get_run(parent_id)
    assert parent.data.metrics["mean.final_val_acc"] == pytest.approx(result.mean["final_val_acc"])
    assert parent.data.metrics["sd.final_val_acc"] == pytest.approx(0.1 / 2**0.5)
    assert "seeds.json" in {a.path for a in client.list_artifacts(parent_id)}
    experiment = client.get_experiment_by_name(EXPERIMENT)
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert sorted(c.data.tags["seed"] for c in children) == ["3", "4"]
    assert {c.data.tags["medfit.run_dir"] for c in children} == {
        str((out / "seed3").resolve()),
        str((out / "seed4").resolve()),
    }


def test_not_a_run_dir_is_one_clear_error(store: tuple[str, Any], tmp_path: Path) -> None:
    uri, _ = store
    with pytest.raises(MedfitError, match="not a medfit run directory"):
        log_run_to_mlflow(tmp_path, uri, experiment=EXPERIMENT)


def test_missing_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # import fails as if not installed
    with pytest.raises(MedfitError, match=r"medfit\[mlflow\]"):
        log_run_to_mlflow(tmp_path, "sqlite:///unused.db")
