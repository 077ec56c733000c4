"""Every config field is reachable from `medfit train` and from the API, and lands where it should.

A hand-kept table between the CLI and the config once dropped --optimizer and --normalize
silently; these tests walk the dataclasses, so a new field without an option fails here.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from medfit.cli import build_parser
from medfit.config import RunConfig, flat_to_dotted, option_paths
from medfit.training.cli import config_from_args

NOT_OPTIONS = {"root", "data_dir"}  # the positional DATA


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _action(dest: str) -> argparse.Action:
    return next(a for a in _train_parser()._actions if a.dest == dest)


def _argv_and_value(name: str, default: object) -> tuple[list[str], object]:
    """Command-line words that set `name` to something other than its default, and that value."""
    action = _action(name)
    flag = action.option_strings[0]
    if isinstance(action, argparse._StoreConstAction):
        return [flag], action.const
    if action.choices:
        value = next(c for c in action.choices if c != default)
        return [flag, str(value)], value
    if name in ("lr", "head_lr", "label_smoothing", "val_fraction", "warmup_epochs"):
        return [flag, "0.125"], 0.125
    if isinstance(default, bool):
        raise AssertionError(f"{name}: a bool option must be a flag")
    if isinstance(default, float):
        return [flag, "0.125"], 0.125
    if isinstance(default, int) or name in ("img_size", "max_train", "max_val"):
        return [flag, "17"], 17
    return [flag, "some-value"], "some-value"


def _field_default(dotted: str) -> object:
    section, _, name = dotted.partition(".")
    return getattr(getattr(RunConfig(), section), name)


OPTIONS = sorted(set(option_paths()) - NOT_OPTIONS)


@pytest.mark.parametrize("name", OPTIONS)
def test_every_config_field_is_a_train_option_that_lands(name: str) -> None:
    dotted = option_paths()[name]
    argv, value = _argv_and_value(name, _field_default(dotted))
    args = _train_parser().parse_args(["DATA", *argv])
    cfg = config_from_args(args)
    section, _, field = dotted.partition(".")
    assert getattr(getattr(cfg, section), field) == value


def test_options_not_given_keep_the_defaults() -> None:
    cfg = config_from_args(_train_parser().parse_args(["DATA"]))
    assert cfg.to_dict() == {**RunConfig().to_dict(), "data": {**cfg.to_dict()["data"]}}
    assert cfg.data.root == "DATA"
    assert cfg.train.optimizer == "adamw" and cfg.model.normalize == "weights"


def test_previously_dropped_flags_now_land() -> None:
    args = _train_parser().parse_args(["DATA", "--optimizer", "sgd", "--normalize", "unit"])
    cfg = config_from_args(args)
    assert (cfg.train.optimizer, cfg.model.normalize) == ("sgd", "unit")


def test_api_keywords_cover_every_field() -> None:
    sections = {"data": RunConfig().data, "model": RunConfig().model, "train": RunConfig().train}
    every = {f"{s}.{f.name}" for s, obj in sections.items() for f in dataclasses.fields(obj)}
    assert set(flat_to_dotted({k: 1 for k in option_paths()}).keys()) == every


def test_help_shows_each_config_default_from_the_config_itself() -> None:
    defaults = RunConfig().to_dict()
    shown = 0
    for action in _train_parser()._actions:
        path = option_paths().get(action.dest)
        if path is None or action.nargs == 0:
            continue
        section, field = path.split(".")
        value = defaults[section][field]
        if value is not None and f"(default: {value})" in (action.help or ""):
            shown += 1
        # A default explained by hand ("auto: from the pixels") must still be the config's.
        if "(default " in (action.help or "") and value is not None:
            assert (action.help or "").split("(default ")[1].startswith(str(value)), action.dest
    assert shown >= 20
    assert "(default: 10)" in _action("epochs").help  # type: ignore[operator]


def test_each_option_is_generated_from_its_field() -> None:
    """The flag's choices and type come from the field (config.opt metadata and annotation), a
    bool field is a flag that flips its default, and every argparse default is None."""
    from medfit.config import CHOICES, RANGES, DataConfig, ModelConfig, TrainConfig

    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    for name in OPTIONS:
        dotted = option_paths()[name]
        section, _, field_name = dotted.partition(".")
        field = next(f for f in dataclasses.fields(sections[section]) if f.name == field_name)
        action = _action(name)
        assert action.default is None, name  # only options given override a --config
        if str(field.type) == "bool":
            assert isinstance(action, argparse._StoreConstAction) and action.const is (
                not field.default
            ), name
            assert action.option_strings[0].startswith("--no-") is field.default, name
            continue
        assert tuple(action.choices or ()) == CHOICES.get(dotted, ()), name
        if dotted in RANGES and "str" not in str(field.type):
            assert action.type in (int, float), name
        assert (action.help or "").strip(), f"{name} has no help"
