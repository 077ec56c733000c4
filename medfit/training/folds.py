"""`medfit train DATA --folds K`: K members on grouped, stratified folds of the labelled pool,
their out-of-fold (OOF) predictions, and the members as one model.

On a small set one val split of 100-500 images can neither select a model nor say how good it
is; k-fold gives every labelled image one honest prediction (from the member that never trained
on it) and bags K models, as AUCMEDI and MONAI's k-fold recipes do. The pool is exactly what a
single run sees: train + val (after --max-train/--max-val); the test split is never touched.

RUN/folds_config.yaml      the config as requested (continuing needs the same)
RUN/folds.csv              path,label,group,fold of every pool image (from pool, K and the seed)
RUN/manifests/fold<k>.csv  member k's data: fold k as val, the other folds as train, and test
RUN/fold<k>/               member k, an ordinary run (eval, predict, report work on it alone)
RUN/oof_logits.npz         each pool image's logits from the member that held it out
RUN/folds.json             the members table, OOF point metrics, failed members
RUN/config.yaml            the ensemble's config: member 0's resolved recipe on the original data
RUN/eval_oof.json          `medfit eval RUN --split oof` (run at the end of training): OOF metrics
                           with bootstrap CIs; calibration.json, the temperature fitted on them

Multi-label data (several labels per image) works the same way: the folds are stratified on each
image's stratification key (`Sample.label`: its rarest positive label) and every fold's training
part holds a positive of every label; folds.csv and the member manifests write an image's labels
as `label_text` does ("A|B", "(none)") and each member reads them back with exactly that format,
so every member has the run's labels in the run's order. oof_logits.npz then holds (N, L) logits
and (N, L) 0/1 labels, the members' point metrics are macro ROC-AUC (and label-wise accuracy,
balanced accuracy and macro F1 at p = 0.5), and the ensemble averages the members' sigmoid
probabilities (`FoldEnsemble(multilabel=True)`); eval fits per-label temperatures and thresholds
on the OOF predictions.

Calling `train_folds` again on the same OUT continues (`medfit train --resume RUN --folds K`):
each member is reused, resumed or trained as `finish_member` decides. A member that fails is
recorded and the others still train; the job then ends with an error naming it.

Under torchrun (`torchrun --nproc-per-node N -m medfit train DATA --folds K`) every rank runs
each member's fit in turn (a DistributedDataParallel run, as a single torchrun train). Rank 0
alone writes the job's files and prints, decides each member's step (`finish_member`), computes
the OOF logits and writes folds.json. After each member the ranks agree whether it failed on any
of them (`distributed.first_failure` records the error of the rank where it started), so all go
on to the next member together and end with the same outcome. A rank that fails alone lets go of
the run at once (`distributed.attempt_run`): with Gloo the ranks still in it fail at their next
collective; with NCCL they wait out the process-group timeout, and torchrun then stops the job
(`--resume` continues it).
"""

from __future__ import annotations

import copy
import csv
import io
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from medfit.config import RunConfig
from medfit.data.dataset import load_index
from medfit.data.folds import assign_folds
from medfit.data.sources import (
    LABEL_JOIN,
    NO_LABELS,
    DatasetIndex,
    Sample,
    label_text,
    stratified_subset,
)
from medfit.errors import ConfigError, DataError, MedfitError
from medfit.files import atomic_write_bytes
from medfit.inference import Predictor
from medfit.inference.scores import multilabel_epoch_metrics, sigmoid
from medfit.progress import Log, duration
from medfit.rundir import RunDir
from medfit.training import distributed
from medfit.training.members import check_same_request, finish_member
from medfit.training.setup import absolute_data_paths, check_distributed


@dataclass
class FoldsResult:
    dir: Path
    members: list[dict[str, Any]]  # one per fold: fold, dir, status, val_images, val metrics
    oof: dict[str, Any]  # n_images and the OOF point metrics of the finished members
    multilabel: bool = False  # several labels per image: macro AUC leads the metrics


@dataclass
class _FoldJob:
    """What every member's steps share: the request, the run directory, the labelled pool with
    its fold of each image, and the OOF logits the members fill in (rank 0)."""

    cfg: RunConfig
    out: RunDir
    index: DatasetIndex
    pool: list[Sample]
    folds: np.ndarray  # (N,) the fold of each pool image
    oof: np.ndarray  # (N, C) logits, NaN until the image's member has predicted it
    log: Log


