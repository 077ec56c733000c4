"""
Benchmark: CPU prediction throughput, PyTorch eager vs ONNX Runtime, and `medfit serve` latency.

What is measured
- Model: tf_efficientnet_lite0 at 224 px, 2 classes, random weights (speed does not depend on the
  weight values), written as a regular run directory in a temp folder; or `--run RUN` (a trained
  run, at its own size).
- Eager: the run's model as `medfit.load` builds it (float32, eval mode, `torch.no_grad`), called
  on an already-normalised random batch: model time only, no decoding.
- ONNX Runtime: `medfit export --format onnx --dynamic-batch` of the same run (which verifies
  parity itself; its numbers are reported), `CPUExecutionProvider`, default graph optimisations.
- images/s at batch 1 and 32: two warm-up calls, then repeated calls for at least --seconds
  (and 3 calls); the median call time gives images/s. Both runtimes get the same number of
  threads: --threads, default torch's (all cores). On a busy machine torch's OpenMP threads
  spin against other processes and eager numbers collapse (2.5 img/s with 2 threads vs 26 with
  1, measured under load): run it on a quiet machine, or compare with --threads 1.
- serve: `medfit serve` (uvicorn, max_concurrent 2, so 1 torch thread per inference on 2
  cores) in a child process on 127.0.0.1, a free port; --requests POSTs of a --image-px gray
  PNG from --concurrency client threads (httpx).
  Latency = request sent -> JSON answer received (decode, preprocess, inference, transport):
  p50/p95 in ms, plus requests/s. The load is bounded in count and stays on the loopback.

Run it with nothing else busy on the machine (this one has 2 cores):

    .venv/bin/python bench/predict_throughput.py
    .venv/bin/python bench/predict_throughput.py --json /tmp/predict_throughput.json
    .venv/bin/python bench/predict_throughput.py --seconds 1 --requests 40     # smoke test
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medfit.config import RunConfig  # noqa: E402
from medfit.deploy.export import export_model  # noqa: E402
from medfit.inference import Predictor  # noqa: E402
from medfit.model.backbones import preprocess_for  # noqa: E402
from medfit.model.checkpoint import save_checkpoint  # noqa: E402

MODEL = "tf_efficientnet_lite0"


def make_random_run(folder: Path, img_size: int) -> Path:
    """A run directory with random weights: the contract of medfit/training/rundir.py."""
    import timm

    model = timm.create_model(MODEL, pretrained=False, num_classes=2)
    pre = preprocess_for(model, img_size)
    cfg = RunConfig()
    cfg.model.name, cfg.model.weights = MODEL, "none"
    cfg.data.img_size, cfg.data.aug, cfg.out = img_size, "light", str(folder)
    folder.mkdir(parents=True)
    cfg.dump(folder / "config.yaml")
    classes = ["a", "b"]
    (folder / "classes.json").write_text(json.dumps(classes))
    (folder / "preprocess.json").write_text(json.dumps(pre.to_dict()))
    (folder / "summary.json").write_text(json.dumps({"model": MODEL, "classes": classes}))
    state = {
        "model": model.state_dict(),
        "model_name": MODEL,
        "classes": classes,
        "preprocess": pre.to_dict(),
        "config": cfg.to_dict(),
        "epoch": 0,
    }
    save_checkpoint(state, folder / "checkpoints" / "best.pt")
    return folder


def images_per_second(call: Callable[[], Any], batch: int, seconds: float) -> float:
    call()
    call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def throughput(run: Path, work: Path, seconds: float) -> dict[str, Any]:
    import onnxruntime as ort

    predictor = Predictor(run, device="cpu")
    report = export_model(run, "onnx", work / "model.onnx", dynamic_batch=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same thread budget for both
    session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    size = predictor.preprocess.img_size
    rows = []
    for batch in (1, 32):
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        xn = x.numpy()

        @torch.no_grad()
        def eager(x: torch.Tensor = x) -> Any:
            return predictor.model(x)

        def onnx(xn: np.ndarray = xn) -> Any:
            return session.run(["logits"], {"input": xn})

        e = images_per_second(eager, batch, seconds)
        o = images_per_second(onnx, batch, seconds)
        rows.append({"batch": batch, "eager_img_s": e, "onnx_img_s": o, "speedup": o / e})
    v = report.verification
    parity = {
        "inputs": v.inputs,
        "max_abs_diff_probabilities": v.max_abs_diff_probabilities,
        "max_abs_diff_logits": v.max_abs_diff_logits,
        "tolerance": v.tolerance,
    }
    return {"img_size": size, "rows": rows, "parity": parity}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(px: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (px, px), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def serve_latency(run: Path, requests: int, concurrency: int, image_px: int) -> dict[str, Any]:
    import httpx

    port = _free_port()
    code = (
        "from medfit.deploy.serve import Limits, serve; "
        f"serve({str(run)!r}, '127.0.0.1', {port}, Limits(max_concurrent=2, max_waiting=16), "
        "device='cpu')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        body = _png(image_px)
        with httpx.Client(base_url=url, timeout=60) as client:

            def one(_: int) -> tuple[float, int]:
                t = time.perf_counter()
                response = client.post("/predict", files={"file": ("x.png", body, "image/png")})
                return time.perf_counter() - t, response.status_code

            one(0)  # warm-up (first inference allocates)
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(one, range(requests)))
            wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = sorted(t for t, status in results if status == 200)
    statuses: dict[str, int] = {}
    for _, status in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests": requests,
        "concurrency": concurrency,
        "image_px": image_px,
        "statuses": statuses,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
        "p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else None,
        "requests_per_s": requests / wall,
    }


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            err = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"medfit serve exited early:\n{err}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("medfit serve did not become ready in 120 s")


def print_table(result: dict[str, Any]) -> None:
    t = result["throughput"]
    print(f"\n{MODEL} @ {t['img_size']} px, CPU, {result['threads']} torch threads")
    print(f"{'batch':>5} | {'eager img/s':>11} | {'onnxrt img/s':>12} | {'speedup':>7}")
    for row in t["rows"]:
        print(
            f"{row['batch']:>5} | {row['eager_img_s']:>11.1f} | {row['onnx_img_s']:>12.1f} | "
            f"{row['speedup']:>6.2f}x"
        )
    p = t["parity"]
    print(
        f"ONNX parity ({p['inputs']}): max |dp| {p['max_abs_diff_probabilities']:.2e}, "
        f"max |dlogit| {p['max_abs_diff_logits']:.2e} (tolerance {p['tolerance']:.0e})"
    )
    s = result["serve"]
    print(
        f"serve: {s['requests']} requests, concurrency {s['concurrency']}, {s['image_px']} px PNG: "
        f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, {s['requests_per_s']:.1f} req/s, "
        f"statuses {s['statuses']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained run (default: random tf_efficientnet_lite0)")
    parser.add_argument("--img-size", type=int, default=224, help="for the random model")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput cell")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--image-px", type=int, default=512, help="uploaded PNG side")
    parser.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: all)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="medfit-bench-") as tmp:
        work = Path(tmp)
        run = Path(args.run) if args.run else make_random_run(work / "run", args.img_size)
        result = {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "throughput": throughput(run, work, args.seconds),
            "serve": serve_latency(run, args.requests, args.concurrency, args.image_px),
        }
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
