"""
Benchmark: peak memory of decoding one large 16-bit PNG (the decode-memory amplification).

A 13000 x 13000 16-bit grayscale PNG of a mostly constant image is a few hundred KB on disk and
passes the 178.9 Mpx pixel guard. Decoding it means Pillow's raster (2 bytes/pixel, 338 MB) plus
whatever the windowing to 8 bit allocates. Two decoders are measured, each in its own process so
that its peak is its own (peak RSS = `ru_maxrss`, minus the process's RSS before decoding):

- `float64 whole image`: what medfit did before: `np.asarray(image, float64)`, percentiles of
  every finite value, then `(v - low) * scale`, `nan_to_num`, `clip`, `rint` as whole-image
  float64 temporaries (re-created here, so the comparison runs from one checkout);
- `decode_image`: the decoder medfit uses now (train, check, predict and serve all call it).

Run:

    .venv/bin/python bench/decode_memory.py                 # 13000 px, ~1 minute, ~7 GB free RAM
    .venv/bin/python bench/decode_memory.py --size 4000     # smoke test
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_png(path: Path, size: int) -> None:
    """A mostly constant 16-bit image (compresses to almost nothing) with a bright square."""
    values = np.full((size, size), 1000, dtype=np.uint16)
    values[size // 4 : size // 2, size // 4 : size // 2] = 40000
    Image.fromarray(values).save(path, compress_level=1)  # Pillow writes mode I;16


def old_decode(path: Path) -> np.ndarray:
    """The whole-image float64 windowing medfit used before (same arithmetic, same order)."""
    with Image.open(path) as image:
        image.load()
        values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(v) for v in np.percentile(finite, (0.5, 99.5)))
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(kind: str, path: Path) -> None:
    """Decode once; print 'before_mb peak_mb seconds' on one line."""
    from medfit.data.decode import decode_image

    before = rss_mb()
    start = time.perf_counter()
    pixels = old_decode(path) if kind == "old" else decode_image(path).pixels
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{before:.0f} {peak:.0f} {seconds:.2f} {int(pixels.mean() * 1000)}")


def measure(kind: str, path: Path) -> tuple[float, float, float, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2]), int(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--size", type=int, default=13000, help="image side in pixels")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="medfit-decode-bench-") as folder:
        path = Path(folder) / "big16.png"
        make_png(path, args.size)
        size_kb = path.stat().st_size / 1024
        print(f"{args.size} x {args.size} 16-bit PNG, {size_kb:.0f} KB on disk, ")
        print(f"{args.size**2 / 1e6:.1f} Mpx, raster {args.size**2 * 2 / 1e6:.0f} MB\n")
        print("| decoder | RSS before (MB) | peak RSS (MB) | peak - before (MB) | seconds |")
        print("|---|---:|---:|---:|---:|")
        checks = []
        for kind, name in (("old", "float64 whole image (before)"), ("new", "decode_image")):
            before, peak, seconds, check = measure(kind, path)
            checks.append(check)
            print(f"| {name} | {before:.0f} | {peak:.0f} | {peak - before:.0f} | {seconds:.1f} |")
        print(f"\nsame mean pixel value (x1000): {checks[0] == checks[1]} {checks}")


if __name__ == "__main__":
    main()