def train_folds(cfg: RunConfig, k: int, log: Log = print) -> FoldsResult:
    """Train (or reuse, or resume) the K members of `cfg` under cfg.out; write the OOF files.

    Under torchrun every rank calls this; every rank returns (or raises) the same result.
    """
    if k < 2:
        raise ConfigError(f"--folds must be >= 2, got {k}")
    cfg.validate()
    ctx = distributed.launched()
    if ctx.enabled:  # refused once for the job, not by each member's fit (or on one rank alone)
        check_distributed(cfg, distributed.device_for(ctx, cfg.train.device))
    say = distributed.rank_log(log)
    cfg = replace(cfg, data=absolute_data_paths(cfg.data))
    out = RunDir(Path(cfg.out).expanduser())
    check_same_request(cfg, out.folds_config, "fold", write=ctx.is_main)
    index = load_index(cfg.data, cfg.train.seed)
    if index.multilabel:
        check_writable_labels(index)
    pool = labelled_pool(index, cfg)
    folds = assign_folds(pool, len(index.classes), k, cfg.train.seed, index.classes)
    write_folds_csv(out, pool, folds, index.classes, write=ctx.is_main)
    say(describe_folds(pool, folds, index, k))
    members: list[dict[str, Any]] = []
    oof = np.full((len(pool), len(index.classes)), np.nan, dtype=np.float32)  # filled on rank 0
    job = _FoldJob(cfg, out, index, pool, folds, oof, say)
    started = time.perf_counter()
    for fold in range(k):
        say(
            f"medfit folds: fold {fold + 1}/{k} -> {out.member(fold)}{_time_left(started, fold, k)}"
        )
        members.append(_run_member(job, fold))
    with distributed.joined():
        result = distributed.on_main(partial(_finish, job, members))
    for line in table_lines(result):
        say(line)
    failed = [m for m in members if m["status"] == "failed"]
    if failed:
        names = ", ".join(f"{m['dir']} ({m['error']})" for m in failed)
        error = MedfitError(
            f"{len(failed)} of {k} folds failed: {names}; the others are kept. Fix the cause, "
            f"then continue with: medfit train --resume {out.path} --folds {k}"
        )
        raise distributed.rank_error(ctx, error) if ctx.enabled else error  # every rank: exit 2
    return result


def resume_folds(out: str | Path, k: int, log: Log = print) -> FoldsResult:
    """Continue `train_folds` in OUT with the config it was started with."""
    path = RunDir(Path(out).expanduser()).folds_config
    if not path.is_file():
        raise MedfitError(f"{path.parent} holds no fold runs (no {path.name})")
    cfg = RunConfig.load(path)
    cfg.out = str(path.parent)
    return train_folds(cfg, k, log)


def labelled_pool(index: DatasetIndex, cfg: RunConfig) -> list[Sample]:
    """train + val, each subset as a single run subsets it (--max-train, --max-val)."""
    seed = cfg.train.seed
    train = stratified_subset(index.split("train"), cfg.data.max_train, seed)
    val = stratified_subset(index.split("val"), cfg.data.max_val, seed)
    if not train:
        raise DataError(f"{index.root}: no training images")
    return train + val


def check_writable_labels(index: DatasetIndex) -> None:
    """Multi-label names must survive the member manifests' cells (joined by LABEL_JOIN, the
    empty set written NO_LABELS), or a member would learn other labels than the run."""
    for name in index.classes:
        if LABEL_JOIN in name or name.lower() == NO_LABELS.lower():
            raise DataError(
                f"{index.root}: the label {name!r} cannot be written to the fold manifests "
                f"(labels are joined by {LABEL_JOIN!r} there and {NO_LABELS!r} means none); "
                "rename it"
            )


def label_cell(sample: Sample, classes: list[str]) -> str:
    """A sample's label as folds.csv and the member manifests write it: the class name, or the
    labels joined by LABEL_JOIN (NO_LABELS for none) for multi-label data."""
    if sample.targets is not None:
        return label_text(sample.targets, classes)
    return classes[sample.label]


