"""
Benchmark: memory used while building and then reading a medfit cache of N small images.

The point of the decode-once cache is that RAM stays bounded whatever N is: pixels go straight to a
memory-mapped .npy file and batches are gathered from it, instead of the whole set living in a
numpy array (N x 64 x 64 x 3 bytes as uint8, 4x that as float32, which is what "load everything
into X_train" code does). This script generates N synthetic colour PNGs (80x80 blocky random
noise, two classes), builds the cache at 64 px with `build_or_load`, then reads one shuffled epoch
through `BatchLoader`.

Each phase runs in its own process so that its peak is its own:
- peak RSS = the process' VmHWM (`ru_maxrss`). It includes file-backed pages of the memory map,
  which the kernel can drop at any time (page cache), so it grows with the cache size where RAM
  is free; the anonymous part (RssAnon, sampled every 50 ms) is the memory that really has to fit.
- the decode workers (`ProcessPoolExecutor`, children of the build process) are sampled too; the
  largest one's peak also comes from `RUSAGE_CHILDREN`.
The page cache is not dropped between phases (that would disturb everything else on the machine),
so the read epoch mostly reads from RAM when it fits.

Run (defaults: N = 200,000, 64 px; generating the files takes a few minutes and ~0.5 GB of disk,
keep them for the next run with --keep):

    .venv/bin/python bench/cache_memory.py --keep /tmp/medfit_synth
    .venv/bin/python bench/cache_memory.py --n 20000 --json /tmp/cache_memory.json
    .venv/bin/python bench/cache_memory.py --n 300                    # smoke test, seconds
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MARKER = "medfit_synthetic.json"
GEN_CHUNK = 1000


# --- synthetic data ------------------------------------------------------------------------------


def image_path(root, i):
    return root / f"c{i % 2}" / f"{i // 10000:03d}" / f"{i:07d}.png"


def _write_images(job):
    from PIL import Image

    root, start, stop, px = job
    block = 8
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        noise = rng.integers(0, 256, size=(px // block, px // block, 3), dtype=np.uint8)
        pixels = np.repeat(np.repeat(noise, block, axis=0), block, axis=1)
        path = image_path(root, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, compress_level=1)
    return stop - start


def ensure_images(root, n, px, workers):
    """N images under root; reused when a finished earlier run made at least N at this size."""
    marker = root / MARKER
    if marker.exists():
        made = json.loads(marker.read_text())
        if made["n"] >= n and made["px"] == px:
            return 0.0, True
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(root, s, min(s + GEN_CHUNK, n), px) for s in range(0, n, GEN_CHUNK)]
    with Pool(workers) as pool:
        done = 0
        for k in pool.imap_unordered(_write_images, jobs):
            done += k
            print(f"\rgenerating images: {done}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    marker.write_text(json.dumps({"n": n, "px": px}))  # last: a complete set
    return time.perf_counter() - t0, False


def samples_for(root, n):
    from medfit.data.sources import Sample

    return [Sample(str(image_path(root, i)), i % 2, "train") for i in range(n)]


# --- memory sampling -----------------------------------------------------------------------------


def _read_kb(path, keys):
    out = dict.fromkeys(keys, 0)
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0])
    except OSError:  # the process just exited
        pass
    return out


def _children(pid):
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


class RssSampler(threading.Thread):
    """Peaks of this process' RSS (anonymous and file-backed) and of its children's PSS.

    Children (decode workers) are forked from a process that has imported torch, so their RSS
    counts the pages they share with it copy-on-write; PSS splits shared pages between sharers,
    so the sum of PSS is what the workers really add.
    """

    SELF_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")

    def __init__(self, interval=0.05):
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.baseline = _read_kb("/proc/self/status", self.SELF_KEYS)
        self.peak = dict.fromkeys(
            ("self_anon", "self_file", "children_pss", "children_pss_anon", "child_hwm"), 0
        )

    def sample(self):
        me = _read_kb("/proc/self/status", self.SELF_KEYS)
        kids = [
            {
                **_read_kb(f"/proc/{p}/smaps_rollup", ("Pss", "Pss_Anon")),
                **_read_kb(f"/proc/{p}/status", ("VmHWM",)),
            }
            for p in _children(os.getpid())
        ]
        now = {
            "self_anon": me["RssAnon"],
            "self_file": me["RssFile"],
            "children_pss": sum(k["Pss"] for k in kids),
            "children_pss_anon": sum(k["Pss_Anon"] for k in kids),
            "child_hwm": max((k["VmHWM"] for k in kids), default=0),
        }
        for key, value in now.items():
            self.peak[key] = max(self.peak[key], value)

    def run(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join()
        self.sample()
        mb = {f"peak_{k}_mb": v / 1024 for k, v in self.peak.items()}
        mb["peak_rss_mb"] = _read_kb("/proc/self/status", ("VmHWM",))["VmHWM"] / 1024
        mb["baseline_rss_mb"] = self.baseline["VmRSS"] / 1024
        mb["baseline_anon_mb"] = self.baseline["RssAnon"] / 1024
        return mb


# --- the two phases, each in its own process -----------------------------------------------------


def phase_main(args):
    from medfit.data.cache import build_or_load
    from medfit.data.loader import BatchLoader

    samples = samples_for(args.images, args.n)
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    part = build_or_load(samples, args.size, args.cache, workers=args.workers, desc="build")
    load_s = time.perf_counter() - t0
    result = {"phase": args.phase, "images": len(part.labels), "skipped": len(part.skipped)}
    if args.phase == "build":
        result["seconds"] = load_s
        result["decoded"] = part.decoded
    else:
        result["open_s"] = load_s
        loader = BatchLoader(part.pixels, part.labels, args.batch, shuffle=True, seed=0)
        t0 = time.perf_counter()
        n = checksum = 0
        for pixels, labels in loader:
            n += len(labels)
            checksum += int(pixels[:, 0, 0, 0].sum())  # touch the batch
        result["seconds"] = time.perf_counter() - t0
        result["epoch_images"] = n
    result.update(sampler.stop())
    args.phase_out.write_text(json.dumps(result))


def run_phase(phase, images, cache, args, out):
    cmd = [sys.executable, __file__, "--phase", phase, "--phase-out", str(out)]
    cmd += ["--images", str(images), "--cache", str(cache), "--n", str(args.n)]
    cmd += ["--size", str(args.size), "--batch", str(args.batch), "--workers", str(args.workers)]
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(out.read_text())


def disk_mb(folder):
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    allocated = sum(p.stat().st_blocks * 512 for p in files)
    apparent = sum(p.stat().st_size for p in files)
    return allocated / 2**20, apparent / 2**20


# --- driver --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="number of images")
    ap.add_argument("--size", type=int, default=64, help="cache side in pixels")
    ap.add_argument("--image-px", type=int, default=80, help="side of the generated PNGs")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="decode processes")
    ap.add_argument("--keep", type=Path, help="generate the images here and keep them (reused)")
    ap.add_argument("--cache-root", help="where the temporary cache goes (default: $TMPDIR)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--phase", choices=["build", "read"], help=argparse.SUPPRESS)
    ap.add_argument("--phase-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))  # medfit from this checkout, also when not installed
    if args.phase:
        phase_main(args)
        return

    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "ram_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config = {k: v for k, v in config.items() if v is not None and k != "json"}
    print("## cache memory bench\n")
    print(f"config: {config}")
    print(f"machine: {machine}")

    tmp = Path(tempfile.mkdtemp(prefix="medfit_bench_mem_", dir=args.cache_root))
    try:
        images = args.keep or tmp / "images"
        gen_s, reused = ensure_images(images, args.n, args.image_px, args.workers)
        src_mb = disk_mb(images)[0]
        print(
            f"images: {args.n} PNGs of {args.image_px}x{args.image_px} in {images} "
            + ("(reused)" if reused else f"(generated in {gen_s:.0f} s)")
            + f", {src_mb:.0f} MB on disk\n"
        )
        cache = tmp / "cache"
        build = run_phase("build", images, cache, args, tmp / "build.json")
        read = run_phase("read", images, cache, args, tmp / "read.json")
        cache_alloc_mb, cache_apparent_mb = disk_mb(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    naive_mb = args.n * args.size * args.size * 3 / 2**20
    print(f"### N = {args.n}, cache at {args.size} px\n")
    print(
        "| N | cache on disk MB | build s | images/s | peak RSS build MB (+ workers' PSS) | "
        "read epoch s | peak RSS read MB | naive in-RAM uint8 MB (float32) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.n} | {cache_alloc_mb:.0f} | {build['seconds']:.1f} | "
        f"{build['images'] / build['seconds']:.0f} | {build['peak_rss_mb']:.0f} "
        f"(+ {build['peak_children_pss_mb']:.0f}) | {read['seconds']:.1f} | "
        f"{read['peak_rss_mb']:.0f} | {naive_mb:.0f} ({4 * naive_mb:.0f}) |"
    )
    print("\n### where the peaks come from, MB (sampled every 50 ms)\n")
    print(
        "| phase | RSS after imports | peak RSS (VmHWM) | peak anonymous | peak file-backed "
        "(libraries + mmap, reclaimable) | workers' peak PSS (anonymous) | largest worker's "
        "peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in (build, read):
        print(
            f"| {r['phase']} | {r['baseline_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_self_anon_mb']:.0f} | {r['peak_self_file_mb']:.0f} | "
            f"{r['peak_children_pss_mb']:.0f} ({r['peak_children_pss_anon_mb']:.0f}) | "
            f"{r['peak_child_hwm_mb']:.0f} |"
        )
    print(
        f"\ncache file: {cache_apparent_mb:.0f} MB apparent, {cache_alloc_mb:.0f} MB allocated; "
        f"read epoch {read['epoch_images'] / read['seconds']:.0f} images/s "
        f"(batch {args.batch}, shuffled), opening the built cache took {read['open_s']:.2f} s"
    )
    if args.json:
        results = {"config": config, "machine": machine, "build": build, "read": read}
        results["cache_mb"] = {"allocated": cache_alloc_mb, "apparent": cache_apparent_mb}
        results["naive_in_ram_uint8_mb"] = naive_mb
        results["images"] = {"source_mb": src_mb, "generated_s": gen_s, "reused": reused}
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
