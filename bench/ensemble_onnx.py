"""
Benchmark: a k-fold ensemble in ONNX Runtime as one graph (what `medfit export RUN` writes) vs its
members as separate graphs averaged in the runtime (numpy).

What is measured
- RUN: a `medfit train DATA --folds K` run. `medfit export RUN --dynamic-batch` writes the one
  graph (every member inside, their mean probability out); `medfit export RUN/fold<k>
  --dynamic-batch` each member's own graph. Exports are reused when present.
- images/s at batch 1 and 32 on a random normalised batch: two warm-up calls, then calls for at
  least --seconds (and 3 calls); the median call gives images/s. "members + average" is one
  `run` per member session and the mean of their softmax in numpy, timed together.
- Parity: max |p_one_graph - p_members_averaged| on the same batch.
- Both with the same intra-op threads (--threads, default all cores). Run it on a quiet machine.

    .venv/bin/python bench/ensemble_onnx.py RUN [--threads 2] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from suite import cpu_description

REPO = Path(__file__).resolve().parent.parent


def export(run: Path) -> Path:
    onnx = run / "export" / "model.onnx"
    meta = onnx.with_name("model.onnx.json")
    if not (meta.is_file() and json.loads(meta.read_text())["input"]["shape"][0] == "batch"):
        cmd = [sys.executable, "-m", "medfit", "export", str(run), "--dynamic-batch"]
        subprocess.run(cmd, check=True, capture_output=True)
    return onnx


def session(path: Path, threads: int) -> Any:  # an onnxruntime InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def probabilities(sess: Any, x: np.ndarray) -> np.ndarray:
    outputs = {o.name: i for i, o in enumerate(sess.get_outputs())}
    result = sess.run(None, {sess.get_inputs()[0].name: x})
    return result[outputs["probabilities"]]


def timed(call: Callable[[], object], seconds: float) -> float:
    """Median seconds per call after two warm-ups, over >= `seconds` and >= 3 calls."""
    call()
    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("run", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    folds = json.loads((args.run / "folds.json").read_text())
    members = [args.run / m["dir"] for m in folds["members"] if m["status"] != "failed"]
    one = session(export(args.run), args.threads)
    parts = [session(export(m), args.threads) for m in members]
    size = json.loads((args.run / "export" / "model.onnx.json").read_text())["img_size"]
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"# {args.run} ({len(members)} members, {size} px), commit {commit}, {cpu_description()}")
    print(f"# onnxruntime CPU, {args.threads} threads, median of >= {args.seconds:g} s per cell")
    print("| batch | one graph img/s | members + average img/s | ratio | max abs diff p |")
    print("|--:|--:|--:|--:|--:|")
    rng = np.random.default_rng(0)
    for batch in (1, 32):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)

        def averaged(x: np.ndarray = x) -> np.ndarray:
            return np.mean([probabilities(s, x) for s in parts], axis=0)

        t_one = timed(lambda x=x: probabilities(one, x), args.seconds)
        t_parts = timed(averaged, args.seconds)
        diff = float(np.abs(probabilities(one, x) - averaged()).max())
        print(
            f"| {batch} | {batch / t_one:.1f} | {batch / t_parts:.1f} | "
            f"{t_parts / t_one:.2f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
