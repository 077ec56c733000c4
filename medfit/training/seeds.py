"""The same run with N seeds, and how much the outcome moves between them.

Medical validation sets are small: on MedMNIST+ the same recipe moved by ±2-4 points of accuracy
between seeds, which is larger than the gains recipe changes are usually credited with. One run
per option cannot tell those apart; the mean and sample standard deviation over seeds can.

OUT/seed<k>/   one ordinary run directory per seed (k = cfg.train.seed + i)
OUT/seeds.json the per-seed table and mean ± sd (ddof=1) of each metric, written atomically

Calling `train_seeds` again on the same OUT continues: a seed whose `summary.json` exists is
reused, one with `checkpoints/last.pt` is resumed, anything else is trained from the start.
The seed drives initialisation, augmentation and batch order, and also the validation split and
`--max-train` subset when those are drawn from the data (no val folder), so then the spread
includes split variance: each seed's `split.csv` says which images it used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfit.config import RunConfig
from medfit.errors import ConfigError, MedfitError
from medfit.progress import Log
from medfit.rundir import RunDir
from medfit.training import distributed
from medfit.training.members import check_same_request, finish_member

# Metrics aggregated over seeds, in table order. best_* are the val metrics of the selected
# checkpoint (best.pt, at best_epoch), not the maximum over epochs: that maximum picks noise.
METRICS = (
    "best_epoch",
    "selection_score",
    "final_val_acc",
    "final_val_balanced_accuracy",
    "final_val_macro_f1",
    "best_val_acc",
    "best_val_balanced_accuracy",
    "best_val_macro_f1",
    "wall_s",
)
_VAL_KEYS = ("val_acc", "val_balanced_accuracy", "val_macro_f1")
# One point of accuracy: the size of gain a recipe tweak is usually credited with. A seed-to-seed
# sd above it means single-run comparisons cannot resolve such a gain.
CHASED_DIFFERENCE = 0.01


@dataclass
class SeedsResult:
    dir: Path
    rows: list[dict[str, Any]]  # one per seed, keys: seed, dir, status and METRICS
    mean: dict[str, float]
    sd: dict[str, float | None]  # None with a single seed
    note: str | None  # the seed-noise warning, when it applies


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def train_seeds(cfg: RunConfig, n: int, log: Log = print) -> SeedsResult:
    """Train (or reuse, or resume) N runs of `cfg` with seeds cfg.train.seed + i under cfg.out.

    Under torchrun every rank calls this (each fit needs all ranks); only rank 0 writes files
    other than fit's own and prints, and it decides each seed's step for all (`finish_member`).
    """
    if n < 1:
        raise ConfigError(f"--seeds must be >= 1, got {n}")
    cfg.validate()
    main = distributed.launched().is_main
    say = distributed.rank_log(log)
    out = Path(cfg.out).expanduser()
    check_same_request(cfg, RunDir(out).seeds_config, "seed", write=main)
    rows = []
    for i in range(n):
        seed = cfg.train.seed + i
        say(f"medfit seeds: seed {seed} ({i + 1}/{n})")
        status = _run_one_seed(cfg, seed, seed_dir(out, seed), log)
        rows.append(seed_row(seed_dir(out, seed), seed, status))
    result = summarize(out, rows)
    if main:
        write_seeds_json(result, base_seed=cfg.train.seed)
    for line in table_lines(result):
        say(line)
    return result


def resume_seeds(out: str | Path, n: int, log: Log = print) -> SeedsResult:
    """Continue `train_seeds` in OUT with the config it was started with (OUT/seeds_config.yaml)."""
    path = RunDir(Path(out).expanduser()).seeds_config  # the config as requested
    if not path.is_file():
        raise MedfitError(f"{path.parent} holds no seed runs (no {path.name})")
    cfg = RunConfig.load(path)
    cfg.out = str(path.parent)
    return train_seeds(cfg, n, log)


def _run_one_seed(cfg: RunConfig, seed: int, path: Path, log: Log) -> str:
    """Bring OUT/seed<k> to a finished run; return what it took: reused, resumed or trained."""
    seed_cfg = copy.deepcopy(cfg)
    seed_cfg.train.seed = seed
    return finish_member(seed_cfg, path, log)


def seed_row(path: Path, seed: int, status: str) -> dict[str, Any]:
    """One table row from a finished seed run's summary.json and metrics.jsonl."""
    run = RunDir(path)
    summary = run.read_summary()
    if summary is None:
        raise MedfitError(f"{run.summary} is missing: seed {seed} has not finished; run it again")
    best = next((r for r in run.read_history() if r.epoch == summary.best_epoch), None)
    row: dict[str, Any] = {
        "seed": seed,
        "dir": path.name,
        "status": status,
        "selected_metric": summary.selected_metric,
        "val_images": summary.val_images,
        "best_epoch": summary.best_epoch,
        "selection_score": summary.best_metric,
        "wall_s": summary.wall_s,
    }
    for key in _VAL_KEYS:
        row[f"final_{key}"] = summary.final.get(key)
        row[f"best_{key}"] = getattr(best, key) if best else None
    return row


