"""Multi-seed runs: the aggregate over seeds, continuing an interrupted set, the report section."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from medfit.config import RunConfig, flat_to_dotted
from medfit.errors import ConfigError, MedfitError
from medfit.rundir.jobs import seeds_section
from medfit.training.seeds import resume_seeds, summarize, train_seeds
from tests.test_train import FAST, make_dataset

# Two full epochs so that a run can be interrupted after the first and resumed.
OPTIONS = {**FAST, "head_epochs": 0, "epochs": 2}


class Stop(Exception):
    """Stands in for a crash (kill, power cut) in the middle of a seed's training."""


def make_config(tmp_path: Path, **changes: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.override(flat_to_dotted({**OPTIONS, **changes}))
    cfg.data.root = str(tmp_path / "data")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.out = str(tmp_path / "out")
    return cfg


def stop_in_seed_1_epoch_2(lines: list[str]) -> Any:
    """A log that records lines and raises at seed 1's second epoch line.

    fit logs an epoch's line before it saves last.pt, so seed 1 is left with epoch 1 saved.
    """

    def log(line: str) -> None:
        lines.append(line)
        in_seed_1 = any(x.startswith("medfit seeds: seed 1 ") for x in lines)
        if in_seed_1 and line.startswith("epoch  2/2"):
            raise Stop

    return log


def expected_stats(out: Path, key: str, seeds: list[int]) -> tuple[float, float]:
    """Mean and sd (ddof=1) of a metric computed straight from each seed's run files."""
    values = []
    for seed in seeds:
        summary = json.loads((out / f"seed{seed}" / "summary.json").read_text())
        rows = (out / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
        history = {json.loads(r)["epoch"]: json.loads(r) for r in rows}
        values.append(
            {
                "final_val_acc": summary["final"]["val_acc"],
                "best_val_balanced_accuracy": history[summary["best_epoch"]][
                    "val_balanced_accuracy"
                ],
                "selection_score": summary["best_metric"],
                "wall_s": summary["wall_s"],
            }[key]
        )
    return statistics.mean(values), statistics.stdev(values)


def test_seeds_aggregate_and_an_interrupted_set_continues(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", per_class=8)
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(Stop):
        train_seeds(make_config(tmp_path), 2, log=stop_in_seed_1_epoch_2(lines))
    assert (out / "seed0" / "summary.json").is_file()
    assert (out / "seed1" / "checkpoints" / "last.pt").is_file()
    assert not (out / "seed1" / "summary.json").exists()
    assert not (out / "seeds.json").exists()

    lines = []
    result = resume_seeds(out, 2, log=lines.append)

    assert [r["status"] for r in result.rows] == ["reused", "resumed"]
    assert any("resuming after epoch 1" in line for line in lines)
    history = (out / "seed1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in history] == [1, 2]
    for seed in (0, 1):
        saved = yaml.safe_load((out / f"seed{seed}" / "config.yaml").read_text())
        assert saved["train"]["seed"] == seed

    saved = json.loads((out / "seeds.json").read_text())
    assert saved["n"] == 2 and [r["seed"] for r in saved["seeds"]] == [0, 1]
    for key in ("final_val_acc", "best_val_balanced_accuracy", "selection_score", "wall_s"):
        mean, sd = expected_stats(out, key, [0, 1])
        assert saved["mean"][key] == pytest.approx(mean), key
        assert saved["sd"][key] == pytest.approx(sd), key
    table = "\n".join(lines)
    assert "  mean " in table and "    sd " in table and "(resumed)" in table

    section = seeds_section(out / "seed1")
    assert section is not None and section.this_seed == 1
    assert section.mean == saved["mean"] and len(section.rows) == 2
    whole = seeds_section(out)
    assert whole is not None and whole.this_seed is None
    assert seeds_section(tmp_path) is None

    # The same options again (another worker count: speed, not results) reuse both seeds ...
    again = train_seeds(make_config(tmp_path, workers=1), 2, log=lines.append)
    assert [r["status"] for r in again.rows] == ["reused", "reused"]
    assert again.mean == pytest.approx(result.mean, nan_ok=True)
    # ... while other options on the same OUT would mix two configs in one spread.
    with pytest.raises(ConfigError, match="different config"):
        train_seeds(make_config(tmp_path, lr=1e-3), 3, log=lines.append)


def test_a_foreign_folder_in_a_seed_dir_is_not_deleted(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    notes = tmp_path / "out" / "seed0" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    with pytest.raises(MedfitError, match=r"notes\.txt"):
        train_seeds(cfg, 1, log=lambda _: None)
    assert notes.read_text() == "mine"


def test_seeds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--seeds"):
        train_seeds(make_config(tmp_path), 0, log=lambda _: None)


def _row(seed: int, score: float) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": seed, "selected_metric": "accuracy", "val_images": 200}
    row |= {"best_epoch": 3, "selection_score": score, "wall_s": 10.0}
    return row


def test_summary_math_and_the_seed_noise_note(tmp_path: Path) -> None:
    noisy = summarize(tmp_path, [_row(0, 0.80), _row(1, 0.84), _row(2, 0.88)])
    assert noisy.mean["selection_score"] == pytest.approx(0.84)
    assert noisy.sd["selection_score"] == pytest.approx(0.04)  # ddof=1, not 0.0327 (ddof=0)
    assert noisy.note is not None and "4.0 points" in noisy.note and "200 val images" in noisy.note

    calm = summarize(tmp_path, [_row(0, 0.840), _row(1, 0.845)])
    assert calm.note is None

    single = summarize(tmp_path, [_row(0, 0.84)])
    assert single.sd["selection_score"] is None and single.note is None


def test_cli_seeds_writes_a_report_per_seed_and_logs_to_mlflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfit import cli

    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns

    make_dataset(tmp_path / "data", per_class=16)
    out, db = tmp_path / "out", tmp_path / "mlflow.db"
    mlflow = ["--mlflow", f"sqlite:///{db}"] if _has_mlflow() else []
    args = ["train", str(tmp_path / "data"), "--out", str(out), "--seeds", "2"]
    args += ["--img-size", "32", "--batch-size", "16", "--head-epochs", "0", "--epochs", "1"]
    args += ["--weights", "lite", "--cache-dir", str(tmp_path / "cache")]
    assert cli.main([*args, *mlflow]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for seed in (0, 1):
        report = (out / f"seed{seed}" / "report.html").read_text()
        assert '<section id="seeds">' in report and "seed" in report
    assert json.loads((out / "seeds.json").read_text())["n"] == 2
    if mlflow:
        assert "MLflow: run" in printed and db.is_file()


def _has_mlflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None
