"""Hostile option values, paths and checkpoints: each is refused in one line with exit status 2,
and nothing is written or changed (no run directory appears; the data, the run and the user's
files keep their checksums). Plus: `--resume RUN --epochs N+2` trains 2 more epochs and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medfit import cli
from medfit.config import MAX_IMG_SIZE
from medfit.training.recipe import FINAL_LR_FRACTION

TINY = ["--model", "test_efficientnet", "--weights", "none", "--img-size", "32"]
HEAD_ONLY = [*TINY, "--epochs", "0", "--head-epochs", "1"]


def _make_data(root: Path, classes: tuple[str, ...] = ("a", "b"), val: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val") if val else ("train",):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(10):
                pixels = rng.integers(0, 100, (32, 32)) + 70 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _digest(*roots: Path) -> dict[str, str]:
    """Every file under `roots` (and every folder, so a new empty one shows) with its checksum."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Data (two classes, with and without a val folder) and a finished head-only run."""
    base = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDFIT_CACHE", str(base / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        data = _make_data(base / "data")
        run = base / "run"
        assert cli.main(["train", str(data), *HEAD_ONLY, "--out", str(run)]) == 0
        yield {
            "base": base,
            "data": data,
            "noval": _make_data(base / "noval", val=False),
            "three": _make_data(base / "three", ("a", "b", "c")),
            "run": run,
        }


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, Path]) -> None:
    monkeypatch.setenv("MEDFIT_CACHE", str(env["base"] / "cache"))
    monkeypatch.chdir(tmp_path)  # runs/run, the default --out, would land here


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *watched: Path) -> str:
    """Run the CLI: exit 2, exactly one stderr line, and every watched folder unchanged."""
    capsys.readouterr()
    before = _digest(*watched)
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("medfit: error: "), err
    assert _digest(*watched) == before
    return lines[0]


