"""`medfit diagnose LOG`: other tools' histories read into the epoch model and diagnosed."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from medfit.diagnose.cli import DIAGNOSE_COMMANDS, add_diagnose_commands
from medfit.diagnose.foreign import column_field, diagnose_foreign, read_history
from medfit.errors import MedfitError

FIXTURE = Path(__file__).parents[2] / "shared" / "fixtures" / "keras_plateau"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason="../shared/fixtures/keras_plateau is not present"
)

# Three epochs that overfit: val loss lowest at epoch 2, train loss keeps falling.
LOSS = [1.2, 0.9, 0.6, 0.4]
ACC = [0.50, 0.65, 0.78, 0.88]
VAL_LOSS = [1.1, 0.8, 0.95, 1.2]
VAL_ACC = [0.55, 0.68, 0.62, 0.60]


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_diagnose_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["diagnose", *argv])
    DIAGNOSE_COMMANDS[args.command](args)


def _assert_history(history_rows: list, first_epoch: int = 1) -> None:
    rows = history_rows
    assert [r.epoch for r in rows] == list(range(first_epoch, first_epoch + 4))
    assert [r.train_loss for r in rows] == pytest.approx(LOSS)
    assert [r.val_acc for r in rows] == pytest.approx(VAL_ACC)
    assert [r.val_loss for r in rows] == pytest.approx(VAL_LOSS)


@needs_fixture
def test_fixture_log_parsed_with_gap_times_and_checkpoint_best() -> None:
    h = read_history(FIXTURE / "fit_log.txt")
    assert h.format == "Keras console log"
    assert h.epochs == [1, 2, 3, 4, 5, *range(34, 41)]
    assert h.missing() == [(6, 33)] and h.total_epochs == 40 and h.steps == 2993
    assert h.rows[0].val_acc == pytest.approx(0.4176) and h.rows[-1].lr == pytest.approx(1.4781e-4)
    assert h.rows[5].epoch == 34 and h.rows[5].val_loss == pytest.approx(0.958)  # after "..."
    assert h.best_reported == ("val_accuracy", pytest.approx(0.74178))
    assert h.step_s[35] == pytest.approx(4022 / 2993)
    assert set(h.understood.values()) == {"train_loss", "train_acc", "val_loss", "val_acc", "lr"}


@needs_fixture
def test_fixture_log_and_script_ranked_together(capsys: pytest.CaptureFixture[str]) -> None:
    d = diagnose_foreign(FIXTURE / "fit_log.txt", FIXTURE / "train.py")
    rules = [f.rule for f in d.findings]
    assert rules[:3] == ["input_scaling", "bn_training_mode", "finetune_lr"]
    script = {f.rule for f in d.findings if f.numbers.get("source") == "script"}
    assert len(script - {"script_elided"}) >= 6
    over = next(f for f in d.findings if f.rule == "overfitting")
    assert "0.913 at epoch 3 -> 1.032 at epoch 40" in over.evidence
    swings = next(f for f in d.findings if f.rule == "val_instability")
    assert "--val-size" in swings.title and "0.742" in swings.evidence
    assert "epoch_time" not in rules  # merged into the script's input-bound finding
    assert "527-4022 s" in next(f for f in d.findings if f.rule == "input_bound").evidence
    assert d.command.startswith("medfit train data/data --model resnet50 --img-size 224")


@needs_fixture
def test_fixture_swings_weighed_with_val_size() -> None:
    d = diagnose_foreign(FIXTURE / "fit_log.txt", val_size=2000, classes=4)
    swings = next(f for f in d.findings if f.rule == "val_instability")
    assert swings.severity == "high" and swings.numbers["n_val"] == 2000
    assert swings.numbers["val_acc"] == pytest.approx([0.4176, 0.5502, 0.6576, 0.5336, 0.4927])


def test_keras_console_keras3_and_verbose2(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = []
    for i in range(4):
        lines += [
            f"Epoch {i + 1}/4",
            "\r 5/10 ━━━━━━━━━━ 1s 90ms/step - accuracy: 0.1 - loss: 9.0",
            f"10/10 ━━━━━━━━━━━━━━━━━━━━ 2s 150ms/step - accuracy: {ACC[i]} - loss: {LOSS[i]} "
            f"- val_accuracy: {VAL_ACC[i]} - val_loss: {VAL_LOSS[i]} - learning_rate: 0.0010",
        ]
    log.write_text("\n".join(lines) + "\n313/313 - 1s - loss: 5.0 - accuracy: 0.1\n")
    h = read_history(log)
    _assert_history(h.rows)
    assert h.rows[0].lr == pytest.approx(1e-3) and h.step_s[1] == pytest.approx(0.2)


def test_keras_csvlogger(tmp_path: Path) -> None:
    # CSVLogger writes epoch from 0 and the keys in sorted order.
    path = tmp_path / "training.log"
    rows = [f"{i},{ACC[i]},{LOSS[i]},0.001,{VAL_ACC[i]},{VAL_LOSS[i]},0.7" for i in range(4)]
    path.write_text("epoch,accuracy,loss,lr,val_accuracy,val_loss,val_auc\n" + "\n".join(rows))
    h = read_history(path)
    assert h.format == "Keras CSVLogger CSV" and h.ignored == ["val_auc"]
    _assert_history(h.rows)


def test_keras_history_json(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    hist = {"loss": LOSS, "accuracy": ACC, "val_loss": VAL_LOSS, "val_accuracy": VAL_ACC}
    path.write_text(json.dumps(hist))
    h = read_history(path)
    assert h.format == "Keras History JSON"
    _assert_history(h.rows)
    assert math.isnan(h.rows[0].lr)  # missing metrics are NaN


def test_lightning_metrics_csv(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    lines = [
        "epoch,step,train_loss_step,train_loss_epoch,val_loss,val_acc,train_acc_epoch,lr-AdamW"
    ]
    for i in range(4):
        lines.append(f"{i},{10 * i + 5},9.9,,,,,")
        lines.append(f"{i},{10 * i + 9},,,{VAL_LOSS[i]},{VAL_ACC[i]},,0.001")
        lines.append(f"{i},{10 * i + 9},,{LOSS[i]},,,{ACC[i]},")
    path.write_text("\n".join(lines))
    h = read_history(tmp_path)  # the folder: metrics.csv is found
    assert h.format == "Lightning metrics.csv" and "train_loss_step" in h.ignored
    _assert_history(h.rows)
    assert h.rows[0].lr == pytest.approx(1e-3)


def test_hf_trainer_state(tmp_path: Path) -> None:
    log: list[dict[str, float]] = []
    for i in range(4):
        log.append({"epoch": i + 0.5, "loss": 9.0, "learning_rate": 2e-5, "step": 5})
        log.append({"epoch": i + 1.0, "loss": LOSS[i], "learning_rate": 1e-5, "step": 10})
        log.append(
            {
                "epoch": i + 1.0,
                "eval_loss": VAL_LOSS[i],
                "eval_accuracy": VAL_ACC[i],
                "eval_runtime": 1.0,
                "step": 10,
            }
        )
    log.append({"epoch": 4.0, "train_runtime": 100.0, "train_loss": 0.1, "step": 40})
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": log, "global_step": 40}))
    h = read_history(path)
    assert h.format == "Hugging Face trainer_state.json" and "eval_runtime" in h.ignored
    assert [r.epoch for r in h.rows] == [1, 2, 3, 4]
    assert [r.train_loss for r in h.rows] == pytest.approx(LOSS)
    assert [r.val_acc for r in h.rows] == pytest.approx(VAL_ACC)


def test_ultralytics_results_csv(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    head = "                  epoch,             train/loss,  metrics/accuracy_top1,"
    head += "  metrics/accuracy_top5,               val/loss,                 lr/pg0"
    rows = [f"{i + 1},{LOSS[i]},{VAL_ACC[i]},0.99,{VAL_LOSS[i]},0.001" for i in range(4)]
    path.write_text(head + "\n" + "\n".join(rows))
    h = read_history(path)
    assert h.format == "Ultralytics results.csv" and h.ignored == ["metrics/accuracy_top5"]
    assert [r.epoch for r in h.rows] == [1, 2, 3, 4]
    assert [r.val_acc for r in h.rows] == pytest.approx(VAL_ACC)
    assert [r.train_loss for r in h.rows] == pytest.approx(LOSS)


def test_tensorboard_pytorch_names(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as w:
        for i in range(4):
            w.add_scalar("Loss/train", LOSS[i], i)
            w.add_scalar("Loss/val", VAL_LOSS[i], i)
            w.add_scalar("Accuracy/val", VAL_ACC[i], i)
            w.add_scalar("Accuracy/train", ACC[i], i)
            w.add_scalar("grad_norm", 1.0, i)
    h = read_history(tmp_path / "tb")
    assert h.format == "TensorBoard events" and h.ignored == ["grad_norm"]
    _assert_history(h.rows)


def test_tensorboard_keras_run_folders(tmp_path: Path) -> None:
    # Keras' TensorBoard callback: train/ and validation/ runs, epoch_* tags, steps from 0.
    from torch.utils.tensorboard import SummaryWriter

    for run, loss, acc in (("train", LOSS, ACC), ("validation", VAL_LOSS, VAL_ACC)):
        with SummaryWriter(str(tmp_path / "logs" / run)) as w:
            for i in range(4):
                w.add_scalar("epoch_loss", loss[i], i)
                w.add_scalar("epoch_accuracy", acc[i], i)
                w.add_scalar("batch_loss", 9.0, i)
    h = read_history(tmp_path / "logs")
    _assert_history(h.rows)
    assert "batch_loss" in h.ignored


def test_overfitting_found_from_a_foreign_history(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text(
        json.dumps({"loss": LOSS, "accuracy": ACC, "val_loss": VAL_LOSS, "val_accuracy": VAL_ACC})
    )
    d = diagnose_foreign(path)
    rules = {f.rule for f in d.findings}
    assert "overfitting" in rules
    # config-dependent rules stay silent: the foreign run's config is unknown
    assert not rules & {"normalization", "bn_small_batch", "check_missing", "lr_too_low"}


def test_column_names() -> None:
    assert column_field("val_sparse_categorical_accuracy") == "val_acc"
    assert column_field("epoch_loss", "val") == "val_loss"
    assert column_field("lr-SGD") == "lr"
    assert column_field("train/box_loss") is None  # detection losses are not the loss
    assert column_field("train_loss_step") is None


def test_cli_writes_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "history.json"
    path.write_text(
        json.dumps({"loss": LOSS, "val_loss": VAL_LOSS, "accuracy": ACC, "val_accuracy": VAL_ACC})
    )
    out, html = tmp_path / "d.json", tmp_path / "d.html"
    _cli([str(path), "--val-size", "500", "--json", str(out), "--html", str(html)])
    saved = json.loads(out.read_text())
    assert "overfitting" in {f["rule"] for f in saved["findings"]}
    assert saved["command"].startswith("medfit train")
    assert "<h1>medfit diagnose" in html.read_text()
    assert "train it with medfit:" in capsys.readouterr().out


def test_unknown_format_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("the run went badly\n")
    with pytest.raises(MedfitError, match="not a format medfit reads"):
        read_history(path)
    with pytest.raises(MedfitError, match="not a medfit run directory"):
        read_history(tmp_path / "nothing") if (tmp_path / "nothing").mkdir() is None else None


REAL_KERAS = Path(__file__).parent / "data" / "keras"  # made by tf_keras: make_keras_logs.py


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("training.log", "Keras CSVLogger CSV"), ("history.json", "Keras History JSON")],
)
def test_files_written_by_a_real_tf_keras_run(name: str, fmt: str) -> None:
    h = read_history(REAL_KERAS / name)
    assert h.format == fmt and h.ignored == []
    assert [r.epoch for r in h.rows] == [1, 2, 3]  # CSVLogger counts from 0
    assert [r.val_acc for r in h.rows] == pytest.approx([0.375, 0.375, 0.3125])
    assert [r.train_loss for r in h.rows] == pytest.approx([0.94734, 0.90811, 0.87114], abs=1e-5)
