"""RunConfig: the dumped config re-loads to the same run, and every bad value or file is a
ConfigError that says what is wrong (never a traceback from deep inside)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from medfit.config import (
    AUG_PRESETS,
    BALANCE_MODES,
    BN_POLICIES,
    RANGES,
    SELECT_METRICS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_resume_options,
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


def _numeric_fields() -> list[str]:
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    return [
        f"{section}.{f.name}"
        for section, cls in sections.items()
        for f in dataclasses.fields(cls)
        if any(t in str(f.type).split(" | ") for t in ("int", "float"))
    ]


def test_every_numeric_field_has_a_range() -> None:
    # A new numeric option without a range would accept nan, inf and negative values unchecked.
    assert sorted(_numeric_fields()) == sorted(RANGES)


def _set(cfg: RunConfig, key: str, value: object) -> None:
    section, _, name = key.partition(".")
    setattr(getattr(cfg, section), name, value)


@pytest.mark.parametrize("key", sorted(RANGES))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused_everywhere(key: str, value: float) -> None:
    cfg = RunConfig()
    _set(cfg, key, value)
    with pytest.raises(ConfigError, match=key.partition(".")[2]):  # an int field: a type error
        cfg.validate()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.img_size", 1025),
        ("data.max_train", 0),
        ("data.max_val", -5),
        ("model.drop_rate", 1.0),
        ("train.lr", 0.0),
        ("train.head_lr", -1e-3),
        ("train.layer_decay", 1.5),
        ("train.weight_decay", -1.0),
        ("train.label_smoothing", 1.0),
        ("train.ema_decay", 1.0),
        ("train.grad_clip", -0.1),
        ("train.smooth", 0),
        ("train.seed", -1),
        ("train.seed", 2**32),
        ("train.workers", -1),
    ],
)
def test_values_outside_their_range_are_refused(key: str, value: float) -> None:
    cfg = RunConfig()
    _set(cfg, key, value)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    assert key in message and f"got {value}" in message and "\n" not in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.img_size", 1024),
        ("data.max_train", 1),
        ("train.grad_clip", 0.0),  # off
        ("train.patience", 0),  # off
        ("train.seed", 2**32 - 1),
        ("train.label_smoothing", 0.0),
        ("train.lr", "auto"),
    ],
)
def test_range_edges_are_accepted(key: str, value: object) -> None:
    cfg = RunConfig()
    _set(cfg, key, value)
    cfg.validate()


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_spellings_are_accepted(device: str) -> None:
    cfg = RunConfig()
    cfg.train.device = device
    cfg.validate()


@pytest.mark.parametrize("device", ["foo", "gpu", "cuda:", "cuda:-1", "CPU"])
def test_device_misspellings_are_refused(device: str) -> None:
    cfg = RunConfig()
    cfg.train.device = device
    with pytest.raises(ConfigError, match="--device"):
        cfg.validate()


def test_config_that_is_a_folder_names_the_file_inside(tmp_path: Path) -> None:
    write_yaml(tmp_path, "train:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"is a folder.*config\.yaml"):
        RunConfig.load(tmp_path)


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        RunConfig.load(path)


def test_resume_options_extend_epochs_and_keep_runtime_ones() -> None:
    cfg = RunConfig()
    apply_resume_options(
        cfg, {"train.epochs": 12, "train.device": "cpu", "train.lr": None}, "RUN/config.yaml"
    )
    assert (cfg.train.epochs, cfg.train.device, cfg.train.lr) == (12, "cpu", None)


@pytest.mark.parametrize(
    ("dotted", "words"),
    [
        ({"train.epochs": 5}, "--epochs 5 with --resume: the run already plans 10"),
        ({"train.seed": 3}, "--seed 3 with --resume"),
        ({"train.ema": False}, "--no-ema with --resume"),
        ({"model.name": "resnet18"}, "--model resnet18 with --resume"),
    ],
)
def test_resume_options_that_change_the_run_are_refused(dotted: dict, words: str) -> None:
    cfg = RunConfig()
    with pytest.raises(ConfigError, match=r"RUN/config\.yaml") as info:
        apply_resume_options(cfg, dotted, "RUN/config.yaml")
    assert words in str(info.value)
    assert cfg == RunConfig()  # nothing applied


def test_resume_options_equal_to_the_run_are_accepted() -> None:
    cfg = RunConfig()
    apply_resume_options(cfg, {"train.seed": 0, "model.name": cfg.model.name}, "RUN/config.yaml")
    assert cfg == RunConfig()
