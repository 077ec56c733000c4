"""
Benchmark: time until a target validation accuracy, medfit beside Keras, fastai and timm.

Each method (bench/tta_methods.py) runs in its own process, one at a time, on the same images,
image size, batch size (32), backbone and ImageNet weights (Keras MobileNet alpha 0.25; medfit
also with its default EfficientNet-Lite0), and seed; it stops at the end of the first epoch whose
val accuracy reaches the target, or at the epoch budget or time cap. Reported per method: wall
and CPU seconds from process start to that epoch (imports, data loading and caches included),
epochs to the target, and the test accuracy of the model it ends with. Each result is appended
to the JSON file as soon as it finishes; a rerun skips what is there.

    /work/benchenv/bin/python bench/time_to_accuracy.py --sets pneumonia --seeds 0 1 2
    /work/benchenv/bin/python bench/time_to_accuracy.py --table

The environment needs medfit with the `bench` extra (tf-keras, fastai). Sets and sizes are in
SETS below; `--train-size` overrides the train cap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from peers import DATA, append_result, children_cpu_seconds, count_images, machine, make_subset  # noqa: E402

DEFAULT_JSON = BENCH / "results" / "time_to_accuracy.json"
METHODS = (
    "keras", "fastai", "timm", "medfit", "medfit_lite0", "medfit_lite0_compile",
    "medfit_lite0_contiguous", "medfit_lite0_freeze_stem", "medfit_lite0_contiguous_freeze_stem",
    "medfit_lite0_warmup0",
)  # fmt: skip
PEERS = METHODS[:5]  # the default run; levers are asked for with --methods


@dataclass(frozen=True)
class SetSpec:
    folder: str
    img_size: int
    target: float
    caps: dict[str, int | None]
    max_epochs: int
    cap_s: float


# CPU-sized: 2 cores, one run at a time. Targets are the (pneumonia 0.93, pbc 0.95).
SETS = {
    "pneumonia": SetSpec(
        "pneumoniamnist_28", 64, 0.93, {"train": 1500, "val": None, "test": None}, 10, 900
    ),
    "pbc": SetSpec(
        "pbc_blood_cells_72", 64, 0.95, {"train": 3000, "val": 600, "test": 1500}, 10, 1500
    ),
    "breast": SetSpec(
        "breastmnist_28", 64, 0.85, {"train": None, "val": None, "test": None}, 10, 600
    ),
}


def worker(args: argparse.Namespace) -> None:
    from tta_methods import METHODS as RUNNERS
    from tta_methods import Setup

    setup = Setup(
        Path(args.root), args.img_size, 32, args.seed, args.target, args.max_epochs,
        args.cap_s, Path(args.work),
    )  # fmt: skip
    run = RUNNERS[args.worker](setup)
    record = {"history": run.history, "test_acc": run.test_acc, "notes": run.notes}
    Path(args.out).write_text(json.dumps(record, indent=1))


def run_one(method: str, root: Path, spec: SetSpec, seed: int, tmp: Path) -> dict[str, Any]:
    work = tmp / f"work_{method}_{seed}"
    work.mkdir()
    out = work / "result.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", method, "--root", str(root),
        "--img-size", str(spec.img_size), "--seed", str(seed), "--target", str(spec.target),
        "--max-epochs", str(spec.max_epochs), "--cap-s", str(spec.cap_s),
        "--work", str(work), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    wall0, cpu0 = time.perf_counter(), children_cpu_seconds()
    proc = subprocess.run(cmd, env=env, timeout=spec.cap_s * 3, check=False)
    total = {
        "process_wall_s": time.perf_counter() - wall0,
        "process_cpu_s": children_cpu_seconds() - cpu0,
    }
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"worker exited with {proc.returncode}", **total}
    return {**json.loads(out.read_text()), **total}


def reached(record: dict[str, Any], target: float) -> dict[str, Any] | None:
    """The first epoch at or above the target, or None."""
    return next((h for h in record.get("history", []) if h["val_acc"] >= target), None)


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| set (target) | method | seeds | reached | wall s to target | CPU s to target "
        "| epochs to target | best val acc | test acc |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    keys = sorted(
        {(r["set"], r["method"]) for r in runs}, key=lambda k: (k[0], METHODS.index(k[1]))
    )
    for name, method in keys:
        rows = [r for r in runs if (r["set"], r["method"]) == (name, method) and "history" in r]
        if not rows:
            continue
        target = rows[0]["target"]
        hits = [h for h in (reached(r, target) for r in rows) if h]
        best = [max(h["val_acc"] for h in r["history"]) for r in rows]
        tests = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
        lines.append(
            f"| {name} ({target}) | {method} | {len(rows)} | {len(hits)}/{len(rows)} "
            f"| {_ms([h['wall_s'] for h in hits])} | {_ms([h['cpu_s'] for h in hits])} "
            f"| {_ms([h['epoch'] for h in hits], 1)} | {_ms(best, 3)} | {_ms(tests, 3)} |"
        )
    return "\n".join([*lines, *_machines(runs)])


def _machines(runs: list[dict[str, Any]]) -> list[str]:
    """Where the rows ran: the same commit and seed give other epochs on another CPU."""
    seen = sorted({(r["machine"].get("cpu", "CPU not recorded"), r["machine"].get("commit", "?"))
                   for r in runs if "machine" in r})  # fmt: skip
    return ["", *(f"rows from: {cpu}, commit {commit}" for cpu, commit in seen)]


def _ms(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=["pneumonia"])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(PEERS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train-size", type=int, help="override the train cap (0: all images)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--table", action="store_true", help="print the table and exit")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    for name in ("--root", "--work", "--out"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    for name, kind in (("--img-size", int), ("--seed", int), ("--max-epochs", int)):
        ap.add_argument(name, type=kind, help=argparse.SUPPRESS)
    for name in ("--target", "--cap-s"):
        ap.add_argument(name, type=float, help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    runs = json.loads(args.json.read_text())["runs"] if args.json.is_file() else []
    if args.table:
        print(table(runs))
        return
    for name in args.sets:
        spec = SETS[name]
        caps = dict(spec.caps)
        if args.train_size is not None:
            caps["train"] = args.train_size or None
        spec = SetSpec(**{**asdict(spec), "caps": caps})
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="medfit_tta_") as tmp_name:
                tmp = Path(tmp_name)
                root = tmp / "data"
                make_subset(DATA / spec.folder, root, caps, seed)
                images = count_images(root)
                for method in args.methods:
                    done = {(r["set"], r["method"], r["seed"], json.dumps(r["caps"])) for r in runs}
                    if (name, method, seed, json.dumps(caps)) in done:
                        continue
                    print(f"## {name} seed {seed} {method}: {images}", flush=True)
                    record = run_one(method, root, spec, seed, tmp)
                    record = {"set": name, "method": method, "seed": seed, **asdict(spec),
                              "images": images, "machine": machine(), **record}  # fmt: skip
                    append_result(args.json, record)
                    runs.append(record)
                    hit = reached(record, spec.target)
                    print(f"   -> reached: {hit}, test {record.get('test_acc')}", flush=True)
    print(table(runs))


if __name__ == "__main__":
    main()
