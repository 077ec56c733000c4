"""Cross-modality suite: one medfit recipe on every set in ../shared/data, several seeds.

A recipe is a name plus `medfit train` options; "defaults" is medfit with no options. Each run is
`medfit train` then `medfit eval --split test` and `--split train` (un-augmented train accuracy of
the selected weights), every command in its own process, one at a time. Results are appended to
the JSON file as each run finishes; a rerun skips the (recipe, set, seed) triples already there.

    .venv/bin/python bench/suite.py                                  # defaults, all sets, 3 seeds
    .venv/bin/python bench/suite.py --recipe lr1e-3 --options "--lr 1e-3"
    .venv/bin/python bench/suite.py --sets breastmnist_28 --seeds 0  # one set, one seed
    .venv/bin/python bench/suite.py --table                          # print the table, run nothing

Sizes (stated in every row): a fixed stratified subset of train (--train-size, drawn once with
seed 0 so every recipe and seed sees the same images), a val subset (--val-size), the whole test
split, at --img-size with --epochs full epochs (plus medfit's head epoch). The subsets are trees
of symbolic links under --work (default ~/.cache/medfit-suite); nothing is copied into the repo.

Per set the table shows test accuracy and balanced accuracy (mean ± sd over seeds), quadratic
weighted kappa for ordinal sets, un-augmented train accuracy of the selected weights, the val swing
ratio (std of epoch-to-epoch Δ val accuracy in the full stage over the binomial sigma of the val
set; ~1.4 is pure noise), wall and CPU seconds, and the published anchor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from machine_info import commit, cpu_description

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
# `python -m medfit` from the checkout --src (e.g. a `git worktree` of the old defaults): the
# editable install's import hook would otherwise load this repo's medfit whatever sys.path says.
LAUNCH = (
    "import runpy, sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
    "sys.path.insert(0, {src!r}); sys.argv[0] = 'medfit'; "
    "runpy.run_module('medfit', run_name='__main__')"
)


def medfit_cmd(src: str) -> list[str]:
    return [sys.executable, "-c", LAUNCH.format(src=str(Path(src).resolve()))]


IMAGE_EXTS = {".png", ".jpg", ".jpeg"}

# Each set: where its splits come from and the published number it is held to (shared/data/README).
# "test" for blood_cells_bccd is its val/ folder (the source repo's TEST images, on which it reports
# 0.8705); its val subset is drawn from train/ images not in the train subset.
SETS: dict[str, dict[str, object]] = {
    "blood_cells_bccd": {
        "anchor": 0.8705,
        "anchor_note": "source repo's CNN, val acc, own split",
        "val_from_train": True,
        "test_from": "val",
    },
    "pbc_blood_cells_72": {"anchor": 0.982, "anchor_note": "MedMNIST+ BloodMNIST 64 px"},
    "knee_oa_kl_128": {
        "anchor": 0.65,
        "anchor_note": "published CNNs 0.65-0.70 at 224 px",
        "ordinal": True,
    },
    "pneumoniamnist_28": {"anchor": 0.893, "anchor_note": "MedMNIST+ 64 px"},
    "pneumoniamnist_28_imbalanced": {
        "anchor": 0.893,
        "anchor_note": "MedMNIST+ 64 px (balanced train)",
        "npz": True,
    },
    "breastmnist_28": {"anchor": 0.878, "anchor_note": "MedMNIST+ 64 px"},
    # Multi-label: its metric is test macro ROC-AUC (labels with >= 10 test positives), not
    # accuracy; it is used whole (600/200/200, patient-grouped) and kept out of the accuracy
    # sets' worst gap. No published number at this size: ChestMNIST (78k images, 28 px) ~0.775.
    "nih_cxr14_1000_64": {
        "anchor": 0.775,
        "anchor_note": "MedMNIST v2 ChestMNIST AUC (78k train images at 28 px); context",
        "multilabel": True,
    },
}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def stratified(files: list[Path], n: int, rng: np.random.Generator) -> list[Path]:
    """n files with the class proportions of `files` (class = parent folder name)."""
    if n >= len(files):
        return files
    by_class: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        by_class[f.parent.name].append(f)
    chosen: list[Path] = []
    for name in sorted(by_class):
        group = by_class[name]
        k = max(1, round(n * len(group) / len(files)))
        chosen += [group[i] for i in sorted(rng.choice(len(group), min(k, len(group)), False))]
    return chosen


def link_split(dst: Path, files: list[Path]) -> None:
    for f in files:
        target = dst / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(f.resolve())


def npz_train_pngs(name: str, work: Path) -> Path:
    """The imbalanced PneumoniaMNIST exists only as an npz: write its train images as PNGs once."""
    from PIL import Image

    out = work / "npz" / name
    done = out / ".done"
    if done.exists():
        return out
    data = np.load(SHARED / name / "pneumoniamnist.npz")
    classes = ("normal", "pneumonia")
    for i, (img, label) in enumerate(zip(data["train_images"], data["train_labels"], strict=True)):
        path = out / "train" / classes[int(label[0])] / f"train{i}_{int(label[0])}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    done.touch()
    return out


def prepare(name: str, work: Path, n_train: int, n_val: int) -> Path:
    """The subset tree for one set (built once, then reused)."""
    spec = SETS[name]
    if spec.get("multilabel"):  # a manifest, used whole: its split is the published one
        return SHARED / name / "labels.csv"
    root = work / "data" / f"{name}-t{n_train}-v{n_val}"
    if (root / ".done").exists():
        return root
    rng = np.random.default_rng(0)
    source = SHARED / name
    train_source = npz_train_pngs(name, work) if spec.get("npz") else source
    if spec.get("npz"):
        source = SHARED / "pneumoniamnist_28"  # same val and test images
    train_pool = image_files(train_source / "train")
    train = stratified(train_pool, n_train, rng)
    if spec.get("val_from_train"):
        rest = sorted(set(train_pool) - set(train))
        val = stratified(rest, n_val, rng)
    else:
        val = stratified(image_files(source / "val"), n_val, rng)
    test = image_files(source / str(spec.get("test_from", "test")))
    for split, files in (("train", train), ("val", val), ("test", test)):
        link_split(root / split, files)
    (root / ".done").touch()
    return root


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run cmd (output appended to log); (wall s, CPU s of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {done.returncode}; see {log}")
    return wall, cpu


def swing_ratio(val_acc: list[float], stages: list[str], n_val: int) -> float:
    """How far full-stage val accuracy strays from a steady climb, in binomial sigmas.

    The RMS distance of the curve from its best non-decreasing fit (isotonic regression) over the
    binomial sigma of the val set at the final accuracy. A steady climb scores 0 however steep it
    is (the std of Δ, as `medfit diagnose` uses it, also counts fast improvement); a curve that
    only wobbles by the val set's own noise scores about 1; a collapse scores far above 2.
    """
    from sklearn.isotonic import IsotonicRegression

    acc = np.array([a for a, s in zip(val_acc, stages, strict=True) if s == "full"])
    if len(acc) < 3:
        return float("nan")
    steady = IsotonicRegression().fit_transform(np.arange(len(acc)), acc)
    sigma = np.sqrt(max(acc[-1] * (1 - acc[-1]), 1e-4) / n_val)
    return float(np.sqrt(np.mean((acc - steady) ** 2)) / sigma)


def one_run(args: argparse.Namespace, name: str, seed: int, data: Path) -> dict:
    run = Path(args.work) / "runs" / args.recipe / f"{name}-s{seed}"
    log = run.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    if run.exists():  # an interrupted earlier attempt: start over
        subprocess.run(["rm", "-rf", str(run)], check=True)
    log.write_text("")
    size = ["--img-size", str(args.img_size), "--epochs", str(args.epochs)]
    options = shlex.split(args.options)
    medfit = medfit_cmd(args.src)
    train_cmd = [*medfit, "train", str(data), "--out", str(run), "--seed", str(seed)]
    wall, cpu = timed([*train_cmd, *size, *options], log)
    evals = {}
    for split in ("test", "train"):
        w, c = timed([*medfit, "eval", str(run), "--split", split, "--bootstrap", "0"], log)
        wall, cpu = wall + w, cpu + c
        evals[split] = json.loads((run / f"eval_{split}.json").read_text())
    # A --folds K run trains no epochs itself: its first member stands for the curve and sizes.
    member = run / "fold0" if (run / "folds.json").is_file() else run
    history = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((member / "summary.json").read_text())
    config = (member / "config.yaml").read_text()
    scores = _multilabel_scores if SETS[name].get("multilabel") else _accuracy_scores
    return {
        "recipe": args.recipe,
        "options": args.options,
        "src": commit(args.src),
        "set": name,
        "seed": seed,
        "img_size": args.img_size,
        "epochs": args.epochs,
        "train_images": summary["train_images"],
        "val_images": summary["val_images"],
        "test_images": evals["test"]["n_images"],
        **scores(evals, history),
        "best_epoch": summary["best_epoch"],
        "stages": [r["stage"] for r in history],
        "wall_s": wall,
        "cpu_s": cpu,
        "resolved": _resolved(config),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_description(),
    }


def _accuracy_scores(evals: dict, history: list[dict]) -> dict:
    test = evals["test"]["metrics"]
    return {
        "test_acc": test["accuracy"],
        "test_balanced_acc": test["balanced_accuracy"],
        "test_qwk": test.get("quadratic_kappa"),
        "test_mae": test.get("mean_abs_error"),
        "train_acc_clean": evals["train"]["metrics"]["accuracy"],
        "final_val_acc": history[-1]["val_acc"],
        "val_acc_curve": [round(r["val_acc"], 4) for r in history],
    }


def _multilabel_scores(evals: dict, history: list[dict]) -> dict:
    """A multi-label set's scores: macro ROC-AUC where the accuracy sets have accuracy."""
    test = evals["test"]["metrics"]
    return {
        "metric": "macro_auc",
        "test_macro_auc": test["macro_auc"],
        "test_micro_auc": test["micro_auc"],
        "test_map": test["map"],
        "measured_labels": test["measured_labels"],
        "per_label_auc": {k: v["auc"] for k, v in test["per_label"].items()},
        "train_macro_auc_clean": evals["train"]["metrics"]["macro_auc"],
        "val_auc_curve": [round(r["val_macro_auc"], 4) for r in history],
    }


