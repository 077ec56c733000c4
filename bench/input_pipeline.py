"""
Benchmark: input throughput (images/s) of three ways to feed a model with augmented batches.

No model runs: each pipeline only produces augmented, normalised batches of 32 images at 224 px
that are ready for one (numpy for Keras, tensors on the training device for the others), over one
epoch of the BCCD blood-cell training set (9,957 JPEGs, 320x240, 4 classes). The augmentation is
our user's: rotations up to 90 degrees, horizontal and vertical flips.

1. keras: tf_keras `ImageDataGenerator(rescale=1./255, rotation_range=90, horizontal_flip=True,
   vertical_flip=True).flow_from_directory(dir, target_size=(224, 224), batch_size=32,
   class_mode="categorical")`, exactly as our user wrote it; `len(it)` batches (one epoch) drawn
   with next(it), as fit() does with its default single worker. Needs `tensorflow-cpu tf-keras`;
   without them the row says "keras: unavailable (<reason>)" and the rest still runs.
2. torchvision: `ImageFolder` + `DataLoader(num_workers=os.cpu_count(), batch_size=32,
   shuffle=True)` with Resize((224, 224)), RandomRotation(90), RandomHorizontalFlip,
   RandomVerticalFlip, ToTensor, Normalize(ImageNet mean, std); one epoch incl. worker start-up.
   RandomRotation interpolates nearest-neighbour by default; a second epoch uses bilinear, as
   medfit does, for a like-for-like row.
3. medfit: `build_or_load` into a fresh temp cache (decode once, at cache_size_for(224) = 258 px),
   then `BatchLoader` (shuffled) + `to_model_input` with the batch augmentation:
   (a) "epoch 1 incl. cache build": the build and one epoch, preset `microscopy` (random resized
       crop 70-100%, rotation ±180°, both flips, colour jitter: a superset of the user's);
   (b) "epoch 2 from cache": a second epoch from the built cache, same preset (steady state);
   (c) "epoch from cache, user's aug": one more epoch with the `rotate90` preset, the user's
       augmentation exactly (whole image 258 -> 224, rotation ±90°, both flips): one bilinear
       OpenCV warp per image on a CPU, kornia on a GPU;
   (d) on a CPU, the same with kornia's grid_sample warp (the GPU path run on the CPU).

Each pipeline runs in its own Python process (TensorFlow and torch's DataLoader workers do not
share one). Every file is read once before the first pipeline so all start from a warm page cache.

Data: <repo>/../shared/data/blood_cells_bccd/train/<CLASS>/*.jpeg (read-only; --data for another
folder of class folders). --limit N takes a stratified subset (as symlinks in a temp dir).

Run (the full run takes about 5-10 min on 2 CPU cores):

    .venv/bin/python bench/input_pipeline.py
    .venv/bin/python bench/input_pipeline.py --json /tmp/input_pipeline.json
    .venv/bin/python bench/input_pipeline.py --limit 300 --only torchvision medfit  # smoke test
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "blood_cells_bccd" / "train"
PIPELINES = ("keras", "torchvision", "medfit")
MEAN = (0.485, 0.456, 0.406)  # ImageNet, what the pretrained weights expect
STD = (0.229, 0.224, 0.225)
BATCH = 32


def list_samples(root):
    """Sample records for <root>/<class>/<image>, classes sorted as Keras and ImageFolder do."""
    from medfit.data.decode import is_image_path
    from medfit.data.sources import Sample

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = [
        Sample(str(path), label, "train")
        for label, name in enumerate(classes)
        for path in sorted((root / name).iterdir())
        if path.is_file() and is_image_path(path)
    ]
    return classes, samples


def make_subset(dst, classes, samples):
    """The chosen samples as symlinks in dst/<class>/, the layout Keras and torchvision read."""
    for s in samples:
        src = Path(s.path)
        (dst / classes[s.label]).mkdir(parents=True, exist_ok=True)
        (dst / classes[s.label] / src.name).symlink_to(src.resolve())


def warm_page_cache(samples):
    t0 = time.perf_counter()
    total = 0
    for s in samples:
        total += len(Path(s.path).read_bytes())
    return total, time.perf_counter() - t0


# --- the pipelines, each run in its own process -------------------------------------------------


def run_keras(data, args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from tf_keras.preprocessing.image import ImageDataGenerator
    except Exception as e:  # ImportError, or a TensorFlow that fails to load
        return [{"pipeline": "keras", "unavailable": f"{type(e).__name__}: {e}"}]

    t0 = time.perf_counter()
    datagen = ImageDataGenerator(
        rescale=1.0 / 255, rotation_range=90, horizontal_flip=True, vertical_flip=True
    )
    it = datagen.flow_from_directory(
        str(data), target_size=(args.size, args.size), batch_size=BATCH, class_mode="categorical"
    )
    n = 0
    for _ in range(len(it)):
        x, _labels = next(it)
        n += len(x)
    seconds = time.perf_counter() - t0
    assert x.shape[1:] == (args.size, args.size, 3), x.shape
    return [{"pipeline": "keras", "images": n, "seconds": seconds}]


def run_torchvision(data, args):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    def epoch(interpolation):
        t0 = time.perf_counter()
        tf = transforms.Compose(
            [
                transforms.Resize((args.size, args.size)),
                transforms.RandomRotation(90, interpolation=interpolation),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
        dataset = datasets.ImageFolder(str(data), tf)
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=os.cpu_count())
        device = torch.device(args.device)
        n = 0
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert x.shape[1:] == (3, args.size, args.size), x.shape
        return n, time.perf_counter() - t0

    nearest = transforms.InterpolationMode.NEAREST  # RandomRotation's default
    bilinear = transforms.InterpolationMode.BILINEAR
    n, seconds = epoch(nearest)
    rows = [{"pipeline": "torchvision", "images": n, "seconds": seconds}]
    n, seconds = epoch(bilinear)
    rows.append(
        {"pipeline": "torchvision, bilinear rotation (medfit's)", "images": n, "seconds": seconds}
    )
    return rows


def run_medfit(data, args):
    from medfit.data.augment import TrainAugment, build_train_augment
    from medfit.data.cache import build_or_load, cache_size_for
    from medfit.data.loader import BatchLoader, to_model_input

    device = torch.device(args.device)
    mean = torch.tensor(MEAN, device=device)
    std = torch.tensor(STD, device=device)
    _, samples = list_samples(data)

    def epoch(loader, transform, epoch_no):
        loader.set_epoch(epoch_no)
        n = 0
        with torch.no_grad():
            for pixels, labels in loader:
                x = to_model_input(pixels, device, transform, mean, std)
                labels = labels.to(device, non_blocking=True)
                n += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert x.shape[1:] == (3, args.size, args.size), x.shape
        return n

    rows = []
    with tempfile.TemporaryDirectory(prefix="medfit_bench_cache_", dir=args.cache_root) as tmp:
        microscopy = build_train_augment("microscopy", args.size).to(device)
        t0 = time.perf_counter()
        part = build_or_load(samples, cache_size_for(args.size), Path(tmp), desc="medfit cache")
        build_s = time.perf_counter() - t0
        loader = BatchLoader(part.pixels, part.labels, BATCH, shuffle=True, seed=0)
        n = epoch(loader, microscopy, 0)
        rows.append(
            {
                "pipeline": "medfit: epoch 1 incl. cache build (microscopy aug)",
                "images": n,
                "seconds": time.perf_counter() - t0,
                "cache_build_s": build_s,
                "cache_mb": part.pixels.nbytes / 2**20,
                "skipped": len(part.skipped),
            }
        )

        def timed_epoch(name, transform, epoch_no):
            t0 = time.perf_counter()
            n = epoch(loader, transform, epoch_no)
            rows.append({"pipeline": name, "images": n, "seconds": time.perf_counter() - t0})

        timed_epoch("medfit: epoch 2 from cache (microscopy aug)", microscopy, 1)
        user = build_train_augment("rotate90", args.size).to(device)
        timed_epoch("medfit: epoch from cache (user's aug: rot ±90°, flips)", user, 2)
        if device.type == "cpu":  # what the CPU would do with the GPU path's warp
            kornia_warp = TrainAugment("rotate90", args.size, cpu_backend="kornia")
            timed_epoch("medfit: same, kornia grid_sample warp instead of OpenCV", kornia_warp, 3)
    return rows


def worker_main(args):
    torch.set_num_threads(os.cpu_count())
    run = {"keras": run_keras, "torchvision": run_torchvision, "medfit": run_medfit}[args.worker]
    rows = run(args.data, args)
    args.worker_out.write_text(json.dumps(rows))


def run_in_subprocess(name, data, args, out):
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--worker-out",
        str(out),
        "--data",
        str(data),
        "--size",
        str(args.size),
        "--device",
        args.device,
    ]
    if args.cache_root:
        cmd += ["--cache-root", args.cache_root]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode != 0 or not out.exists():
        return [{"pipeline": name, "unavailable": f"process exited with code {proc.returncode}"}]
    return json.loads(out.read_text())


# --- driver --------------------------------------------------------------------------------------


def fmt_ratio(rate, base):
    return f"{rate / base:.2f}x" if base else "n/a"


def print_table(rows):
    rates = {}
    for r in rows:
        if "unavailable" not in r:
            r["images_per_s"] = r["images"] / r["seconds"]
            rates.setdefault(r["pipeline"], r["images_per_s"])
    keras, tv = rates.get("keras"), rates.get("torchvision")
    print("| pipeline | images | seconds | images/s | vs Keras | vs torchvision |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "unavailable" in r:
            print(f"| {r['pipeline']}: unavailable ({r['unavailable']}) | | | | | |")
            continue
        rate = r["images_per_s"]
        print(
            f"| {r['pipeline']} | {r['images']} | {r['seconds']:.1f} | {rate:.0f} | "
            f"{fmt_ratio(rate, keras)} | {fmt_ratio(rate, tv)} |"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder of class folders")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--limit", type=int, help="stratified subset of N images (smoke tests)")
    ap.add_argument("--only", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cache-root", help="where the temporary medfit cache goes (default: $TMPDIR)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", choices=PIPELINES, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))  # medfit from this checkout, also when not installed
    if args.worker:
        worker_main(args)
        return
    if not args.data.is_dir():
        sys.exit(
            f"data not found: {args.data} (expected <repo>/../shared/data/blood_cells_bccd/train)"
        )
    torch.set_num_threads(os.cpu_count())

    from medfit.data.sources import stratified_subset

    classes, samples = list_samples(args.data)
    try:  # not imported here: TensorFlow only ever loads in the keras process
        keras_version = importlib.metadata.version("tf-keras")
    except importlib.metadata.PackageNotFoundError:
        keras_version = None
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tf_keras": keras_version,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    config = {k: v for k, v in config.items() if k not in ("json", "worker", "worker_out")}
    print("## input pipeline bench\n")
    print(f"config: {config}")
    print(f"machine: {machine}")
    results = {"config": config, "machine": machine, "rows": []}

    with tempfile.TemporaryDirectory(prefix="medfit_bench_input_") as tmp:
        data = args.data
        if args.limit and args.limit < len(samples):
            samples = stratified_subset(samples, args.limit, seed=0)
            data = Path(tmp) / "subset"
            make_subset(data, classes, samples)
        nbytes, warm_s = warm_page_cache(samples)
        print(
            f"data: {len(samples)} images in {len(classes)} classes ({', '.join(classes)}), "
            f"{nbytes / 2**20:.0f} MB read once in {warm_s:.1f} s to warm the page cache\n"
        )
        for name in args.only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results["rows"] += run_in_subprocess(name, data, args, Path(tmp) / f"{name}.json")

    rows = results["rows"]
    for r in rows:
        if "unavailable" not in r and r["images"] != len(samples):
            r["note"] = f"{r['images']} images, expected {len(samples)}"
    print(f"### one epoch of {len(samples)} images at {args.size} px, batch {BATCH}\n")
    print_table(rows)
    for r in rows:
        if "note" in r:
            print(f"\nwarning: {r['pipeline']}: {r['note']}")
    build = next((r for r in rows if "cache_build_s" in r), None)
    if build:
        print(
            f"\nmedfit cache build alone: {build['cache_build_s']:.1f} s "
            f"({build['images'] / build['cache_build_s']:.0f} images/s), "
            f"{build['cache_mb']:.0f} MB on disk"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
