"""RunConfig: the dumped config re-loads to the same run, and every bad value or file is a
ConfigError that says what is wrong (never a traceback from deep inside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfit.config import (
    AUG_PRESETS,
    BALANCE_MODES,
    BN_POLICIES,
    SELECT_METRICS,
    RunConfig,
)
from medfit.errors import ConfigError


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_default_config_is_valid() -> None:
    cfg = RunConfig()
    cfg.validate()
    assert cfg.train.lr is None  # resolved from the BN policy at run time


def test_dump_load_round_trip_of_defaults(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.dump(tmp_path / "config.yaml")
    assert RunConfig.load(tmp_path / "config.yaml").to_dict() == cfg.to_dict()


def test_dump_load_round_trip_with_every_kind_of_value(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.data.root = "/data/chest xray"
    cfg.data.img_size = 128
    cfg.data.val_fraction = 0.2
    cfg.data.max_train = 500
    cfg.data.strict = True
    cfg.data.cache_dir = "/tmp/cache"
    cfg.data.aug = "xray"
    cfg.model.name = "resnet18"
    cfg.model.weights = "none"
    cfg.train.lr = "auto"
    cfg.train.head_lr = 2.5e-4
    cfg.train.weight_decay = 1e-5
    cfg.train.warmup_epochs = 0.5
    cfg.train.ema = False
    cfg.train.bn = "frozen"
    cfg.out = "runs/exp 1"
    cfg.validate()
    path = tmp_path / "config.yaml"
    cfg.dump(path)
    loaded = RunConfig.load(path)
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.train.lr == "auto"
    assert loaded.data.max_val is None
    loaded.validate()  # a dumped config is valid as loaded
    assert loaded.to_dict() == cfg.to_dict()


def test_partial_yaml_keeps_defaults_for_the_rest(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "train:\n  epochs: 3\nmodel:\n")
    cfg = RunConfig.load(path)
    expected = RunConfig()
    expected.train.epochs = 3
    assert cfg.to_dict() == expected.to_dict()


def test_empty_yaml_file_is_the_default_config(tmp_path: Path) -> None:
    assert RunConfig.load(write_yaml(tmp_path, "")).to_dict() == RunConfig().to_dict()


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("train:\n  epoch: 3\n", "epochs"),
        ("data:\n  img_szie: 64\n", "img_size"),
        ("trian:\n  epochs: 3\n", "train"),
    ],
)
def test_unknown_key_suggests_the_close_name(tmp_path: Path, text: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=rf"did you mean '{suggestion}'"):
        RunConfig.load(write_yaml(tmp_path, text))


def test_unknown_key_without_a_close_name_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.load(write_yaml(tmp_path, "model:\n  zzzzzz: 1\n"))
    message = str(info.value)
    assert "zzzzzz" in message and "did you mean" not in message
    assert "drop_rate" in message and "weights" in message


@pytest.mark.parametrize(
    ("section", "name", "choices"),
    [
        ("data", "aug", AUG_PRESETS),
        ("train", "bn", BN_POLICIES),
        ("train", "balance", BALANCE_MODES),
        ("train", "select_metric", SELECT_METRICS),
    ],
)
def test_bad_choice_lists_the_valid_choices(
    section: str, name: str, choices: tuple[str, ...]
) -> None:
    cfg = RunConfig()
    setattr(getattr(cfg, section), name, "bogus")
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    assert f"{section}.{name}" in message and "bogus" in message
    for choice in choices:
        assert choice in message


@pytest.mark.parametrize("name", ["lr", "head_lr"])
def test_non_numeric_lr_is_an_error(name: str) -> None:
    cfg = RunConfig()
    setattr(cfg.train, name, "fast")
    with pytest.raises(ConfigError, match=rf"--{name.replace('_', '-')}.*'fast'"):
        cfg.validate()


@pytest.mark.parametrize(("given", "expected"), [("0.01", 0.01), ("1e-3", 1e-3), ("auto", "auto")])
def test_lr_strings_become_numbers_and_auto_stays(given: str, expected: float | str) -> None:
    cfg = RunConfig()
    cfg.train.lr = given
    cfg.train.head_lr = given
    cfg.validate()
    assert cfg.train.lr == expected and type(cfg.train.lr) is type(expected)
    assert cfg.train.head_lr == expected


def test_yaml_exponent_lr_written_by_hand_is_accepted(tmp_path: Path) -> None:
    # PyYAML reads `1e-3` (no dot) as a string; validate() must still turn it into a number.
    cfg = RunConfig.load(write_yaml(tmp_path, "train:\n  lr: 1e-3\n"))
    cfg.validate()
    assert cfg.train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("section", "name", "value", "match"),
    [
        ("train", "epochs", -1, "epochs"),
        ("train", "head_epochs", -1, "epochs"),
        ("train", "batch_size", 0, "batch-size"),
        ("data", "img_size", 8, "img-size"),
        ("data", "img_size", 15, "img-size"),
        ("data", "val_fraction", 1.5, "val-fraction"),
        ("data", "val_fraction", 1.0, "val-fraction"),
        ("data", "val_fraction", 0.0, "val-fraction"),
    ],
)
def test_out_of_range_values_are_errors(section: str, name: str, value: float, match: str) -> None:
    cfg = RunConfig()
    setattr(getattr(cfg, section), name, value)
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


def test_nothing_to_train_is_an_error() -> None:
    cfg = RunConfig()
    cfg.train.epochs = 0
    cfg.train.head_epochs = 0
    with pytest.raises(ConfigError, match="both 0"):
        cfg.validate()


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("train", "epochs", 0),  # head-only training is allowed
        ("train", "head_epochs", 0),
        ("train", "batch_size", 1),
        ("data", "img_size", 16),
        ("data", "img_size", None),
        ("data", "val_fraction", 0.5),
    ],
)
def test_boundary_values_are_accepted(section: str, name: str, value: object) -> None:
    cfg = RunConfig()
    setattr(getattr(cfg, section), name, value)
    cfg.validate()
    assert getattr(getattr(cfg, section), name) == value


def test_override_sets_values_and_skips_none() -> None:
    cfg = RunConfig()
    cfg.override({"train.lr": None, "train.epochs": 4, "data.img_size": 96, "model.name": None})
    assert cfg.train.lr is None
    assert cfg.model.name == RunConfig().model.name
    assert cfg.train.epochs == 4
    assert cfg.data.img_size == 96


def test_override_unknown_option_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"train\.nope"):
        RunConfig().override({"train.nope": 1})


def test_override_unknown_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"nope\.lr"):
        RunConfig().override({"nope.lr": 1})


def test_non_mapping_yaml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.load(write_yaml(tmp_path, "- train\n- data\n"))


def test_invalid_yaml_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.load(write_yaml(tmp_path, "train: [epochs: 3\n  lr: {\n"))


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.load(tmp_path / "nope.yaml")


def test_section_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train"):
        RunConfig.load(write_yaml(tmp_path, "train: 5\n"))


def test_wrongly_typed_value_is_a_config_error(tmp_path: Path) -> None:
    cfg = RunConfig.load(write_yaml(tmp_path, "train:\n  epochs: ten\n"))
    with pytest.raises(ConfigError, match="epochs"):
        cfg.validate()


def test_compile_with_deterministic_is_refused() -> None:
    cfg = RunConfig()
    cfg.train.compile = True
    cfg.validate()  # alone it is fine
    cfg.train.deterministic = True
    with pytest.raises(ConfigError, match="--deterministic and --compile"):
        cfg.validate()
