"""From a data directory to cached, ready-to-batch splits."""

from __future__ import annotations

from pathlib import Path

from medfit.config import DataConfig
from medfit.data.cache import CachedSplit, build_or_load, default_cache_dir
from medfit.data.groups import apply_group_pattern
from medfit.data.manifest import LabelFormat, index_manifest, is_manifest_path
from medfit.data.sources import DatasetIndex, index_folder, stratified_subset
from medfit.errors import DataError
from medfit.progress import Log


def load_index(cfg: DataConfig, seed: int) -> DatasetIndex:
    """Index `cfg.root`: a .csv/.tsv/.txt manifest file, else a folder layout; with
    `cfg.group_pattern`, ids from file names, and a val split off train made by them."""
    if is_manifest_path(cfg.root):
        labels = LabelFormat(cfg.task, cfg.label_sep, cfg.none_label)
        index = index_manifest(cfg.root, cfg.val_fraction, seed, labels)
    else:
        index = index_folder(cfg.root, cfg.val_fraction, seed)
    if cfg.group_pattern:
        index = apply_group_pattern(index, cfg.group_pattern, cfg.val_fraction, seed)
    return index


def cache_splits(
    index: DatasetIndex,
    cfg: DataConfig,
    cache_size: int,
    interpolation: str,
    seed: int,
    log: Log,
    splits: tuple[str, ...] = ("train", "val"),
) -> dict[str, CachedSplit]:
    """Decode (once, cached) the requested splits into squares of side `cache_size` (the model's
    `Preprocess.cache_size`: its input size plus the crop margin)."""
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    limits = {"train": cfg.max_train, "val": cfg.max_val}
    cached: dict[str, CachedSplit] = {}
    for split in splits:
        samples = stratified_subset(index.split(split), limits.get(split), seed)
        if not samples:
            continue
        part = build_or_load(
            samples, cache_size, cache_dir, interpolation, desc=f"decode {split}", log=log
        )
        _report_skipped(split, part, cfg.strict, log)
        if len(part.labels) == 0:
            raise DataError(f"no readable images in the {split} split of {index.root}")
        cached[split] = part
    return cached


def _report_skipped(split: str, part: CachedSplit, strict: bool, log: Log) -> None:
    if not part.skipped:
        return
    first = "; ".join(reason for _, reason in part.skipped[:3])
    if strict:
        raise DataError(f"{len(part.skipped)} unreadable image(s) in {split} (--strict): {first}")
    log(f"warning: skipped {len(part.skipped)} unreadable image(s) in {split}: {first}")
