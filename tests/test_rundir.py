"""The run directory contract (medfit/rundir.py): one reader per file and one policy for a torn,
missing or corrupt file, the same in every command that reads a run (report, diagnose, seeds,
predict)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from medfit.diagnose.own.facts import read_run_facts
from medfit.errors import MedfitError
from medfit.inference import RunInfo
from medfit.report.rundata import read_report_data
from medfit.rundir import EpochRow, RunDir, Summary
from medfit.training.seeds import seed_row

TORN = '{"epoch": 99, "stage": "full", "train_loss": 0.4'  # a row cut off by a kill


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("tb", "checkpoints", "export"))
    return dest


def _row(epoch: int, **values: float) -> EpochRow:
    base = dict(train_loss=0.5, train_acc=0.8, val_loss=0.6, val_acc=0.7)
    base |= dict(val_balanced_accuracy=0.65, val_macro_f1=0.6, lr=1e-3)
    return EpochRow(epoch=epoch, stage="full", **(base | values))


def test_a_torn_last_line_reads_the_same_in_every_reader(run: Path, tmp_path: Path) -> None:
    copy = RunDir(_copy(run, tmp_path / "run"))
    whole = copy.read_history()
    with copy.metrics_jsonl.open("a") as f:
        f.write(TORN)
    epochs = [r.epoch for r in whole]
    assert epochs and 99 not in epochs
    assert [r.epoch for r in copy.read_history()] == epochs
    report = read_report_data(copy.path)
    assert [r["epoch"] for r in report.history] == epochs and report.problems == []
    assert [e.epoch for e in read_run_facts(copy.path).history] == epochs
    summary = copy.read_summary()
    assert summary is not None
    best = next(r for r in whole if r.epoch == summary.best_epoch)
    row = seed_row(copy.path, 0, "reused")
    assert row["best_val_acc"] == best.val_acc and row["final_val_acc"] == summary.final["val_acc"]
    assert RunInfo.read(RunDir(copy.path)).summary == summary.to_dict()


def test_summary_keys_are_exactly_what_training_writes(run: Path) -> None:
    raw = json.loads(RunDir(run).summary.read_text())
    assert Summary.from_dict(raw).to_dict() == raw


def test_epoch_row_round_trips_and_reads_older_rows(tmp_path: Path) -> None:
    rows = [_row(1, selection_score=0.61), _row(2, data_s=1.5, skipped_steps=2)]
    run = RunDir(tmp_path)
    run.write_history(rows)
    assert run.read_history() == rows
    assert [EpochRow.from_dict(json.loads(json.dumps(r.to_dict()))) for r in rows] == rows
    as_dicts = (run.metrics_jsonl.read_text(), run.metrics_csv.read_text())
    run.write_history([r.to_dict() for r in rows])  # fit.py still passes dicts
    assert (run.metrics_jsonl.read_text(), run.metrics_csv.read_text()) == as_dicts
    old = EpochRow.from_dict({"epoch": 3, "train_loss": 1.0, "val_acc": 0.5, "lr": 0.01})
    assert old.stage == "full" and old.data_s == 0.0 and old.selection_score is None
    assert math.isnan(old.val_macro_f1) and old.metric("accuracy") == 0.5


def test_missing_optional_files_read_as_empty(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.read_history() == [] and run.read_summary() is None
    assert run.read_classes() == [] and run.read_split_rows() == [] and run.eval_splits() == []
    assert run.read_json(run.check) is None and run.read_json(run.calibration) is None


def test_eval_splits_are_newest_first(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for age, split in enumerate(("val", "test")):
        run.write_json(run.eval_json(split), {})
        os.utime(run.eval_json(split), (1000 + age, 1000 + age))
    assert run.eval_splits() == ["test", "val"]


@pytest.mark.parametrize("text", ['{"model": "x", "classes": [', '{"model": "x"}', "[1, 2]"])
def test_a_corrupt_summary_is_a_one_line_error_naming_it(
    run: Path, tmp_path: Path, text: str
) -> None:
    copy = RunDir(_copy(run, tmp_path / "run"))
    copy.summary.write_text(text)
    with pytest.raises(MedfitError) as caught:
        copy.read_summary()
    message = str(caught.value)
    assert str(copy.summary) in message and "\n" not in message and "restore" in message
    with pytest.raises(MedfitError, match=r"summary\.json"):
        RunInfo.read(copy)
    with pytest.raises(MedfitError, match=r"summary\.json"):
        seed_row(copy.path, 0, "reused")


def test_the_report_notes_a_corrupt_file_and_renders_the_rest(run: Path, tmp_path: Path) -> None:
    copy = RunDir(_copy(run, tmp_path / "run"))
    copy.summary.write_text("{")
    data = read_report_data(copy.path)
    assert data.summary == {} and data.history  # one damaged file costs only its own part
    assert len(data.problems) == 1 and str(copy.summary) in data.problems[0]


def test_a_damaged_line_before_the_last_is_an_error_naming_the_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_history([_row(1), _row(2)])
    lines = run.metrics_jsonl.read_text().splitlines()
    run.metrics_jsonl.write_text("\n".join([lines[0], TORN, lines[1]]) + "\n")
    with pytest.raises(MedfitError, match=r"metrics.jsonl, line 2: not an epoch row"):
        run.read_history()


def test_split_rows_and_classes(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_text(
        run.split, "path,label,split,status\na.png,x,train,ok\nb.png,,val,skipped: empty\n"
    )
    rows = run.read_split_rows()
    assert [(r.path, r.split, r.ok) for r in rows] == [
        ("a.png", "train", True),
        ("b.png", "val", False),
    ]
    run.write_text(run.split, "file,label\na.png,x\n")
    with pytest.raises(MedfitError, match="expected columns path,label,split,status"):
        run.read_split_rows()
    run.write_json(run.classes, {"x": 0})
    with pytest.raises(MedfitError, match="expected a JSON list"):
        run.read_classes()
