"""
Benchmark: training images/s from medfit's cache vs the same model on data already on the GPU.

For each model (default resnet50 and tf_efficientnet_lite0 at 224 px, random init: throughput
does not depend on the weights) two timed runs of medfit's own training step
(`medfit.training.engine.train_one_epoch`: AMP autocast, bf16 where supported, channels_last on
CUDA, AdamW, gradient clipping, one device sync per step to split the time):

1. pipeline: batches from the decode-once cache (BatchLoader, shuffled, prefetch thread) ->
   `to_model_input` (host-to-device copy, batch augmentation on the device, normalisation) -> step.
   "data wait" is the time the step waited for the loader; "aug" the copy + augmentation.
2. compute-only: the same step on one synthetic batch that already sits on the device in the
   model's layout (no loader, no augmentation): the ceiling the input pipeline can reach.

pipeline / ceiling near 1 means the input pipeline keeps the GPU busy; a large data-wait fraction
means the host side (cache gather, copy) is the bottleneck. `--compile` wraps the model in
torch.compile (compile time is spent in the warmup steps and not timed).

The cache is built from synthetic PNGs (bench/cache_memory.py's generator: blocky colour noise,
two classes) at cache_size_for(img_size); the build time is printed too. bench/gpu_check.sh runs
this on a GPU machine in a few minutes; `--smoke` runs everything tiny on a CPU (seconds) so the
script is known to work where no GPU is at hand.

    .venv/bin/python bench/gpu_throughput.py --images /tmp/synth256 --n 8192 --json out.json
    .venv/bin/python bench/gpu_throughput.py --smoke
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))  # medfit from this checkout, also when not installed

import cache_memory  # noqa: E402  (the synthetic image generator)
import torch  # noqa: E402

# Per-run sizes. GPU: batch 256 is a common single-GPU batch at 224 px and fills an H100-class
# chip for resnet50 in bf16; 50 timed steps after 10 warmup steps (cuDNN autotuning, compile).
# Smoke: one torch thread, because on a shared CPU OpenMP threads spin-wait for each other (we saw
# a resnet50 step at 32 px take 50 s wall with 2 threads vs 4 s with 1 while other jobs ran).
FULL = {"img_size": 224, "batch": 256, "steps": 50, "warmup": 10, "n": 8192, "threads": 0}
SMOKE = {"img_size": 32, "batch": 8, "steps": 3, "warmup": 1, "n": 64, "threads": 1}


def build_cache(args):
    """Synthetic PNGs (reused if present) -> medfit cache; returns the split and build seconds."""
    from medfit.data.cache import build_or_load, cache_size_for

    side = cache_size_for(args.img_size)
    gen_s, _ = cache_memory.ensure_images(args.images, args.n, side, os.cpu_count())
    t0 = time.perf_counter()
    samples = cache_memory.samples_for(args.images, args.n)
    part = build_or_load(samples, side, args.cache, desc="build cache")
    return part, {"generate_s": gen_s, "build_s": time.perf_counter() - t0, "decoded": part.decoded}


def cached_batches(loader, steps):
    """`steps` batches from the loader, epoch after epoch, closing each epoch's prefetch thread."""
    epoch = 0
    while steps > 0:
        loader.set_epoch(epoch)
        batches = iter(loader)
        try:
            for batch in itertools.islice(batches, steps):
                steps -= 1
                yield batch
        finally:
            batches.close()
        epoch += 1


def make_model(name, device, channels_last):
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=2).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def timed_steps(model, batches, to_input, device, args, steps):
    """medfit's training step over `batches`; returns images/s and the time split."""
    from medfit.training.engine import train_one_epoch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    stats = train_one_epoch(
        model,
        batches,
        to_input,
        loss_fn,
        optimizer,
        lambda: None,
        device,
        grad_clip=1.0,
        amp=True,
        desc="steps",
        total=steps,
    )
    wall = time.perf_counter() - t0
    images = stats.steps * args.batch
    return {
        "images_per_s": images / wall,
        "wall_s": wall,
        "steps": stats.steps,
        "data_wait_frac": stats.data_s / wall,
        "augment_frac": stats.augment_s / wall,
        "compute_frac": stats.compute_s / wall,
        "loss": stats.loss,
    }


