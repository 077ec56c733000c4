"""User mistakes on the command line: exit status 2, one `medfit: error:` line, no traceback.

Every error here must be caught before any image is decoded or any training step runs; the
`no_training` fixture turns reaching those stages into a test failure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfit import cli


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # the default --out (runs/run) lands in tmp_path, not the repo


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import medfit.training.fit as fit_module
    import medfit.training.setup as setup_module

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the error path reached decoding/training")

    monkeypatch.setattr(setup_module, "cache_splits", forbidden)
    monkeypatch.setattr(fit_module, "_train", forbidden)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(path)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(3):
            _image(root / "train" / cls / f"{i}.png")
    return root


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medfit: error: ")
    return lines[0]


def test_guard_stops_a_valid_run(data: Path) -> None:
    # The no_training fixture is what makes "fails before training" checkable: a valid command
    # gets as far as decoding and is stopped there.
    with pytest.raises(AssertionError, match="reached decoding"):
        cli.main(["train", str(data), "--model", "resnet18", "--weights", "none"])


def test_train_missing_data_dir(capsys) -> None:
    line = _fails(["train", "/no/such/dir"], capsys)
    assert "/no/such/dir" in line


def test_train_without_data(capsys) -> None:
    assert "no data" in _fails(["train"], capsys)


def test_train_single_class(tmp_path: Path, capsys) -> None:
    for i in range(3):
        _image(tmp_path / "one" / "train" / "only" / f"{i}.png")
    line = _fails(["train", str(tmp_path / "one")], capsys)
    assert "only one class" in line
    assert "only" in line


def test_train_empty_class_folder(data: Path, capsys) -> None:
    (data / "train" / "c_empty").mkdir()
    line = _fails(["train", str(data)], capsys)
    assert "c_empty" in line


def test_train_data_is_a_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "x.png"
    _image(target)
    assert "is a file" in _fails(["train", str(target)], capsys)


def test_train_unknown_model(data: Path, capsys) -> None:
    line = _fails(["train", str(data), "--model", "resnet181", "--out", "r"], capsys)
    assert "resnet181" in line
    assert "did you mean" in line and "resnet18" in line


def test_train_missing_weights_file(data: Path, capsys) -> None:
    line = _fails(["train", str(data), "--weights", "/no/such.pth"], capsys)
    assert "/no/such.pth" in line


def test_train_lite_weights_for_resnet(data: Path, capsys) -> None:
    line = _fails(["train", str(data), "--model", "resnet18", "--weights", "lite"], capsys)
    assert "resnet18" in line


def test_lr_not_a_number_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "data", "--lr", "fast"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "expected a number or 'auto', got 'fast'" in err.strip().splitlines()[-1]


def test_predict_not_a_run(tmp_path: Path, capsys) -> None:
    image = tmp_path / "x.png"
    _image(image)
    line = _fails(["predict", "/not/a/run", str(image)], capsys)
    assert "/not/a/run" in line and "not a medfit run" in line


def test_train_resume_not_a_run(capsys) -> None:
    assert "/not/a/run" in _fails(["train", "--resume", "/not/a/run"], capsys)


def test_train_missing_config(capsys) -> None:
    line = _fails(["train", "--config", "missing.yaml"], capsys)
    assert "config file not found" in line and "missing.yaml" in line


def test_train_config_with_unknown_key(tmp_path: Path, data: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epoch: 3\n")
    line = _fails(["train", str(data), "--config", str(config)], capsys)
    assert "'epoch'" in line and "did you mean 'epochs'" in line


def test_train_config_invalid_yaml_is_one_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train: [a, b\n  c: :\n")
    assert "not valid YAML" in _fails(["train", "--config", str(config)], capsys)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--epochs", "0", "--head-epochs", "0"], "nothing to train"),
        (["--img-size", "8"], "--img-size"),
        (["--batch-size", "0"], "--batch-size"),
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--seeds", "0"], "--seeds"),
    ],
)
def test_train_bad_option_values(data: Path, capsys, extra: list[str], words: str) -> None:
    assert words in _fails(["train", str(data), *extra], capsys)


def test_resume_seeds_of_a_plain_folder(tmp_path: Path, capsys) -> None:
    assert "no seeds_config.yaml" in _fails(
        ["train", "--resume", str(tmp_path), "--seeds", "2"], capsys
    )


def test_lr_find_missing_data_dir(capsys) -> None:
    assert "/no/such/dir" in _fails(["lr-find", "/no/such/dir"], capsys)


def test_unknown_model_hint_names_a_real_command(data: Path, capsys) -> None:
    line = _fails(["train", str(data), "--model", "resnet181"], capsys)
    if "medfit models" in line:
        try:
            args = cli.build_parser().parse_args(["models"])
        except SystemExit:
            pytest.fail("the hint names `medfit models`, which argparse rejects")
        assert args.command == "models"


def test_failed_train_leaves_no_run_directory(tmp_path: Path, capsys) -> None:
    _fails(["train", "/no/such/dir"], capsys)
    assert not (tmp_path / "runs").exists()
