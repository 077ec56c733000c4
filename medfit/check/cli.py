"""The `check` and `split` subcommands, for `medfit.cli` to mount:

    medfit check DATA [--group-pattern REGEX|PRESET] [--ids-per-split] [--strict] [--json PATH]
                 [--out RUN_DIR] [--label-sep SEP] [--none-label NAME]
    medfit split DATA --by group|stratified --out MANIFEST.csv [--val-fraction F]
                 [--test-fraction F] [--seed N] [--group-pattern REGEX|PRESET]

Heavy imports (torch, sklearn) happen inside the handlers, so `medfit --help` stays fast.
`--strict` raises `StrictCheckFailed` (a MedfitError: the CLI prints one line and exits 2) after
the report has been printed and written.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from medfit.check.options import DEFAULT_MODEL, FEATURES, NEAR_DHASH_BITS
from medfit.data.presets import PRESETS

if TYPE_CHECKING:
    from medfit.data.sources import DatasetIndex

_PRESET_HELP = "; ".join(f"{name}: {desc}" for name, (_, desc) in PRESETS.items())


def add_check_commands(sub: argparse._SubParsersAction) -> None:
    """Add `check` and `split` to medfit's subcommand parser."""
    p = sub.add_parser(
        "check",
        help="find leakage, duplicates, shortcuts and label problems in DATA before training",
    )
    p.add_argument("data", help="folder with train/<class>/ (and val/, test/) or a manifest")
    _add_group_pattern(p)
    _add_label_format(p)
    p.add_argument(
        "--ids-per-split",
        action="store_true",
        help="the ids are numbered per split (patient 7 of train is not patient 7 of val): an id "
        "in two splits is then two patients, not leakage. Without it, an id in two splits whose "
        "images are not alike is still reported: one patient's scans weeks apart differ too",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 2 on every CRITICAL finding (copies across splits, patient leakage)",
    )
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON here")
    p.add_argument("--out", metavar="RUN_DIR", help="write RUN_DIR/check.json")
    p.add_argument(
        "--features",
        choices=FEATURES,
        default="backbone",
        help="what the label-issue and embedding near-duplicate checks use (default backbone; "
        "thumbnail is fast and needs no model; none skips both)",
    )
    p.add_argument(
        "--no-embeddings",
        dest="features",
        action="store_const",
        const="thumbnail",
        help="same as --features thumbnail",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="backbone for embeddings")
    p.add_argument("--weights", default="auto", help="auto | hub | lite | PATH")
    p.add_argument("--embed-size", type=int, help="embedding input size (default 128 GPU, 64 CPU)")
    p.add_argument(
        "--near-bits",
        type=int,
        default=NEAR_DHASH_BITS,
        help=f"dHash near-duplicate threshold in bits of 256 (default {NEAR_DHASH_BITS})",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, help="decode processes (default: one per CPU core)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="as in train, without val/")
    p.add_argument("--seed", type=int, default=0, help="as in train, for the val split")

    p = sub.add_parser("split", help="write leakage-free train/val(/test) splits as a manifest")
    p.add_argument("data", help="folder with train/<class>/ (and val/, test/) or a manifest")
    p.add_argument("--by", choices=("group", "stratified"), required=True)
    p.add_argument("--out", required=True, metavar="MANIFEST.csv", help="the manifest to write")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of all images")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="re-split test too, with this share (default 0: keep the existing test split)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    _add_group_pattern(p)
    _add_label_format(p)


def _add_group_pattern(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--group-pattern",
        metavar="REGEX|PRESET",
        help="patient id from each path (relative to DATA) by a regex with (?P<group>...), or a "
        f"preset — {_PRESET_HELP}",
    )


def _add_label_format(p: argparse.ArgumentParser) -> None:
    """--label-sep and --none-label, as `medfit train` has them (DataConfig's fields)."""
    from dataclasses import fields

    from medfit.config import DataConfig

    for f in fields(DataConfig):
        if f.name in ("label_sep", "none_label"):
            flag = "--" + f.name.replace("_", "-")
            p.add_argument(flag, default=f.default, help=f"{f.metadata['help']} ({f.default!r})")


def _index(
    args: argparse.Namespace, val_fraction: float, seed: int, group_pattern: str | None
) -> DatasetIndex:
    """The index `medfit train` would see: its val split off train is grouped by the pattern;
    a manifest whose label cells join labels (or with 0/1 label columns) is multi-label."""
    from medfit.config import DataConfig
    from medfit.data.dataset import load_index

    cfg = DataConfig(
        root=args.data,
        val_fraction=val_fraction,
        group_pattern=group_pattern,
        label_sep=args.label_sep,
        none_label=args.none_label,
    )
    return load_index(cfg, seed)


def cmd_check(args: argparse.Namespace) -> None:
    from medfit.check.options import CheckOptions
    from medfit.check.render import render_text
    from medfit.check.run import StrictCheckFailed, run_check
    from medfit.rundir import RunDir

    options = CheckOptions(
        group_pattern=args.group_pattern,
        ids_per_split=args.ids_per_split,
        features=args.features,
        model=args.model,
        weights=args.weights,
        embed_size=args.embed_size,
        device=args.device,
        near_bits=args.near_bits,
        workers=args.workers,
        seed=args.seed,
    )
    options.validate()  # before any image is decoded
    index = _index(args, args.val_fraction, args.seed, args.group_pattern)
    report = run_check(index, options)
    print(render_text(report))
    written = []
    if args.json:
        written.append(report.write(args.json))
    if args.out:
        written.append(report.write(RunDir(Path(args.out)).check))
    for path in written:
        print(f"wrote {path}")
    if args.strict and report.failures:
        raise StrictCheckFailed(f"--strict: {'; '.join(report.failures)}")


def cmd_split(args: argparse.Namespace) -> None:
    from medfit.check.split import make_split

    index = _index(args, 0.15, args.seed, group_pattern=None)
    result = make_split(
        index,
        args.out,
        by=args.by,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        group_pattern=args.group_pattern,
        force=args.force,
    )
    print(result.summary())


CHECK_COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "check": cmd_check,
    "split": cmd_split,
}
