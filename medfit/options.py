"""Command-line options generated from the config fields: a new option is one field in config.py.

    add_config_options(parser)        # --img-size, --lr, --no-ema ... grouped data/model/recipe
    given_options(args)               # {"train.lr": 0.001, ...}: only what the user typed

Each field's `opt(...)` metadata (help, choices, bound, parser) is the option; its type comes from
the annotation, a bool field becomes a flag that flips its default (`--no-ema`, `--strict`), and
`ModelConfig.name` is `--model`. Every argparse default is None, so only the options given
override a --config file or the defaults; the help states the config's default instead.
Torch-free: `medfit --help` imports this.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from medfit.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    flat_to_dotted,
    option_paths,
)

# The groups of `medfit train --help`, one per config section.
SECTIONS = (("data", DataConfig), ("model", ModelConfig), ("recipe", TrainConfig))
NOT_OPTIONS = {"root"}  # the positional DATA
_TYPES = {"int": int, "float": float, "str": None}


def _dest(cls: type, name: str) -> str:
    return "model" if cls is ModelConfig and name == "name" else name


def _scalar_type(annotation: str) -> type | None:
    """int for `int | None`, float for `float`, None (a string) otherwise."""
    parts = [p.strip() for p in annotation.split("|") if p.strip() != "None"]
    return _TYPES.get(parts[0]) if len(parts) == 1 else None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Every config field as an option of `parser`, in data/model/recipe groups."""
    for title, cls in SECTIONS:
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(cls):
            if f.name in NOT_OPTIONS:
                continue
            meta, dest = f.metadata, _dest(cls, f.name)
            flag = "--" + dest.replace("_", "-")
            if str(f.type) == "bool":
                group.add_argument(
                    f"--no-{flag[2:]}" if f.default else flag,
                    dest=dest,
                    action="store_const",
                    const=not f.default,
                    help=meta.get("help") or None,
                )
                continue
            kwargs: dict[str, Any] = {"dest": dest, "help": meta.get("help") or None}
            parse = meta.get("parse") or _scalar_type(str(f.type))
            if parse is not None:
                kwargs["type"] = parse
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
            group.add_argument(flag, **kwargs)
    _show_config_defaults(parser)


def _show_config_defaults(parser: argparse.ArgumentParser) -> None:
    """Append the config's default to each option's help, read from the dataclasses themselves
    (argparse's own defaults are None, so that only the options given override a --config)."""
    defaults = RunConfig().to_dict()
    for action in parser._actions:
        path = option_paths().get(action.dest)
        if path is None or action.nargs == 0 or "default" in (action.help or ""):
            continue  # flags (store_const) say their effect; some helps state a smarter default
        section, field = path.split(".")
        value = defaults[section][field]
        if value is not None:  # None: off, or decided at run time (said in the help)
            action.help = f"{action.help or ''} (default: {value})".lstrip()


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line (argparse defaults are None: not given)."""
    given = {k: v for k, v in vars(args).items() if k in option_paths() and v is not None}
    given.pop("data_dir", None)
    return flat_to_dotted(given)