def _resolved(config_yaml: str) -> dict:
    import yaml

    cfg = yaml.safe_load(config_yaml)
    keys = {"data": ("aug", "modality"), "train": ("lr", "balance", "select_metric", "bn", "loss")}
    return {k: cfg[s].get(k) for s, names in keys.items() for k in names if k in cfg[s]}


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_results(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)


def _swing(row: dict) -> float:
    curve = row["val_acc_curve"]
    stages = row.get("stages") or ["head"] + ["full"] * (len(curve) - 1)
    return swing_ratio(curve, stages, row["val_images"])


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table(rows: list[dict], recipes: list[str] | None = None) -> str:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if recipes is None or r["recipe"] in recipes:
            groups[(r["recipe"], r["set"])].append(r)
    lines = [
        "| recipe | set | n | test acc | test bal acc | QWK | train acc (clean) | swing | "
        "wall s | CPU s | anchor | gap |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    worst: dict[str, float] = {}
    auc_lines: list[str] = []
    for (recipe, name), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        anchor = float(SETS[name]["anchor"])  # type: ignore[arg-type]
        if SETS[name].get("multilabel"):
            auc_lines.append(_multilabel_line(recipe, name, runs, anchor))
            continue
        gap = float(np.mean([r["test_acc"] for r in runs])) - anchor
        worst[recipe] = min(worst.get(recipe, 1.0), gap)
        lines.append(
            f"| {recipe} | {name} | {len(runs)} | {_ms([r['test_acc'] for r in runs])} | "
            f"{_ms([r['test_balanced_acc'] for r in runs])} | "
            f"{_ms([r.get('test_qwk') for r in runs])} | "
            f"{_ms([r['train_acc_clean'] for r in runs])} | "
            f"{_ms([_swing(r) for r in runs], 1)} | "
            f"{np.mean([r['wall_s'] for r in runs]):.0f} | "
            f"{np.mean([r['cpu_s'] for r in runs]):.0f} | {anchor:.3f} | {gap:+.3f} |"
        )
    lines.append("")
    lines += [f"worst gap to anchor, {r}: {g:+.3f}" for r, g in sorted(worst.items())]
    if auc_lines:
        lines += [
            "",
            "| recipe | multi-label set | n | test macro AUC | micro AUC | mAP | "
            "train macro AUC (clean) | wall s | CPU s | anchor (AUC) | gap |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            *auc_lines,
        ]
    return "\n".join(lines)


def _multilabel_line(recipe: str, name: str, runs: list[dict], anchor: float) -> str:
    gap = float(np.mean([r["test_macro_auc"] for r in runs])) - anchor
    return (
        f"| {recipe} | {name} | {len(runs)} | {_ms([r['test_macro_auc'] for r in runs])} | "
        f"{_ms([r['test_micro_auc'] for r in runs])} | {_ms([r['test_map'] for r in runs])} | "
        f"{_ms([r['train_macro_auc_clean'] for r in runs])} | "
        f"{np.mean([r['wall_s'] for r in runs]):.0f} | {np.mean([r['cpu_s'] for r in runs]):.0f} | "
        f"{anchor:.3f} | {gap:+.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="defaults", help="name of the recipe in the JSON")
    parser.add_argument("--options", default="", help="medfit train options of the recipe")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6, help="full-stage epochs")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "medfit-suite"))
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "suite.json"))
    parser.add_argument("--src", default=str(REPO), help="checkout whose medfit runs the recipe")
    parser.add_argument("--table", action="store_true", help="print the table and exit")
    args = parser.parse_args()
    out = Path(args.json)
    rows = load_results(out)
    if args.table:
        print(table(rows))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for seed in args.seeds:  # seed-major: a partial run still covers every set
        for name in args.sets:
            key = (args.recipe, name, seed, args.img_size, args.epochs, args.train_size)
            done = {
                (r["recipe"], r["set"], r["seed"], r["img_size"], r["epochs"], r["train_size"])
                for r in rows
            }
            if key in done:
                continue
            data = prepare(name, Path(args.work), args.train_size, args.val_size)
            row = one_run(args, name, seed, data)
            row["train_size"] = args.train_size
            rows = [*load_results(out), row]
            save_results(out, rows)
            if row.get("metric") == "macro_auc":
                print(
                    f"{args.recipe} {name} seed {seed}: test macro AUC "
                    f"{row['test_macro_auc']:.3f} wall {row['wall_s']:.0f}s",
                    flush=True,
                )
                continue
            print(
                f"{args.recipe} {name} seed {seed}: test acc {row['test_acc']:.3f} "
                f"bal {row['test_balanced_acc']:.3f} train(clean) {row['train_acc_clean']:.3f} "
                f"swing {_swing(row):.1f} wall {row['wall_s']:.0f}s",
                flush=True,
            )
    print(table(load_results(out), [args.recipe]))


if __name__ == "__main__":
    main()
