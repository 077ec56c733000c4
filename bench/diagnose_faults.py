"""
Benchmark: does `medfit diagnose` name the fault that was planted in a run?

Short real training runs (`medfit.train`, tf_efficientnet_lite0 with the offline Lite0 weights)
each with one planted fault (the forum recipe plants several), then `diagnose_run` with probes.
A case passes when one of its planted rules is among the top 3 findings; the clean run passes
when it has no high-severity finding. Prints one table row per case.

Data (read-only, from <repo>/../shared/data): blood_cells_bccd (colour microscopy, 4 classes),
pneumoniamnist_28 (grayscale chest X-ray: the oriented set and the leaky copy) and the npz of
pneumoniamnist_28_imbalanced (9:1 train). Leaky/imbalanced copies are built in a temp dir.

    .venv/bin/python bench/diagnose_faults.py --json bench/results/diagnose_faults.json
    .venv/bin/python bench/diagnose_faults.py --only clean,lr_high      # a subset
    .venv/bin/python bench/diagnose_faults.py --render bench/results/diagnose_faults.json

Sizes (defaults, chosen so the nine cases fit a heavily shared 2-core CPU): 32 px, 200 train /
200 val images (stratified), 1 head + 3 full epochs; the overfitting case trains 8 full epochs on
80 images without augmentation, the small-batch case 1 head + 2 full epochs at batch 4. Attempts
at 64 px / 800 and 32 px / 400 train images ran at 2-3 images/s on the shared machine (load ~15)
and were stopped. `--only` takes a comma-separated subset, so groups of cases can run side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BLOOD = SHARED / "blood_cells_bccd"
PNEUMONIA = SHARED / "pneumoniamnist_28"
PNEUMONIA_IMB = SHARED / "pneumoniamnist_28_imbalanced" / "pneumoniamnist.npz"


@dataclass
class Case:
    name: str
    fault: str  # what was planted, in words
    planted: tuple[str, ...]  # diagnose rules that name it (empty: the clean run)
    data: Callable[[Path, argparse.Namespace], Path]
    options: dict[str, Any] = field(default_factory=dict)
    check: bool = False  # run `medfit check DATA --out RUN` before diagnosing


def blood(_: Path, __: argparse.Namespace) -> Path:
    return BLOOD


def pneumonia(_: Path, __: argparse.Namespace) -> Path:
    return PNEUMONIA


def leaky_pneumonia(work: Path, args: argparse.Namespace) -> Path:
    """train: a stratified sample of real train images plus copies of a quarter of val."""
    root = work / "leaky_pneumonia"
    if root.is_dir():
        return root
    rng = np.random.default_rng(args.seed)
    for split, n in (("train", args.train_size), ("val", args.val_size)):
        for cls_dir in sorted((PNEUMONIA / split).iterdir()):
            files = sorted(cls_dir.glob("*.png"))
            share = round(n * len(files) / sum(1 for _ in (PNEUMONIA / split).glob("*/*.png")))
            picked = [files[i] for i in sorted(rng.choice(len(files), share, replace=False))]
            dst = root / split / cls_dir.name
            dst.mkdir(parents=True)
            for f in picked:
                (dst / f.name).symlink_to(f)
            if split == "val":  # the leak: a quarter of val also sits in train, under new names
                for f in picked[: len(picked) // 4]:
                    (root / "train" / cls_dir.name / f"copy_{f.name}").write_bytes(f.read_bytes())
    return root


def imbalanced_pneumonia(work: Path, _: argparse.Namespace) -> Path:
    """PNG folders from the npz of pneumoniamnist_28_imbalanced (train 388 normal / 3494)."""
    root = work / "imbalanced_pneumonia"
    if root.is_dir():
        return root
    npz = np.load(PNEUMONIA_IMB)
    for split in ("train", "val"):
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"].reshape(-1)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            dst = root / split / ("pneumonia" if label else "normal")
            dst.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(dst / f"{split}{i}.png")
    return root


CASES = [
    Case("clean", "none (medfit defaults)", (), blood),
    Case("clean_xray", "none (medfit defaults, chest X-rays)", (), pneumonia),
    Case(
        "forum",
        "forum recipe: 1/255 input, BN train, SGD 0.01, rotate90",
        ("normalization", "val_instability", "bn_mismatch", "lr_too_high"),
        blood,
        {"normalize": "unit", "bn": "train", "optimizer": "sgd", "lr": 0.01, "aug": "rotate90"},
    ),
    Case(
        "unit_norm",
        "1/255 input (--normalize unit)",
        ("normalization",),
        blood,
        {"normalize": "unit"},
    ),
    Case("lr_high", "LR too high (--lr 0.1)", ("lr_too_high",), blood, {"lr": 0.1}),
    Case(
        "rotate90_xray",
        "rotate90 on chest X-rays",
        ("aug_orientation", "aug_destroys_signal"),
        pneumonia,
        {"aug": "rotate90"},
    ),
    Case(
        "small_batch_bn",
        "BN train at batch 4",
        ("bn_small_batch", "bn_mismatch"),
        blood,
        {"batch_size": 4, "bn": "train", "epochs": 2},
    ),
    Case(
        "overfit",
        "no augmentation, 80 train images, 8 epochs",
        ("overfitting",),
        blood,
        {"aug": "none", "max_train": 80, "epochs": 8},
    ),
    Case(
        "leakage",
        "a quarter of val copied into train",
        ("leakage",),
        leaky_pneumonia,
        {"max_train": None, "max_val": None},
        check=True,
    ),
    Case(
        "imbalance",
        "9:1 train, --balance none --select-metric accuracy",
        ("class_imbalance",),
        imbalanced_pneumonia,
        {"balance": "none", "select_metric": "accuracy"},
    ),
]


def run_case(case: Case, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import medfit
    from medfit.diagnose import diagnose_run

    data = case.data(work, args)
    options = {
        "model": "tf_efficientnet_lite0",
        "weights": "lite",
        "img_size": args.img_size,
        "max_train": args.train_size,
        "max_val": args.val_size,
        "head_epochs": 1,
        "epochs": args.epochs,
        "patience": 0,  # every case runs its epochs: the history is the evidence
        "seed": args.seed,
        "cache_dir": str(work / "cache"),
        **case.options,
    }
    log_path = work / f"{case.name}.log"
    with log_path.open("w") as log_file:
        log = lambda line: print(line, file=log_file, flush=True)  # noqa: E731
        t0 = time.perf_counter()
        run = medfit.train(data, out=str(work / "runs" / case.name), log=log, **options)
        train_s = time.perf_counter() - t0
        if case.check:
            cmd = [sys.executable, "-m", "medfit", "check", str(data), "--out", str(run.dir)]
            subprocess.run([*cmd, "--features", "thumbnail"], check=True, stdout=log_file)
        t1 = time.perf_counter()
        diagnosis = diagnose_run(run.dir, probes=True, log=log)
        diagnose_s = time.perf_counter() - t1
    top = [(f.rule, f.severity) for f in diagnosis.top(3)]
    passed = judge(case, diagnosis.findings)
    last = run.history[-1]
    return {
        "case": case.name,
        "fault": case.fault,
        "planted": list(case.planted),
        "options": {k: v for k, v in options.items() if k != "cache_dir"},
        "top3": top,
        "findings": diagnosis.to_dict()["findings"],
        "probes": diagnosis.probes,
        "passed": passed,
        "final_val_acc": last["val_acc"],
        "final_val_balanced_accuracy": last["val_balanced_accuracy"],
        "train_images": run.summary["train_images"],
        "val_images": run.summary["val_images"],
        "train_s": train_s,
        "diagnose_s": diagnose_s,
    }


def rediagnose(saved: dict[str, Any], work: Path) -> None:
    """Apply the current rules again to the kept runs (--work) and to the probe measurements
    saved in the --json file: no training, no probe passes. Updates `saved` in place."""
    from medfit.diagnose.own.facts import read_run_facts
    from medfit.diagnose.own.probes import ProbeResults
    from medfit.diagnose.own.run import all_findings

    cases = {c.name: c for c in CASES}
    for r in saved["results"]:
        facts = read_run_facts(work / "runs" / r["case"])
        probes = ProbeResults.from_dict(r["probes"])
        findings = all_findings(facts, probes)
        r["findings"] = [f.to_dict() for f in findings]
        r["top3"] = [(f.rule, f.severity) for f in findings[:3]]
        r["passed"] = judge(cases[r["case"]], findings)


def judge(case: Case, findings: list[Any]) -> bool:
    """A planted rule in the top 3; for a clean run, no high-severity finding."""
    if case.planted:
        return any(f.rule in case.planted for f in findings[:3])
    return not any(f.severity == "high" for f in findings)


def print_table(results: list[dict[str, Any]]) -> None:
    print("\n| case | planted fault | train/val imgs | val acc (bal) | top-3 findings | pass |")
    print("|---|---|---:|---:|---|:---:|")
    for r in results:
        top = "; ".join(f"{rule} ({sev})" for rule, sev in r["top3"]) or "(none)"
        print(
            f"| {r['case']} | {r['fault']} | {r['train_images']}/{r['val_images']} | "
            f"{r['final_val_acc']:.3f} ({r['final_val_balanced_accuracy']:.3f}) | {top} | "
            f"{'pass' if r['passed'] else 'FAIL'} |"
        )
    passed = sum(r["passed"] for r in results)
    train_s = sum(r["train_s"] for r in results)
    diag_s = [r["diagnose_s"] for r in results]
    print(
        f"\n{passed}/{len(results)} passed; training {train_s / 60:.1f} min in all; diagnose "
        f"(with probes) {min(diag_s):.1f}-{max(diag_s):.1f} s per run"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=200)
    ap.add_argument("--val-size", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=3, help="full epochs (after 1 head epoch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--work", type=Path, help="keep runs here (default: a temp dir)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--render", type=Path, help="re-print the table of an earlier --json file")
    ap.add_argument(
        "--rediagnose",
        type=Path,
        help="re-apply the rules to the runs kept in --work and the probe numbers in this --json "
        "file, and update it (no training)",
    )
    args = ap.parse_args()
    if args.render or args.rediagnose:
        saved = json.loads((args.render or args.rediagnose).read_text())
        if args.rediagnose:
            if not args.work:
                sys.exit("--rediagnose needs --work, the folder that keeps the runs")
            rediagnose(saved, args.work)
            args.rediagnose.write_text(json.dumps(saved, indent=1, default=str) + "\n")
        print(f"config: {saved['config']}\nmachine: {saved['machine']}")
        print_table(saved["results"])
        return
    if not SHARED.is_dir():
        sys.exit(f"data not found: {SHARED} (expected <repo>/../shared/data)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = set(args.only.split(",")) if args.only else None
    cases = [c for c in CASES if wanted is None or c.name in wanted]
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    skip = ("json", "render", "rediagnose")
    config = {k: str(v) for k, v in vars(args).items() if k not in skip}
    print(f"config: {config}\nmachine: {machine}")
    with tempfile.TemporaryDirectory(prefix="medfit_diag_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = []
        for case in cases:
            print(f"running {case.name} ...", file=sys.stderr, flush=True)
            results.append(run_case(case, work, args))
            r = results[-1]
            print(
                f"  {case.name}: top3 {r['top3']} pass={r['passed']} "
                f"({r['train_s']:.0f} s train, {r['diagnose_s']:.0f} s diagnose)",
                file=sys.stderr,
                flush=True,
            )
            if args.json:  # after every case, so a long run can be inspected as it goes
                saved = {"config": config, "machine": machine, "results": results}
                args.json.write_text(json.dumps(saved, indent=1, default=str) + "\n")
    print_table(results)


if __name__ == "__main__":
    main()
