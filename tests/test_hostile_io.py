"""Hostile or unlucky I/O: bad --out targets, non-UTF-8 file names, CSV formulas, file modes,
interrupt / disk-full / cache messages. Each failure is one line (exit 2 from the CLI) and leaves
nothing half-written."""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medfit
from medfit import cli
from medfit.data.cache import build_or_load
from medfit.data.sources import Sample
from medfit.deploy.predict import write_csv
from medfit.errors import DataError, MedfitError
from medfit.evaluate import runner
from medfit.files import atomic_write_bytes, csv_cell, csv_value
from medfit.inference import PredictionTable, Predictor
from medfit.model import checkpoint
from medfit.report.rundata import RunData, _predictions
from medfit.rundir import RunDir
from tests.deploy_helpers import RUN_OPTIONS, run_cli
from tests.test_train import make_dataset

FORMULA = "=cmd|' /C calc'!A0"
LATIN1_NAME = os.fsdecode(b"caf\xe9.png")  # not valid UTF-8: Python holds it as "caf\udce9.png"
needs_bytes_names = pytest.mark.skipif(
    sys.platform in ("darwin", "win32"), reason="the file system must accept non-UTF-8 names"
)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfit: error: ") and "\n" not in err, err
    return err


# --- 12: predict --out is checked before predicting ------------------------------------------


@pytest.mark.parametrize("target", ["missing/preds.csv", "folder"])
def test_predict_out_that_cannot_be_written_fails_before_predicting(
    target: str,
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "folder").mkdir()
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("predicted before checking --out")

    monkeypatch.setattr(Predictor, "predict_files", never)
    out = tmp_path / target
    assert run_cli(["predict", str(run), str(image), "--out", str(out), "--device", "cpu"]) == 2
    err = one_line_error(capsys)
    assert str(out) in err and ("does not exist" in err or "is a folder" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "x.png"]  # nothing written


# --- 13: file names that are not UTF-8 ---------------------------------------------------------


@needs_bytes_names
def test_predict_writes_a_non_utf8_file_name_with_its_own_bytes(run: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / LATIN1_NAME)
    out = tmp_path / "preds.csv"
    assert run_cli(["predict", str(run), str(tmp_path), "--out", str(out), "--device", "cpu"]) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 2 and b"caf\xe9.png" in lines[1]
    assert lines[1].endswith(b",")  # predicted, no error column


@needs_bytes_names
def test_train_writes_split_csv_for_a_non_utf8_file_name(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", per_class=4)
    first = next((data / "train" / "left").iterdir())
    first.rename(first.with_name(LATIN1_NAME))
    result = medfit.train(
        data, out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
        log=lambda _: None, **RUN_OPTIONS,
    )  # fmt: skip
    split = (result.dir / "split.csv").read_bytes()
    assert b"caf\xe9.png" in split and (result.dir / "summary.json").is_file()
    # eval reads the path back from split.csv and finds the file
    items = runner._split_csv_items(RunDir(result.dir), "train", ["left", "right"])
    assert any(Path(p).name == LATIN1_NAME and Path(p).is_file() for p, _ in items)


# --- 14: CSV formula injection -----------------------------------------------------------------


@pytest.mark.parametrize("text", [FORMULA, "+1", "-2", "@x", "\tx", "\rx", "'quoted", "plain", ""])
def test_csv_cell_neutralises_formulas_and_round_trips(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert csv_value(cell) == text


def test_predictions_csvs_hold_no_formula_and_read_back_the_class(tmp_path: Path) -> None:
    classes = [FORMULA, "@ok"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    table = PredictionTable(
        classes, [Path("-a.png"), Path("b.png")], probs, [None, None], ("identity",), None
    )
    with (tmp_path / "p.csv").open("w", newline="") as f:
        write_csv(table, f)
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert rows[0].startswith("'-a.png,") and "'=cmd" in rows[0] and "'@ok" in rows[1]
    # eval's predictions_<split>.csv, read back by the report with the original class names
    logits = runner.Logits(np.zeros((1, 2, 2)), np.array([0, 1]), ["=x.png", "y.png"], [])
    run = RunDir(tmp_path)
    run.write_predictions("val", classes, runner.prediction_rows(logits, probs, classes))
    text = run.predictions("val").read_text()
    assert all(not line.startswith(("=", "+", "-", "@")) for line in text.split(","))
    back = _predictions(RunData(tmp_path), run, "val")
    assert [(p.path, p.label, p.predicted) for p in back] == [
        ("=x.png", FORMULA, FORMULA),
        ("y.png", "@ok", "@ok"),
    ]


# --- 15: file modes follow the umask -----------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "f.json", lambda f: f.write(b"{}"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask


# --- 16: messages ------------------------------------------------------------------------------


def _main_with(monkeypatch: pytest.MonkeyPatch, command: str, body: object, argv: list[str]) -> int:
    monkeypatch.setitem(cli.COMMANDS, command, body)
    return cli.main(argv)


def test_interrupt_before_any_run_does_not_suggest_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "last_locked_run", lambda: None)

    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    assert _main_with(monkeypatch, "train", interrupted, ["train", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert "nothing to resume" in err and "--resume" not in err and "\n" not in err


def test_interrupt_names_the_run_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = RunDir(tmp_path / "run-7")

    def interrupted(args: object) -> None:
        run.acquire(new=True)
        run.config.write_text("model: x\n")
        try:
            raise KeyboardInterrupt
        finally:
            run.release()

    assert _main_with(monkeypatch, "train", interrupted, ["train", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"medfit: interrupted; resume with: medfit train --resume {run.path}"


def test_sigterm_unwinds_like_ctrl_c_and_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = RunDir(tmp_path / "run")

    def terminated(args: object) -> None:
        run.acquire(new=True)
        run.config.write_text("model: x\n")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.5)  # give the handler its chance
            raise AssertionError("SIGTERM did not interrupt")
        finally:
            run.release()

    before = signal.getsignal(signal.SIGTERM)
    assert _main_with(monkeypatch, "train", terminated, ["train", str(tmp_path)]) == 143
    assert "terminated; resume with: medfit train --resume" in capsys.readouterr().err
    assert not run.lock.exists() and signal.getsignal(signal.SIGTERM) == before


def _disk_full(path: Path, write: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_message_is_true_about_earlier_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", _disk_full)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(MedfitError) as first:
        checkpoint.save_checkpoint({"model": {}}, last)
    assert "none was written before" in str(first.value) and "intact" not in str(first.value)
    assert "--resume" not in str(first.value)
    last.parent.mkdir(parents=True)
    last.write_bytes(b"old")
    with pytest.raises(MedfitError) as later:
        checkpoint.save_checkpoint({"model": {}}, last)
    assert "previous one is intact" in str(later.value)
    assert f"medfit train --resume {tmp_path / 'run'}" in str(later.value)


def test_run_file_disk_full_message_does_not_claim_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("medfit.files.atomic_write_bytes", _disk_full)
    with pytest.raises(MedfitError) as caught:
        RunDir(tmp_path / "run").write_text(tmp_path / "run" / "split.csv", "x")
    message = str(caught.value)
    assert "no checkpoint was written yet" in message and "\n" not in message
    assert "intact" not in message


def test_cache_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(DataError) as caught:
        build_or_load([Sample(str(image), 0, "train")], 8, blocker, workers=1)
    message = str(caught.value)
    assert "is a file, not a folder" in message and "free space" not in message
    assert blocker.read_text() == "not a folder"