def _watched(env: dict[str, Path]) -> tuple[Path, ...]:
    return (Path.cwd(), env["data"], env["noval"], env["run"])


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--max-train", "0"], "--max-train"),
        (["--max-train", "-5"], "--max-train"),
        (["--max-val", "0"], "--max-val"),
        (["--label-smoothing", "2"], "--label-smoothing"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--head-lr", "inf"], "--head-lr"),
        (["--drop-rate", "1"], "--drop-rate"),
        (["--ema-decay", "1.5"], "--ema-decay"),
        (["--warmup-epochs", "nan"], "--warmup-epochs"),
        (["--grad-clip", "-1"], "--grad-clip"),
        (["--layer-decay", "0"], "--layer-decay"),
        (["--smooth", "0"], "--smooth"),
        (["--patience", "-1"], "--patience"),
        (["--workers", "-1"], "--workers"),
        (["--bn-min-batch", "0"], "--bn-min-batch"),
        (["--seed", str(2**32)], "--seed"),
        (["--img-size", "10000"], f"[16, {MAX_IMG_SIZE}]"),
        (["--device", "foo"], "--device 'foo'"),
    ],
)
def test_bad_train_option_values(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    line = _refused(["train", str(env["data"]), *HEAD_ONLY, *extra], capsys, *_watched(env))
    assert words in line


def test_negative_seed_without_a_val_folder(env: dict[str, Path], capsys) -> None:
    # The val split off train is drawn with the seed: a negative one used to crash NumPy.
    line = _refused(["train", str(env["noval"]), *HEAD_ONLY, "--seed", "-1"], capsys, env["noval"])
    assert "--seed" in line and "-1" in line


def test_cuda_without_a_gpu(env: dict[str, Path], capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = _refused(["train", str(env["data"]), *HEAD_ONLY, "--device", "cuda"], capsys, Path.cwd())
    assert "--device cuda" in line and "sees cpu" in line and "--device auto" in line


def test_config_that_is_a_folder(env: dict[str, Path], capsys) -> None:
    line = _refused(
        ["train", str(env["data"]), *HEAD_ONLY, "--config", str(env["run"])], capsys, Path.cwd()
    )
    assert "is a folder" in line and str(env["run"] / "config.yaml") in line


def test_config_that_is_not_utf8(env: dict[str, Path], capsys, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"train:\n  seed: 1  # \xff\xfe\n")
    line = _refused(["train", str(env["data"]), *HEAD_ONLY, "--config", str(config)], capsys)
    assert "bad.yaml" in line and "not UTF-8" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_out_that_is_a_file(env: dict[str, Path], capsys, tmp_path: Path, command: str) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    line = _refused([command, str(env["data"]), *HEAD_ONLY, "--out", "notes.txt"], capsys, tmp_path)
    assert "notes.txt is a file" in line


def test_next_numbered_out_is_a_file(env: dict[str, Path], capsys, tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "old.txt").write_text("a previous run")
    (tmp_path / "exp-2").write_text("mine")
    line = _refused(["train", str(env["data"]), *HEAD_ONLY, "--out", "exp"], capsys, tmp_path)
    assert "exp-2 is a file" in line


def test_out_dot(env: dict[str, Path], capsys, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("the user's own file")
    line = _refused(["train", str(env["data"]), *HEAD_ONLY, "--out", "."], capsys, tmp_path)
    assert "--out ." in line and "runs/" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into 0555 folders anyway")
def test_out_in_a_read_only_folder(env: dict[str, Path], capsys, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        out = str(locked / "run")
        line = _refused(["train", str(env["data"]), *HEAD_ONLY, "--out", out], capsys, tmp_path)
        assert "not writable" in line and str(locked) in line
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--port", "99999"], "--port"),
        (["--port", "0"], "--port"),
        (["--max-upload-mb", "nan"], "--max-upload-mb"),
        (["--max-upload-mb", "inf"], "--max-upload-mb"),
        (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--max-concurrent", "0"], "--max-concurrent"),
    ],
)
def test_bad_serve_options(env: dict[str, Path], capsys, extra: list[str], words: str) -> None:
    pytest.importorskip("fastapi")
    assert words in _refused(["serve", str(env["run"]), *extra], capsys, env["run"])


# --- resume --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--epochs", "3", "--lr", "0.1"], "--lr 0.1 with --resume"),
        (["--head-epochs", "2"], "--head-epochs 2"),
        (["--model", "resnet18"], "--model resnet18"),
        (["--no-ema"], "--no-ema with --resume"),
        (["--config", "x.yaml"], "--config with --resume"),
        (["--out", "elsewhere"], "--out elsewhere with --resume"),
    ],
)
def test_resume_refuses_a_changed_option(
    env: dict[str, Path], capsys, extra: list[str], words: str
) -> None:
    line = _refused(["train", "--resume", str(env["run"]), *extra], capsys, *_watched(env))
    assert words in line


def test_resume_refuses_other_data(env: dict[str, Path], capsys) -> None:
    argv = ["train", str(env["three"]), "--resume", str(env["run"])]
    line = _refused(argv, capsys, *_watched(env))
    assert str(env["three"]) in line and "data.root" in line


def test_resume_with_seeds_refuses_options(env: dict[str, Path], capsys) -> None:
    argv = ["train", "--resume", str(env["run"]), "--seeds", "2", "--epochs", "3"]
    assert "train.epochs" in _refused(argv, capsys, *_watched(env))


def _copy_run(env: dict[str, Path], tmp_path: Path, **edits: dict[str, object]) -> Path:
    run = tmp_path / "copy"
    shutil.copytree(env["run"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for section, values in edits.items():
        config[section].update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def test_resume_after_model_name_was_edited(env: dict[str, Path], capsys, tmp_path: Path) -> None:
    run = _copy_run(env, tmp_path, model={"name": "resnet18"}, train={"epochs": 2})
    line = _refused(["train", "--resume", str(run)], capsys, run, env["data"])
    assert "model.name resnet18" in line and "test_efficientnet" in line


def test_resume_on_data_with_another_class_count(
    env: dict[str, Path], capsys, tmp_path: Path
) -> None:
    run = _copy_run(env, tmp_path, data={"root": str(env["three"])}, train={"epochs": 2})
    line = _refused(["train", "--resume", str(run)], capsys, run, env["three"])
    assert "a, b, c" in line and "trained on a, b" in line


def test_resume_with_a_config_edit_that_changes_the_recipe(
    env: dict[str, Path], capsys, tmp_path: Path
) -> None:
    run = _copy_run(env, tmp_path, train={"weight_decay": 0.5})
    line = _refused(["train", "--resume", str(run)], capsys, run)
    assert "train.weight_decay is 0.5" in line


def test_resume_with_more_epochs_trains_them_and_records_it(
    env: dict[str, Path], capsys, tmp_path: Path
) -> None:
    run = tmp_path / "grow"
    assert cli.main(["train", str(env["data"]), *TINY, "--epochs", "1", "--out", str(run)]) == 0
    assert cli.main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs 1 -> 3" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["stage"]) for r in rows] == [
        (1, "head"),
        (2, "full"),
        (3, "full"),
        (4, "full"),
    ]
    # The full stage's schedule was re-planned for 3 epochs: the first added epoch trains well
    # above the floor the 1-epoch schedule had reached (1% of the peak; `lr` is the epoch's
    # highest trained LR, so rows[1] holds the peak).
    assert rows[2]["lr"] > 10 * FINAL_LR_FRACTION * rows[1]["lr"]
    records = [json.loads(line) for line in (run / "resumed.jsonl").read_text().splitlines()]
    assert records == [{**records[0], "after_epoch": 2, "changes": {"train.epochs": [1, 3]}}]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 3


def test_resume_may_change_the_device(env: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "dev"
    shutil.copytree(env["run"], run)
    assert cli.main(["train", "--resume", str(run), "--device", "cpu"]) == 0


# --- foreign checkpoints -------------------------------------------------------------------------


def _foreign_run(env: dict[str, Path], tmp_path: Path, bare: bool) -> Path:
    run = tmp_path / "foreign"
    shutil.copytree(env["run"], run)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    state = {"model": state["model"]} if bare else {**state, "model_name": "no_such_net"}
    torch.save(state, run / "checkpoints" / "best.pt")
    return run


@pytest.mark.parametrize("bare", [True, False], ids=["state-dict-only", "unknown-model-name"])
@pytest.mark.parametrize("command", ["predict", "eval", "export"])
def test_foreign_checkpoint(
    env: dict[str, Path], capsys, tmp_path: Path, command: str, bare: bool
) -> None:
    run = _foreign_run(env, tmp_path, bare)
    image = env["data"] / "val" / "a" / "0.png"
    argv = [command, str(run), *([str(image)] if command == "predict" else [])]
    line = _refused(argv, capsys, run, tmp_path)
    assert "best.pt" in line
    assert ("no model_name" in line) if bare else ("'no_such_net'" in line)
