"""`medfit diagnose LOG`: other tools' histories read into phases of epochs, and diagnosed.

The files here are small ones written by the tests in each tool's format; the defect tests
(`test_defect_*`) each name the way the old reader failed on a real published log.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from medfit.diagnose.cli import DIAGNOSE_COMMANDS, add_diagnose_commands
from medfit.diagnose.foreign import diagnose_foreign, read_history
from medfit.diagnose.foreign.history import History, canonical
from medfit.errors import MedfitError

FIXTURE = Path(__file__).parents[2] / "shared" / "fixtures" / "keras_plateau"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason="../shared/fixtures/keras_plateau is not present"
)

# Four epochs that overfit: val loss lowest at epoch 2, train loss keeps falling.
LOSS = [1.2, 0.9, 0.6, 0.4]
ACC = [0.50, 0.65, 0.78, 0.88]
VAL_LOSS = [1.1, 0.8, 0.95, 1.2]
VAL_ACC = [0.55, 0.68, 0.62, 0.60]


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_diagnose_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["diagnose", *argv])
    DIAGNOSE_COMMANDS[args.command](args)


def col(h: History, name: str, phase: int = 0) -> list[float]:
    return h.phases[phase].column(name)


def _assert_history(h: History, first_epoch: int = 1) -> None:
    assert len(h.phases) == 1
    assert h.phases[0].epochs == list(range(first_epoch, first_epoch + 4))
    assert col(h, "train_loss") == pytest.approx(LOSS)
    assert col(h, "val_acc") == pytest.approx(VAL_ACC)
    assert col(h, "val_loss") == pytest.approx(VAL_LOSS)


def keras_lines(
    first: int, total: int, n: int, offset: float = 0.0, keras3: bool = False
) -> list[str]:
    lines = []
    for i in range(n):
        lines.append(f"Epoch {first + i}/{total}")
        metrics = (
            f"loss: {LOSS[i] + offset:.4f} - accuracy: {ACC[i]:.4f} - val_loss: {VAL_LOSS[i]:.4f}"
            f" - val_accuracy: {VAL_ACC[i]:.4f}"
        )
        if keras3:
            lines.append(
                "\x1b[1m10/10\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m "
                f"\x1b[1m2s\x1b[0m 150ms/step - {metrics}"
            )
        else:
            lines.append(f"10/10 [==============================] - 2s 200ms/step - {metrics}")
    return lines


# --- formats ------------------------------------------------------------------------------------


@needs_fixture
def test_fixture_log_parsed_with_its_gap_and_checkpoint_best() -> None:
    h = read_history([FIXTURE / "fit_log.txt"])
    assert h.format == "Keras console log" and len(h.phases) == 1
    phase = h.phases[0]
    assert phase.epochs == [1, 2, 3, 4, 5, *range(34, 41)]  # epoch 34's header was elided
    assert phase.planned == 40 and phase.steps == 2993
    assert col(h, "val_acc")[0] == pytest.approx(0.4176) and col(h, "lr")[-1] == pytest.approx(
        1.4781e-4
    )
    assert col(h, "val_loss")[5] == pytest.approx(0.958)
    assert h.best_reported == ("val_accuracy", pytest.approx(0.74178))
    assert phase.step_s[phase.epochs.index(35)] == pytest.approx(4022 / 2993)


def test_keras_console_verbose2_and_old_tf1_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = []
    for i in range(4):
        lines += [
            f"Epoch {i + 1}/4",
            f"163/163 - 45s - 276ms/step - loss: {LOSS[i]} - accuracy: "
            f"{ACC[i]} - val_loss: {VAL_LOSS[i]} - val_accuracy: {VAL_ACC[i]}",
        ]
    log.write_text("\n".join(lines) + "\n")
    h = read_history([log])
    _assert_history(h)
    assert h.phases[0].epoch_s == [45.0] * 4
    tf1 = tmp_path / "tf1.txt"
    tf1.write_text(
        "\n".join(
            f"Epoch {i + 1}/4\n - 45s - loss: {LOSS[i]} - acc: {ACC[i]} - "
            f"val_loss: {VAL_LOSS[i]} - val_acc: {VAL_ACC[i]}"
            for i in range(4)
        )
    )
    _assert_history(read_history([tf1]))


def test_keras_notebook_progress_with_backspaces(tmp_path: Path) -> None:
    """tf.keras in a notebook redraws its bar with runs of \\b: the final line is still found."""
    log = tmp_path / "nb.txt"
    parts = []
    for i in range(4):
        parts.append(f"Epoch {i + 1}/4\n")
        parts.append(" 5/10 [=====>....] - ETA: 1s - loss: 9.0 - accuracy: 0.1" + "\b" * 60)
        parts.append(
            f"10/10 [==============================] - 2s 200ms/step - loss: {LOSS[i]} - "
            f"accuracy: {ACC[i]} - val_loss: {VAL_LOSS[i]} - val_accuracy: {VAL_ACC[i]}\n"
        )
    log.write_text("".join(parts))
    _assert_history(read_history([log]))


def test_keras_csvlogger(tmp_path: Path) -> None:
    # CSVLogger writes epoch from 0 and the keys in sorted order.
    path = tmp_path / "training.log"
    rows = [f"{i},{ACC[i]},{LOSS[i]},0.001,{VAL_ACC[i]},{VAL_LOSS[i]},0.7,x" for i in range(4)]
    path.write_text("epoch,accuracy,loss,lr,val_accuracy,val_loss,val_auc,note\n" + "\n".join(rows))
    h = read_history([path])
    assert h.format == "Keras CSVLogger CSV" and col(h, "val_auc") == pytest.approx([0.7] * 4)
    _assert_history(h, first_epoch=0)
    assert "unreadable value" in " ".join(h.notes)  # the "x" cells are named, the rest read


def test_keras_history_json(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    hist = {"loss": LOSS, "accuracy": ACC, "val_loss": VAL_LOSS, "val_accuracy": VAL_ACC}
    path.write_text(json.dumps({"history": hist, "params": {"epochs": 4}}))
    h = read_history([path])
    assert h.format == "Keras History JSON"
    _assert_history(h)
    assert all(math.isnan(x) for x in col(h, "lr"))  # a column the file lacks is NaN


def test_ultralytics_results_csv(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    head = "                  epoch,             train/loss,  metrics/accuracy_top1,"
    head += "  metrics/accuracy_top5,               val/loss,                 lr/pg0"
    rows = [f"{i + 1},{LOSS[i]},{VAL_ACC[i]},0.99,{VAL_LOSS[i]},0.001" for i in range(4)]
    path.write_text(head + "\n" + "\n".join(rows))
    h = read_history([path])
    assert h.format == "Ultralytics results.csv" and h.framework == "ultralytics"
    _assert_history(h)
    assert col(h, "val_top5") == pytest.approx([0.99] * 4)


def test_timm_summary_in_percent(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    rows = [f"{i},{LOSS[i]},{VAL_LOSS[i]},{VAL_ACC[i] * 100},{99.0},0.01" for i in range(4)]
    path.write_text("epoch,train_loss,eval_loss,eval_top1,eval_top5,lr\n" + "\n".join(rows))
    h = read_history([path])
    assert h.format == "timm summary.csv"
    _assert_history(h, first_epoch=0)
    assert any("percent" in n for n in h.notes)


def test_fastai_text_and_html_tables(tmp_path: Path) -> None:
    text = "epoch     train_loss  valid_loss  error_rate  time\n"
    text += "".join(
        f"{i:<9} {LOSS[i]:<11} {VAL_LOSS[i]:<11} {1 - VAL_ACC[i]:<11.4f} 00:0{i + 1}\n"
        for i in range(4)
    )
    (tmp_path / "fastai.txt").write_text(text)
    h = read_history([tmp_path / "fastai.txt"])
    assert h.framework == "fastai" and h.phases[0].epoch_s == [1.0, 2.0, 3.0, 4.0]
    _assert_history(h, first_epoch=0)  # error_rate read as val accuracy = 1 - error
    cells = "".join(
        f"<tr><td>{i}</td><td>{LOSS[i]}</td><td>{VAL_LOSS[i]}</td><td>{VAL_ACC[i]}</td>"
        f"<td>00:10</td></tr>"
        for i in range(4)
    )
    names = ("epoch", "train_loss", "valid_loss", "accuracy", "time")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    table = f"<table><thead>{head}</thead><tbody>{cells}</tbody></table>\n"
    (tmp_path / "fastai.html").write_text(table + table)  # fine_tune: two fit calls, two tables
    h2 = read_history([tmp_path / "fastai.html"])
    assert [len(p) for p in h2.phases] == [4, 4] and col(h2, "val_acc", 1) == pytest.approx(VAL_ACC)


def test_printed_epoch_lines_of_a_plain_pytorch_loop(tmp_path: Path) -> None:
    lines = []
    for i in range(4):
        lines += [
            f"Epoch {i}/3",
            "-" * 10,
            f"train Loss: {LOSS[i]:.4f} Acc: {ACC[i]:.4f}",
            f"val Loss: {VAL_LOSS[i]:.4f} Acc: {VAL_ACC[i]:.4f}",
            "",
        ]
    (tmp_path / "a.txt").write_text("\n".join(lines))
    h = read_history([tmp_path / "a.txt"])
    _assert_history(h, first_epoch=0)
    assert col(h, "train_acc") == pytest.approx(ACC)
    other = [
        f"[2025-11-20 03:35:01] Epoch {i}: train_acc = {ACC[i]} | val_acc = {VAL_ACC[i] * 100}% | "
        f"train_loss={LOSS[i]}, val_loss={VAL_LOSS[i]}\n[2025-11-20 03:35:01] New best model at "
        f"epoch {i + 1} with val_acc = {VAL_ACC[i]}"
        for i in range(4)
    ]
    (tmp_path / "b.txt").write_text("\n".join(other))
    _assert_history(read_history([tmp_path / "b.txt"]), first_epoch=0)


def test_tensorboard_keras_run_folders_one_phase_per_run(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for stamp in ("run-1", "run-2"):
        for run, loss, acc in (("train", LOSS, ACC), ("validation", VAL_LOSS, VAL_ACC)):
            with SummaryWriter(str(tmp_path / "logs" / stamp / run)) as w:
                for i in range(4):
                    w.add_scalar("epoch_loss", loss[i], i)
                    w.add_scalar("epoch_accuracy", acc[i], i)
                    w.add_scalar("evaluation_loss_vs_iterations", 9.0, 100 * i)  # per step
    h = read_history([tmp_path / "logs"])
    assert [len(p) for p in h.phases] == [4, 4]  # not 8 epochs, not thousands of steps
    assert col(h, "val_loss", 1) == pytest.approx(VAL_LOSS)


def test_canonical_column_names() -> None:
    assert canonical("val_sparse_categorical_accuracy") == "val_acc"
    assert canonical("epoch_loss", "val") == "val_loss"
    assert canonical("lr-SGD") == "lr" and canonical("learning_rate") == "lr"
    assert canonical("auc_3") == "train_auc" and canonical("val_precision_1") == "val_precision"
    assert canonical("metrics/accuracy_top1") == "val_acc"
    assert canonical("eval_f1") == "val_f1"
    assert canonical("train/box_loss") is None  # detection losses are not the loss
    assert canonical("train_loss_step") is None


# --- the defects seen on real published logs ---------------------------------------------------


def test_defect_1_keras3_ansi_progress_lines_parse(tmp_path: Path) -> None:
    log = tmp_path / "k3.txt"
    log.write_text("\n".join(keras_lines(1, 4, 4, keras3=True)) + "\n")
    h = read_history([log])
    assert h.format == "Keras console log (Keras 3)"
    _assert_history(h)


def test_defect_2_two_fit_calls_are_two_phases(tmp_path: Path) -> None:
    restart = tmp_path / "restart.txt"  # head stage, then fine-tuning: the counter restarts
    restart.write_text("\n".join(keras_lines(1, 4, 4) + keras_lines(1, 4, 4, offset=-0.3)))
    h = read_history([restart])
    assert [p.epochs for p in h.phases] == [[1, 2, 3, 4], [1, 2, 3, 4]]
    assert col(h, "train_loss", 1) == pytest.approx([x - 0.3 for x in LOSS])
    cont = tmp_path / "initial_epoch.txt"  # fit(initial_epoch=4, epochs=8) continues the count
    cont.write_text("\n".join(keras_lines(1, 4, 4) + keras_lines(5, 8, 4, offset=-0.3)))
    h2 = read_history([cont])
    assert [p.epochs for p in h2.phases] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert [p.planned for p in h2.phases] == [4, 8]


def test_defect_3_csvlogger_append_runs_are_read_apart(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    rows = [f"{i},{ACC[i]},{LOSS[i]},{VAL_ACC[i]},{VAL_LOSS[i]}" for i in range(4)]
    rows += [f"{i},{ACC[i]},{LOSS[i] / 2},{VAL_ACC[i]},{VAL_LOSS[i]}" for i in range(3)]
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + "\n".join(rows))
    h = read_history([path])
    assert [len(p) for p in h.phases] == [4, 3]
    assert col(h, "train_loss", 1) == pytest.approx([x / 2 for x in LOSS[:3]])
    assert any("restarts" in n and "2 runs" in n for n in h.notes)


def test_defect_4_lightning_per_step_rows_are_not_epoch_values(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    lines = ["epoch,step,train_acc,train_loss,val_loss,val_acc"]
    for i in range(6):
        lines.append(f"{i},{12 * i + 11},,,{VAL_LOSS[i % 4]},{VAL_ACC[i % 4]}")
        if i in (3, 5):  # log_every_n_steps=50 with 12-step epochs: a value now and then
            lines.append(f"{i},{12 * i + 1},1.0,0.01,,")
    path.write_text("\n".join(lines))
    h = read_history([tmp_path])  # the folder: metrics.csv is found
    assert h.format == "Lightning metrics.csv" and len(h.phases[0]) == 6
    assert "train_acc" not in h.phases[0].values and "train_loss" not in h.phases[0].values
    assert any("train_acc is logged per step" in n for n in h.notes)
    # A per-step column with values in every epoch is averaged per epoch, and said so.
    lines = ["epoch,step,train_loss_step,train_loss,val_acc"]
    for i in range(4):
        lines += [
            f"{i},{10 * i + 1},,{LOSS[i] + 0.1},",
            f"{i},{10 * i + 9},,{LOSS[i] - 0.1},{VAL_ACC[i]}",
        ]
    path.write_text("\n".join(lines))
    h = read_history([path])
    assert col(h, "train_loss") == pytest.approx(LOSS) and any("mean" in n for n in h.notes)


def test_defect_5_trainer_state_with_f1_and_no_accuracy(tmp_path: Path) -> None:
    log: list[dict[str, float]] = []
    for i in range(4):
        log.append({"epoch": i + 0.5, "loss": 9.0, "learning_rate": 2e-5, "step": 5})
        log.append({"epoch": i + 1.0, "loss": LOSS[i], "learning_rate": 1e-5, "step": 10})
        log.append(
            {
                "epoch": i + 1.0,
                "eval_loss": VAL_LOSS[i],
                "eval_f1": VAL_ACC[i],
                "eval_runtime": 1.0,
                "step": 10,
            }
        )
    log.append({"epoch": 4.0, "train_runtime": 100.0, "train_loss": 0.1, "step": 40})
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"log_history": log, "global_step": 40}))
    h = read_history([path])
    assert h.format == "Hugging Face trainer_state.json" and h.phases[0].epochs == [1, 2, 3, 4]
    assert col(h, "val_f1") == pytest.approx(VAL_ACC) and "val_acc" not in h.phases[0].values
    assert "train_loss" not in h.phases[0].values  # logged every few steps: not an epoch value
    d = diagnose_foreign([path])  # no traceback without an accuracy column
    assert d.findings[0].rule == "read_note" or d.findings


# --- values and bad files -------------------------------------------------------------------------


def test_impossible_accuracies_are_named_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    accs = ["0.5", "nan", "inf", "-1", "1e400", "abc", "0.7", "0.72"]
    rows = [f"{i},{a},{1.0 - 0.05 * i},0.6,0.9" for i, a in enumerate(accs)]
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + "\n".join(rows))
    h = read_history([path])
    train = col(h, "train_acc")
    assert train[0] == 0.5 and train[-2:] == [0.7, 0.72] and all(math.isnan(x) for x in train[1:6])
    notes = " ".join(h.notes)
    assert "impossible value" in notes and "epoch 1: nan" in notes and "-1" in notes
    assert "'abc'" in notes


def test_nan_loss_is_kept_as_divergence(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    losses = [1.0, 0.8, 0.7, "nan", "nan"]
    rows = [f"{i},{x},0.5,1.0,0.5" for i, x in enumerate(losses)]
    path.write_text("epoch,loss,accuracy,val_loss,val_accuracy\n" + "\n".join(rows))
    d = diagnose_foreign([path])
    high = next(f for f in d.findings if f.rule == "lr_too_high")
    assert high.severity == "high" and "NaN" in high.evidence


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"epoch,loss\n", "no rows"),
        (b"[" * 100_000, "nested deeper"),
        (b"\x00\x01\x02binary\x00", "binary data"),
        (b"the run went badly\n", "not a training log medfit reads"),
        (b"epoch,foo,bar\n0,1,2\n1,2,3\n", "nothing usable"),
    ],
)
def test_bad_logs_are_one_line_errors(tmp_path: Path, content: bytes, words: str) -> None:
    suffix = ".csv" if content.startswith(b"epoch") else ".json" if content[:1] == b"[" else ".txt"
    path = tmp_path / f"log{suffix}"
    path.write_bytes(content)
    with pytest.raises(MedfitError, match=words):
        read_history([path])


def test_a_folder_without_logs_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(MedfitError, match="not a medfit run directory"):
        read_history([tmp_path / "nothing"])


def test_utf16_log_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ps.txt"  # Windows PowerShell `python train.py > log.txt`
    path.write_text("\r\n".join(keras_lines(1, 4, 4)), encoding="utf-16")
    _assert_history(read_history([path]))


# --- the diagnosis ------------------------------------------------------------------------------


def test_two_files_are_two_phases_and_the_shock_is_found(tmp_path: Path) -> None:
    head, tune = tmp_path / "head.csv", tmp_path / "finetune.csv"
    header = "epoch,accuracy,loss,val_accuracy,val_loss\n"
    head_val, tune_val = [0.7013, 0.7391, 0.7822, 0.8157, 0.8613], [0.4471, 0.5533, 0.6517]
    rows = [f"{i},{0.6 + 0.05 * i},{1 - 0.1 * i},{v},0.6" for i, v in enumerate(head_val)]
    head.write_text(header + "\n".join(rows))
    rows = [f"{i},{0.78 + 0.02 * i},{0.6 - 0.05 * i},{v},0.9" for i, v in enumerate(tune_val)]
    tune.write_text(header + "\n".join(rows))
    d = diagnose_foreign([head, tune])
    assert d.history is not None
    assert [p.name for p in d.history.phases] == ["head.csv", "finetune.csv"]
    shock = next(f for f in d.findings if f.rule == "finetune_shock")
    assert "0.861" in shock.evidence and "0.447" in shock.evidence


def test_val_size_inferred_from_the_accuracies_finds_a_tiny_val_set(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    vals = [10, 13, 11, 12, 13, 12]  # of 16 images
    rows = [f"{i},{0.7 + 0.03 * i},{1 - 0.1 * i},{v / 16:.4f},0.5" for i, v in enumerate(vals)]
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + "\n".join(rows))
    d = diagnose_foreign([path])
    small = next(f for f in d.findings if f.rule == "small_val")
    assert small.numbers["n_val"] == 16 and "multiple of 1/16" in small.evidence
    assert "val_instability" not in {
        f.rule for f in d.findings
    }  # swings of 1-2 images are its size


def test_overfitting_found_and_fixed_in_keras_words(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    n = 12
    hist = {
        "loss": [1.2 - 0.09 * i for i in range(n)],
        "accuracy": [0.5 + 0.04 * i for i in range(n)],
        "val_loss": [1.0, 0.8, 0.7, 0.65, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4],
        "val_accuracy": [0.55, 0.6, 0.64, 0.66, 0.66, 0.65, 0.65, 0.64, 0.64, 0.63, 0.63, 0.62],
    }
    path.write_text(json.dumps(hist))
    d = diagnose_foreign([path], val_size=2000)
    over = next(f for f in d.findings if f.rule == "overfitting")
    assert "EarlyStopping" in over.fix and over.severity == "high"


def test_a_healthy_short_run_gets_no_finding(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    rows = [
        f"{i},{0.6 + 0.05 * i},{1 - 0.1 * i},{0.62 + 0.045 * i},{0.95 - 0.09 * i}" for i in range(6)
    ]
    path.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n" + "\n".join(rows))
    d = diagnose_foreign([path], val_size=5000)
    assert [f.rule for f in d.findings if f.severity != "info"] == ["undertrained"]


def test_cli_writes_json_with_the_history_and_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.json"
    path.write_text(
        json.dumps({"loss": LOSS, "val_loss": VAL_LOSS, "accuracy": ACC, "val_accuracy": VAL_ACC})
    )
    out, html = tmp_path / "d.json", tmp_path / "d.html"
    _cli([str(path), "--val-size", "500", "--json", str(out), "--html", str(html)])
    saved = json.loads(out.read_text())
    assert saved["history"]["phases"][0]["values"]["val_acc"] == pytest.approx(VAL_ACC)
    assert saved["command"].startswith("medfit train")
    assert "<h1>medfit diagnose" in html.read_text()
    assert "train it with medfit:" in capsys.readouterr().out


REAL_KERAS = Path(__file__).parent / "data" / "keras"  # made by tf_keras: make_keras_logs.py


@pytest.mark.parametrize(
    ("name", "fmt", "first"),
    [("training.log", "Keras CSVLogger CSV", 0), ("history.json", "Keras History JSON", 1)],
)
def test_files_written_by_a_real_tf_keras_run(name: str, fmt: str, first: int) -> None:
    h = read_history([REAL_KERAS / name])
    assert h.format == fmt and h.ignored == []
    assert h.phases[0].epochs == [first, first + 1, first + 2]
    assert col(h, "val_acc") == pytest.approx([0.375, 0.375, 0.3125])
    assert col(h, "train_loss") == pytest.approx([0.94734, 0.90811, 0.87114], abs=1e-5)


# --- the rules, one behaviour each ---------------------------------------------------------------


def csv_log(path: Path, **columns: list[float]) -> Path:
    """A CSVLogger file with the given columns (Keras names), epochs from 0."""
    n = len(next(iter(columns.values())))
    rows = [",".join([str(i), *(f"{v[i]:.6g}" for v in columns.values())]) for i in range(n)]
    path.write_text("epoch," + ",".join(columns) + "\n" + "\n".join(rows))
    return path


def rules_of(*logs: Path, **options: object) -> dict[str, object]:
    d = diagnose_foreign(list(logs), **options)  # type: ignore[arg-type]
    return {f.rule: f for f in d.findings if f.severity != "info"}


def test_val_loss_spikes_are_instability_whatever_the_val_size(tmp_path: Path) -> None:
    n = 12
    train = [1.0 - 0.06 * i for i in range(n)]
    spiky = [0.9, 0.8, 0.75, 1.1, 0.72, 0.7, 1.05, 0.68, 0.66, 0.65, 0.64, 0.63]
    found = rules_of(csv_log(tmp_path / "a.csv", loss=train, val_loss=spiky))
    assert "val_instability" in found and "3, 6" in str(found["val_instability"])
    # The same spikes in the train loss too: the whole run jumps (the LR), not val.
    both = [x * 1.2 for x in spiky]
    found = rules_of(csv_log(tmp_path / "b.csv", loss=both, val_loss=spiky))
    assert "val_instability" not in found


def test_swings_are_weighed_by_the_val_size(tmp_path: Path) -> None:
    acc = [0.80, 0.85, 0.88, 0.83, 0.89, 0.84, 0.90, 0.85, 0.90, 0.86]  # drops of 0.05
    log = csv_log(tmp_path / "a.csv", loss=[1 - 0.05 * i for i in range(10)], val_accuracy=acc)
    assert "val_instability" in rules_of(log, val_size=5000)  # 3 sigma = 0.015
    assert "val_instability" not in rules_of(log, val_size=300)  # 3 sigma = 0.06
    assert "val_instability" not in rules_of(log)  # size unknown: only drops of 0.10 count


def test_undertrained_from_the_val_loss_and_not_after_an_early_stop(tmp_path: Path) -> None:
    acc = [0.8, 0.81, 0.81, 0.82]  # flat within noise
    loss = [0.6, 0.5, 0.45, 0.4]
    val_loss = [0.5, 0.45, 0.41, 0.37]  # still at its lowest, still falling
    log = csv_log(tmp_path / "a.csv", loss=loss, val_loss=val_loss, val_accuracy=acc)
    assert "undertrained" in rules_of(log, val_size=200)
    text = "".join(
        f"Epoch {i + 1}/20\n10/10 [====] - 1s 10ms/step - loss: {loss[i]} - "
        f"val_loss: {val_loss[i]} - val_accuracy: {acc[i]}\n"
        for i in range(4)
    )  # planned 20, stopped at 4: early stopping decided
    (tmp_path / "es.txt").write_text(text)
    assert "undertrained" not in rules_of(tmp_path / "es.txt", val_size=200)


def test_a_training_loss_that_climbs_for_epochs_is_the_lr(tmp_path: Path) -> None:
    loss = [0.5, 0.3, 0.2, 0.18, 0.2, 0.24, 0.28, 0.33, 0.38, 0.42, 0.45]
    found = rules_of(csv_log(tmp_path / "a.csv", loss=loss))
    assert "lr_too_high" in found and "climbs from 0.180" in found["lr_too_high"].evidence
    steady = [0.5, 0.3, 0.2, 0.18, 0.17, 0.175, 0.17, 0.168, 0.17, 0.166, 0.165]
    assert "lr_too_high" not in rules_of(csv_log(tmp_path / "b.csv", loss=steady))


def test_trainer_lr_from_the_log_for_ultralytics_and_hf(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    head = "epoch,train/loss,metrics/accuracy_top1,metrics/accuracy_top5,val/loss,lr/pg0"
    rows = [
        f"{i + 1},{1 - 0.1 * i},{0.6 + 0.05 * i},1.0,0.5,{lr}"
        for i, lr in enumerate([0.0002, 0.0005, 0.000714, 0.0007, 0.0006])
    ]
    path.write_text(head + "\n" + "\n".join(rows))
    found = rules_of(path)
    assert "finetune_lr_high" in found and "7.14e-04 (AdamW)" in found["finetune_lr_high"].evidence
    rows = [r.rsplit(",", 1)[0] + ",0.0001" for r in rows]  # 1e-4: the usual fine-tuning LR
    path.write_text(head + "\n" + "\n".join(rows))
    assert "finetune_lr_high" not in rules_of(path)
    keras = csv_log(tmp_path / "k.csv", loss=[1, 0.8, 0.6], lr=[0.01, 0.01, 0.01])
    assert "finetune_lr_high" not in rules_of(keras)  # which layers train: only the script says


def test_plateau_counts_epochs_not_rows_of_an_elided_log(tmp_path: Path) -> None:
    lines = []
    for e, v in [(1, 0.6), (2, 0.7), (3, 0.75), (4, 0.74), (20, 0.74), (21, 0.745), (22, 0.745)]:
        lines.append(f"Epoch {e}/22\n10/10 [====] - 1s 10ms/step - loss: 0.3 - val_accuracy: {v}")
    (tmp_path / "log.txt").write_text("\n".join([*lines[:4], "...", *lines[4:]]))
    found = rules_of(tmp_path / "log.txt", val_size=2000)
    assert "val_plateau" in found and found["val_plateau"].numbers["wasted_epochs"] == 19