def describe_folds(pool: list[Sample], folds: np.ndarray, index: DatasetIndex, k: int) -> str:
    grouped = sum(s.group is not None for s in pool)
    sizes = np.bincount(folds, minlength=k).tolist()
    how = (
        f"{grouped} images carry a group id; a group never spans folds"
        if grouped
        else ("no group ids: image by image")
    )
    return (
        f"medfit folds: {k} grouped, stratified folds of {len(pool)} train+val images "
        f"(fold sizes {sizes}; {how}); test untouched ({len(index.split('test'))} images)"
    )


def _time_left(started: float, done: int, k: int) -> str:
    if done == 0:
        return ""
    per_member = (time.perf_counter() - started) / done
    return f" (about {duration(per_member * (k - done))} left)"


def write_folds_csv(
    out: RunDir, pool: list[Sample], folds: np.ndarray, classes: list[str], write: bool = True
) -> None:
    """folds.csv; an existing one must agree (same pool, K and seed give the same folds).
    Under torchrun every rank checks (all refuse alike) and rank 0 alone writes (`write`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "group", "fold"])
    for sample, fold in zip(pool, folds, strict=True):
        writer.writerow([sample.path, label_cell(sample, classes), sample.group or "", int(fold)])
    text = buffer.getvalue()
    if out.folds_csv.is_file():
        if out.folds_csv.read_text(encoding="utf-8", errors="surrogateescape") != text:
            raise DataError(
                f"{out.folds_csv} does not match this request: the images, labels, --folds K "
                "or --seed differ from when the folds were drawn; use the same K, or another --out"
            )
        return
    if write:
        out.write_text(out.folds_csv, text)


def member_manifest(
    out: RunDir, fold: int, pool: list[Sample], folds: np.ndarray, index: DatasetIndex
) -> Path:
    """RUN/manifests/fold<k>.csv: path,label,split,group with fold k as val, others as train."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split", "group"])
    rows = [(s, "val" if f == fold else "train") for s, f in zip(pool, folds, strict=True)]
    rows += [(s, "test") for s in index.split("test")]
    for sample, split in rows:
        writer.writerow([sample.path, label_cell(sample, index.classes), split, sample.group or ""])
    path = manifest_path(out, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(path, buffer.getvalue())
    return path


def manifest_path(out: RunDir, fold: int) -> Path:
    return out.manifests / f"fold{fold}.csv"


def member_config(cfg: RunConfig, manifest: Path, multilabel: bool = False) -> RunConfig:
    """The request, on the member's manifest (which already holds the subset and the groups);
    multi-label: read in the format `label_cell` wrote it."""
    member = copy.deepcopy(cfg)
    member.data.root = str(manifest)
    member.data.max_train = None
    member.data.max_val = None
    member.data.group_pattern = None
    if multilabel:
        member.data.task = "multilabel"
        member.data.label_sep = LABEL_JOIN
        member.data.none_label = NO_LABELS
    return member


def _run_member(job: _FoldJob, fold: int) -> dict[str, Any]:
    """Finish member `fold` (every rank), then fill its rows of `job.oof` with its logits (rank
    0); a failure on any rank is the member's row on all of them."""
    path = job.out.member(fold)
    val_images = int((job.folds == fold).sum())
    row: dict[str, Any] = {"fold": fold, "dir": path.name, "val_images": val_images}
    member = member_config(job.cfg, manifest_path(job.out, fold), job.index.multilabel)
    prepare = partial(member_manifest, job.out, fold, job.pool, job.folds, job.index)
    # One member's failure must not lose the others: it becomes the member's row.
    status, failure = distributed.attempt_run(
        partial(finish_member, member, path, job.log, prepare)
    )
    if status is not None:
        row["status"] = status
    with distributed.joined():
        error = distributed.first_failure(failure)
        return distributed.on_main(partial(_settle_member, job, row, error))


def _settle_member(job: _FoldJob, row: dict[str, Any], failure: str | None) -> dict[str, Any]:
    """The member's row (rank 0): its OOF logits into `job.oof`, or the failure that stopped it."""
    fold = row["fold"]
    path = job.out.member(fold)
    if failure is None:
        rows = np.flatnonzero(job.folds == fold)
        files = [job.pool[i].path for i in rows]
        try:
            job.oof[rows] = member_logits(
                path, files, job.index.classes, job.cfg, job.index.multilabel
            )
        except Exception as exc:  # as a failed fit: recorded, the other members still run
            failure = f"{type(exc).__name__}: {exc}"
    if failure is not None:
        job.log(f"  fold {fold} failed: {failure}")
        return {**row, "status": "failed", "error": failure}
    summary = RunDir(path).read_summary()
    row["best_epoch"] = summary.best_epoch if summary else None
    row["wall_s"] = summary.wall_s if summary else None
    return row


def member_logits(
    path: Path, files: list[str], classes: list[str], cfg: RunConfig, multilabel: bool = False
) -> np.ndarray:
    """(N, C) logits of the member's best checkpoint on FILES; NaN rows for unreadable files."""
    predictor = Predictor(path, device=cfg.train.device)
    what = "labels" if multilabel else "classes"
    if predictor.classes != classes:
        raise MedfitError(
            f"{path} learned {what} {predictor.classes}, the data has {classes}: "
            f"a fold lost a {what[:-1]}; use fewer folds"
        )
    if predictor.multilabel != multilabel:
        kind = "multi-label" if predictor.multilabel else "single-label"
        raise MedfitError(
            f"{path} is a {kind} run and the data is not; train it again: medfit train "
            f"--resume {path.parent} --folds K after removing {path}"
        )
    logits = np.full((len(files), len(classes)), np.nan, dtype=np.float32)
    batch = cfg.train.batch_size
    for start in range(0, len(files), batch):
        squares, rows = [], []
        for i in range(start, min(start + batch, len(files))):
            try:
                squares.append(predictor.load_square(files[i]))
                rows.append(i)
            except MedfitError:  # DecodeError: training skipped this file as well
                continue
        if squares:
            x = predictor.model_input(np.stack(squares))
            logits[rows] = predictor.view_logits(x, tta=False)[0]
    return logits


def _finish(job: _FoldJob, members: list[dict[str, Any]]) -> FoldsResult:
    """Write the OOF files, folds.json and (once a member finished) the ensemble's config.yaml."""
    cfg, out, pool, oof, index = job.cfg, job.out, job.pool, job.oof, job.index
    classes = index.classes
    seen = np.isfinite(oof).all(axis=1)
    labels = pool_labels(pool, index)
    for m in members:
        if m["status"] != "failed":
            m.update(_member_oof_metrics(out.member(m["fold"]), pool, labels, oof))
    metrics = _point_metrics(labels[seen], oof[seen]) if seen.any() else {}
    result = FoldsResult(
        out.path, members, {"n_images": int(seen.sum()), **metrics}, index.multilabel
    )
    _write_oof(out, pool, labels, oof, seen, classes)
    out.write_json(
        out.folds_json,
        {"k": len(members), "members": members, "oof": result.oof, "classes": classes},
    )
    finished = [m for m in members if m["status"] != "failed"]
    if finished:
        _write_ensemble_config(cfg, out, out.member(finished[0]["fold"]))
    return result


def pool_labels(pool: list[Sample], index: DatasetIndex) -> np.ndarray:
    """(N,) class indices, or (N, L) 0/1 targets of a multi-label pool."""
    if index.multilabel:
        rows = [s.targets or (0,) * len(index.classes) for s in pool]
        return np.array(rows, dtype=int).reshape(len(pool), len(index.classes))
    return np.array([s.label for s in pool])


def _member_oof_metrics(
    path: Path, pool: list[Sample], labels: np.ndarray, oof: np.ndarray
) -> dict[str, Any]:
    held_out = {r.path for r in RunDir(path).read_split_rows() if r.split == "val"}
    rows = np.array([s.path in held_out for s in pool]) & np.isfinite(oof).all(axis=1)
    return {f"val_{k}": v for k, v in _point_metrics(labels[rows], oof[rows]).items()}


def _point_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | None]:
    """acc, balanced_accuracy, macro_f1 of the argmax; multi-label (labels (N, L)): macro_auc
    first, then those three label by label at p = 0.5 (as a multi-label run's epoch rows)."""
    if len(labels) == 0:
        return {}
    if labels.ndim == 2:  # undefined (no label with both classes held out): None, strict JSON
        scores = multilabel_epoch_metrics(labels, sigmoid(logits))
        named = {"macro_auc": "macro_auc", "acc": "accuracy"}
        named |= {"balanced_accuracy": "balanced_accuracy", "macro_f1": "macro_f1"}
        return {k: _finite_or_none(scores[v]) for k, v in named.items()}
    predicted = logits.argmax(1)
    return {
        "acc": float(accuracy_score(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro")),
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _write_oof(
    out: RunDir,
    pool: list[Sample],
    labels: np.ndarray,
    oof: np.ndarray,
    seen: np.ndarray,
    classes: list[str],
) -> None:
    """oof_logits.npz (what eval fits the ensemble's temperature on) for the images a finished
    member predicted: labels (N,) class indices, or (N, L) 0/1 for multi-label data."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        paths=np.array([s.path for s, ok in zip(pool, seen, strict=True) if ok], dtype=str),
        labels=labels[seen],
        logits=oof[seen],
        classes=np.array(classes, dtype=str),
    )
    atomic_write_bytes(out.oof_logits, lambda f: f.write(buffer.getvalue()))


def _write_ensemble_config(cfg: RunConfig, out: RunDir, member: Path) -> None:
    """config.yaml of RUN: a finished member's resolved recipe, on the original data, so that
    eval/predict/export/serve read RUN as one model (the members are in folds.json)."""
    import yaml

    resolved = RunConfig.load(RunDir(member).config)
    resolved.data = replace(
        cfg.data, img_size=resolved.data.img_size, aug=resolved.data.aug, task=resolved.data.task
    )
    resolved.out = str(out.path)
    out.write_text(out.config, yaml.safe_dump(resolved.to_dict(), sort_keys=False))


def table_lines(result: FoldsResult) -> list[str]:
    if result.multilabel:
        return _multilabel_table_lines(result)
    lines = [f"medfit folds: {len(result.members)} members in {result.dir}"]
    lines.append(f"  {'fold':>4} {'status':>8} {'val n':>6} {'acc':>6} {'bal':>6} {'F1':>6}")
    for m in result.members:
        cells = " ".join(
            f"{m[key]:>6.3f}" if m.get(key) is not None else f"{'n/a':>6}"
            for key in ("val_acc", "val_balanced_accuracy", "val_macro_f1")
        )
        lines.append(f"  {m['fold']:>4} {m['status']:>8} {m['val_images']:>6} {cells}")
    oof = result.oof
    if oof.get("acc") is not None:
        lines.append(
            f"  out-of-fold on {oof['n_images']} images: acc {oof['acc']:.3f}, balanced "
            f"{oof['balanced_accuracy']:.3f}, macro F1 {oof['macro_f1']:.3f} (CIs, calibration: "
            f"medfit eval {result.dir} --split oof)"
        )
    return lines


def _number(value: Any) -> str:
    missing = value is None or not np.isfinite(value)
    return f"{'n/a':>6}" if missing else f"{value:>6.3f}"


def _multilabel_table_lines(result: FoldsResult) -> list[str]:
    """The members table of a multi-label job: macro ROC-AUC on the held-out fold, then the
    label-wise accuracy and macro F1 at p = 0.5."""
    lines = [f"medfit folds: {len(result.members)} members in {result.dir} (multi-label)"]
    lines.append(f"  {'fold':>4} {'status':>8} {'val n':>6} {'AUC':>6} {'acc':>6} {'F1':>6}")
    for m in result.members:
        cells = " ".join(_number(m.get(k)) for k in ("val_macro_auc", "val_acc", "val_macro_f1"))
        lines.append(f"  {m['fold']:>4} {m['status']:>8} {m['val_images']:>6} {cells}")
    oof = result.oof
    if "macro_auc" in oof:
        lines.append(
            f"  out-of-fold on {oof['n_images']} images: macro ROC-AUC "
            f"{_number(oof['macro_auc']).strip()} (labels with a positive and a negative; CIs, "
            f"per-label temperatures and thresholds: medfit eval {result.dir} --split oof)"
        )
    return lines