def summarize(out: Path, rows: list[dict[str, Any]]) -> SeedsResult:
    """Mean and sample sd (ddof=1) of each metric over the seed rows."""
    mean: dict[str, float] = {}
    sd: dict[str, float | None] = {}
    for key in METRICS:
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        mean[key] = float(values.mean()) if len(values) else float("nan")
        sd[key] = float(values.std(ddof=1)) if len(values) > 1 else None
    return SeedsResult(out, rows, mean, sd, noise_note(rows, mean, sd))


def noise_note(
    rows: list[dict[str, Any]], mean: dict[str, float], sd: dict[str, float | None]
) -> str | None:
    """The warning printed when seeds alone move the selection metric by more than a point."""
    spread = sd.get("selection_score")
    if spread is None or spread <= CHASED_DIFFERENCE:
        return None
    metric = rows[0]["selected_metric"]
    if metric == "val_loss":  # the note reads the score as a fraction of images; a loss is not
        return None
    p, n_val = mean["selection_score"], rows[0]["val_images"]
    binomial = float(np.sqrt(max(p * (1 - p), 0.0) / max(n_val, 1)))
    return (
        f"note: {metric} moved by sd {100 * spread:.1f} points across {len(rows)} seeds "
        f"({n_val} val images; binomial noise alone is {100 * binomial:.1f} points). Single-run "
        f"differences smaller than ~{200 * spread:.0f} points (2 sd) are within seed noise: "
        f"compare means over seeds (standard error here {100 * spread / np.sqrt(len(rows)):.1f} "
        "points). MedMNIST+ saw ±2-4 points across seeds."
    )


def write_seeds_json(result: SeedsResult, base_seed: int) -> Path:
    path = RunDir(result.dir).seeds
    data = {
        "n": len(result.rows),
        "base_seed": base_seed,
        "seeds": result.rows,
        "mean": result.mean,
        "sd": result.sd,
        "note": result.note,
    }
    RunDir(result.dir).write_json(path, _finite(data))
    return path


def _finite(value: Any) -> Any:
    """NaN -> None: json.dumps would write NaN, which is not JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# (key, title, decimals) of the printed table; every cell is as wide as its title (min 7).
_COLUMNS = (
    ("best_epoch", "best ep", 0),
    ("selection_score", "selection", 3),
    ("final_val_acc", "final acc", 3),
    ("final_val_balanced_accuracy", "final bal", 3),
    ("final_val_macro_f1", "final F1", 3),
    ("best_val_acc", "best acc", 3),
    ("best_val_balanced_accuracy", "best bal", 3),
    ("best_val_macro_f1", "best F1", 3),
    ("wall_s", "wall s", 0),
)


def _cell(value: Any, title: str, decimals: int) -> str:
    width = max(len(title), 7)
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return f"{'n/a':>{width}}"
    return f"{value:>{width}.{decimals}f}"


def table_lines(result: SeedsResult) -> list[str]:
    """The per-seed table with mean and sd rows, and the noise note when it applies."""
    metric = result.rows[0]["selected_metric"] if result.rows else "?"
    lines = [
        f"medfit seeds: {len(result.rows)} runs in {result.dir} "
        f"(selection = smoothed val {metric}; best = at the selected epoch; sd with ddof=1)",
        f"  {'seed':>5} " + " ".join(f"{t:>{max(len(t), 7)}}" for _, t, _ in _COLUMNS),
    ]
    for row in result.rows:
        cells = " ".join(_cell(row.get(key), t, d) for key, t, d in _COLUMNS)
        lines.append(f"  {row['seed']:>5} {cells}  ({row['status']})")
    for name, stats in (("mean", result.mean), ("sd", result.sd)):
        cells = " ".join(_cell(stats.get(key), t, d + 1) for key, t, d in _COLUMNS)
        lines.append(f"  {name:>5} {cells}")
    if result.note:
        lines.append(result.note)
    return lines