def pipeline_input(args, device, channels_last):
    from medfit.data.augment import build_train_augment
    from medfit.data.loader import to_model_input

    transform = build_train_augment(args.aug, args.img_size).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device)
    std = torch.tensor([0.229, 0.224, 0.225], device=device)
    return lambda px: to_model_input(px, device, transform, mean, std, channels_last)


def measure_model(name, part, args, device):
    from medfit.data.loader import BatchLoader

    channels_last = device.type == "cuda"
    model = make_model(name, device, channels_last)
    if args.compile:
        model = torch.compile(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loader = BatchLoader(part.pixels, part.labels, args.batch, shuffle=True, drop_last=True)
    if len(loader) == 0:
        sys.exit(f"--n {args.n} images make no full batch of --batch {args.batch}")
    to_input = pipeline_input(args, device, channels_last)
    timed_steps(model, cached_batches(loader, args.warmup), to_input, device, args, args.warmup)
    pipeline = timed_steps(
        model, cached_batches(loader, args.steps), to_input, device, args, args.steps
    )

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (args.batch, 3, args.img_size, args.img_size)
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (args.batch,), device=device)
    resident = [(x, y)] * args.steps
    timed_steps(model, resident[: args.warmup], lambda t: t, device, args, args.warmup)
    ceiling = timed_steps(model, resident, lambda t: t, device, args, args.steps)
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"model": name, "pipeline": pipeline, "ceiling": ceiling, "peak_mem_gb": peak_gb}


def print_table(rows, args, device):
    print(
        f"\n### training images/s, {args.img_size} px, batch {args.batch}, aug {args.aug}, "
        f"AMP {'bf16' if _bf16(device) else 'off/fp16'}, channels_last "
        f"{device.type == 'cuda'}, compile {args.compile}, {args.steps} timed steps\n"
    )
    print(
        "| model | from cache img/s | compute-only img/s | cache / compute-only | data wait | "
        "copy + aug | compute | peak GPU mem GB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p, c = r["pipeline"], r["ceiling"]
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "n/a"
        print(
            f"| {r['model']} | {p['images_per_s']:.0f} | {c['images_per_s']:.0f} | "
            f"{p['images_per_s'] / c['images_per_s']:.2f} | {100 * p['data_wait_frac']:.0f}% | "
            f"{100 * p['augment_frac']:.0f}% | {100 * p['compute_frac']:.0f}% | {mem} |"
        )


def _bf16(device):
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,tf_efficientnet_lite0")
    ap.add_argument("--img-size", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, help="untimed steps first (autotune, compile)")
    ap.add_argument("--n", type=int, help="images in the synthetic cache")
    ap.add_argument("--aug", default="microscopy", help="preset (the heaviest colour one)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, runs on a CPU in seconds")
    ap.add_argument("--images", type=Path, help="synthetic PNGs here (made once, reused)")
    ap.add_argument("--cache", type=Path, help="cache folder (default: a temp dir)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main():
    from medfit.model.device import pick_device

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if device.type != "cuda" and not args.smoke:
        print("note: no CUDA device; these are CPU numbers (use --smoke for a quick check)")
    with tempfile.TemporaryDirectory(prefix="medfit_gpu_bench_") as tmp:
        args.images = args.images or Path(tmp) / "images"
        args.cache = args.cache or Path(tmp) / "cache"
        part, cache_info = build_cache(args)
        machine = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        print(f"machine: {machine}")
        print(
            f"cache: {len(part.labels)} images at {part.pixels.shape[1]} px, "
            f"built in {cache_info['build_s']:.1f} s ({cache_info['decoded']} decoded)"
        )
        rows = [measure_model(name, part, args, device) for name in args.models.split(",")]
    print_table(rows, args, device)
    if args.json:
        config = {k: str(v) for k, v in vars(args).items() if v is not None and k != "json"}
        data = {"config": config, "machine": machine, "cache": cache_info, "rows": rows}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
