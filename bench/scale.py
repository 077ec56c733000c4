"""
Benchmark: how cache build time, epoch time and peak memory grow with the number of images.

For each N (default 10,000, 50,000 and 200,000) this builds a fresh decode-once cache of N
synthetic colour PNGs at the training size's cache side (cache_size_for(32) = 37 px by default),
then runs one shuffled training epoch from it. The epoch is, by default, data-only: BatchLoader
(prefetch thread) + the batch augmentation on the device + normalisation (`to_model_input`),
exactly what medfit's training loop feeds the model, without the model. `--model NAME` runs a real
training epoch instead (timm model, random init, AdamW, medfit's `train_one_epoch`), which on a
CPU mostly measures the model.

Each phase (build, epoch) of each N runs in its own process so its peak is its own, and each N gets
its own cache folder (a shared one would let the incremental cache copy rows from the smaller N).
Images, the memory sampler and disk accounting come from bench/cache_memory.py (imported, same
generator: blocky random noise, two classes); the images are generated once for the largest N and
the first N are used for each size. Peak RSS is VmHWM and includes the file-backed pages of the
memory-mapped cache (reclaimable page cache); "anon" is the anonymous part, the memory that must
fit. Times depend on whatever else runs on the machine: the load average is printed with them.

Run (generating 200,000 PNGs takes ~4 min on 2 cores and ~0.8 GB of disk; --keep reuses them):

    .venv/bin/python bench/scale.py --keep /tmp/medfit_scale_synth --json /tmp/scale.json
    .venv/bin/python bench/scale.py --n 300,1500 --model tf_efficientnet_lite0   # smoke, seconds
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))  # medfit from this checkout, also when not installed

import cache_memory  # noqa: E402  (the generator and the RSS sampler live there)

GEN_PX = 40  # side of the generated PNGs: a little larger than the 37 px cache, as real data is


# --- the phases, each in its own process ---------------------------------------------------------


def phase_build(args):
    from medfit.data.cache import build_or_load, cache_size_for

    samples = cache_memory.samples_for(args.images, args.n)
    sampler = cache_memory.RssSampler()
    sampler.start()
    t0, cpu0 = time.perf_counter(), _cpu_s()
    part = build_or_load(samples, cache_size_for(args.img_size), args.cache, workers=args.workers)
    seconds, cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
    assert part.decoded == args.n, f"expected a fresh build of {args.n}, decoded {part.decoded}"
    return {"seconds": seconds, "cpu_s": cpu_s, "images": len(part.labels), **sampler.stop()}


def _cpu_s():
    """CPU seconds of this process (all threads) and its finished children (decode workers).

    Unlike wall time, it hardly changes when other jobs share the cores.
    """
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _epoch_input(args):
    import torch

    from medfit.data.augment import build_train_augment
    from medfit.data.loader import to_model_input

    transform = build_train_augment(args.aug, args.img_size)
    mean = torch.tensor([0.5, 0.5, 0.5])
    std = torch.tensor([0.5, 0.5, 0.5])
    return lambda pixels: to_model_input(pixels, torch.device("cpu"), transform, mean, std)


def _data_epoch(loader, to_input):
    """Pull every batch through augmentation, timing the wait for the loader apart."""
    data_s = augment_s = 0.0
    images = 0
    tick = time.perf_counter()
    for pixels, labels in loader:
        started = time.perf_counter()
        data_s += started - tick
        x = to_input(pixels)
        images += int(labels.shape[0])
        assert x.shape[-1] == x.shape[-2], x.shape
        tick = time.perf_counter()
        augment_s += tick - started
    return {"images": images, "data_s": data_s, "augment_s": augment_s, "compute_s": 0.0}


def _model_epoch(loader, to_input, args):
    import timm
    import torch

    from medfit.training.engine import train_one_epoch

    model = timm.create_model(args.model, pretrained=False, num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stats = train_one_epoch(
        model,
        loader,
        to_input,
        torch.nn.CrossEntropyLoss(),
        optimizer,
        lambda: None,
        torch.device("cpu"),
        grad_clip=1.0,
        total=len(loader),
    )
    images = stats.steps * args.batch
    return {
        "images": images,
        "data_s": stats.data_s,
        "augment_s": stats.augment_s,
        "compute_s": stats.compute_s,
    }


def phase_epoch(args):
    import torch

    from medfit.data.cache import build_or_load, cache_size_for
    from medfit.data.loader import BatchLoader

    torch.set_num_threads(args.threads)
    samples = cache_memory.samples_for(args.images, args.n)
    sampler = cache_memory.RssSampler()
    sampler.start()
    part = build_or_load(samples, cache_size_for(args.img_size), args.cache, workers=1)
    assert part.decoded == 0, "the epoch phase must open the cache built by the build phase"
    loader = BatchLoader(part.pixels, part.labels, args.batch, shuffle=True, drop_last=True)
    to_input = _epoch_input(args)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    stats = _model_epoch(loader, to_input, args) if args.model else _data_epoch(loader, to_input)
    seconds, cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
    return {"seconds": seconds, "cpu_s": cpu_s, **stats, **sampler.stop()}


def run_phase(phase, n, images, cache, args, tmp):
    out = tmp / f"{phase}_{n}.json"
    cmd = [sys.executable, __file__, "--phase", phase, "--phase-out", str(out), "--n", str(n)]
    cmd += ["--images", str(images), "--cache", str(cache), "--img-size", str(args.img_size)]
    cmd += ["--batch", str(args.batch), "--workers", str(args.workers), "--aug", args.aug]
    cmd += ["--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(out.read_text())


# --- driver --------------------------------------------------------------------------------------


def measure(n, images, tmp, args):
    cache = tmp / f"cache_{n}"
    load_before = os.getloadavg()[0]
    build = run_phase("build", n, images, cache, args, tmp)
    epoch = run_phase("epoch", n, images, cache, args, tmp)
    cache_mb = cache_memory.disk_mb(cache)[0]
    shutil.rmtree(cache, ignore_errors=True)
    load = (load_before, os.getloadavg()[0])
    return {"n": n, "cache_mb": cache_mb, "build": build, "epoch": epoch, "load": load}


def _ratio(a, b):
    return f"{b / a:.2f}×" if a else "n/a"


def print_tables(rows, args):
    what = f"{args.model} training epoch" if args.model else "data-only epoch (loader + aug)"
    print(f"\n### {what}, {args.img_size} px, batch {args.batch}, aug {args.aug}\n")
    print(
        "| N | cache MB | build s (CPU s) | build img/s | build peak RSS MB (anon) | "
        "workers' PSS MB | epoch s (CPU s) | epoch img/s | data wait s | aug s | compute s | "
        "epoch peak RSS MB (anon) | load avg |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b, e = r["build"], r["epoch"]
        print(
            f"| {r['n']:,} | {r['cache_mb']:.0f} | {b['seconds']:.1f} ({b['cpu_s']:.1f}) | "
            f"{b['images'] / b['seconds']:.0f} | {b['peak_rss_mb']:.0f} "
            f"({b['peak_self_anon_mb']:.0f}) | {b['peak_children_pss_mb']:.0f} | "
            f"{e['seconds']:.1f} ({e['cpu_s']:.1f}) | {e['images'] / e['seconds']:.0f} | "
            f"{e['data_s']:.1f} | "
            f"{e['augment_s']:.1f} | {e['compute_s']:.1f} | {e['peak_rss_mb']:.0f} "
            f"({e['peak_self_anon_mb']:.0f}) | {r['load'][0]:.1f}-{r['load'][1]:.1f} |"
        )
    print("\n### growth from one N to the next (ratio; linear would equal the images ratio)\n")
    print(
        "| N | images | build s | build CPU s | epoch s | epoch CPU s | build peak RSS | "
        "build peak anon | epoch peak RSS | epoch peak anon |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in itertools.pairwise(rows):
        ba, bb, ea, eb = a["build"], b["build"], a["epoch"], b["epoch"]
        print(
            f"| {a['n']:,} → {b['n']:,} | {b['n'] / a['n']:.1f}× | "
            f"{_ratio(ba['seconds'], bb['seconds'])} | {_ratio(ba['cpu_s'], bb['cpu_s'])} | "
            f"{_ratio(ea['seconds'], eb['seconds'])} | {_ratio(ea['cpu_s'], eb['cpu_s'])} | "
            f"{_ratio(ba['peak_rss_mb'], bb['peak_rss_mb'])} | "
            f"{_ratio(ba['peak_self_anon_mb'], bb['peak_self_anon_mb'])} | "
            f"{_ratio(ea['peak_rss_mb'], eb['peak_rss_mb'])} | "
            f"{_ratio(ea['peak_self_anon_mb'], eb['peak_self_anon_mb'])} |"
        )


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--n", default="10000,50000,200000", help="comma-separated image counts")
    ap.add_argument("--img-size", type=int, default=32, help="training size (cache side +15%%)")
    # Large batches and the light preset keep the augmentation's cost on a CPU small (the table in
    # bench/README.md was measured with the earlier kornia CPU path: 120 ms per 32-image
    # microscopy batch at 32 px); what this bench is after is how time and memory grow with N.
    ap.add_argument("--batch", type=int, default=256, help="images per batch")
    ap.add_argument("--aug", default="light", help="augmentation preset")
    ap.add_argument("--model", help="run a training epoch of this timm model (default: data only)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="decode processes")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (epoch)")
    ap.add_argument("--keep", type=Path, help="generate the images here and keep them (reused)")
    ap.add_argument("--cache-root", help="where the temporary caches go (default: $TMPDIR)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--phase", choices=["build", "epoch"], help=argparse.SUPPRESS)
    ap.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args()


def main():
    args = parse_args()
    if args.phase:
        args.n = int(args.n)
        result = phase_build(args) if args.phase == "build" else phase_epoch(args)
        args.phase_out.write_text(json.dumps(result))
        return
    counts = sorted(int(x) for x in args.n.split(","))
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    print("## scale bench\n")
    print(f"config: { {k: str(v) for k, v in vars(args).items() if v is not None} }")
    print(f"machine: {machine}")
    tmp = Path(tempfile.mkdtemp(prefix="medfit_bench_scale_", dir=args.cache_root))
    try:
        images = args.keep or tmp / "images"
        gen_s, reused = cache_memory.ensure_images(images, counts[-1], GEN_PX, args.workers)
        print(
            f"images: {counts[-1]:,} PNGs of {GEN_PX} px in {images} "
            + ("(reused)" if reused else f"(generated in {gen_s:.0f} s)")
        )
        rows = [measure(n, images, tmp, args) for n in counts]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_tables(rows, args)
    if args.json:
        config = {k: str(v) for k, v in vars(args).items() if v is not None and k != "json"}
        args.json.write_text(
            json.dumps({"config": config, "machine": machine, "rows": rows}, indent=2) + "\n"
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
