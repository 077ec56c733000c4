"""The training methods of bench/time_to_accuracy.py, each run in its own process.

Every method gets the same folder (`root/{train,val,test}/<class>/`), image size, batch size (32),
backbone and ImageNet weights (Keras MobileNet(alpha=0.25), for the torch methods its timm
conversion, see bench/keras_mobilenet.py), seed, target val accuracy, epoch budget and time cap. It
stops at the end of the first epoch whose val accuracy reaches the target (or at the budget/cap)
and returns one row per epoch with the wall and CPU seconds since its process started (imports,
data loading and caching included: the time a user waits), plus test accuracy of the model it
ends with (medfit: its selected checkpoint, as `medfit eval` would score it).
Imports of TensorFlow / fastai / torch stay inside each method: one process loads one stack
(torch and TensorFlow in one process crash on import).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from keras_mobilenet import MOBILENET, TIMM_FILE
from peers import cpu_seconds
from peers_methods import KerasRecipe, fastai_loaders, log
from sklearn.metrics import balanced_accuracy_score

WALL0, CPU0 = time.perf_counter(), cpu_seconds()  # this process's start: what a user waits from


@dataclass
class Setup:
    root: Path
    img_size: int
    batch_size: int
    seed: int
    target: float  # val accuracy to reach
    max_epochs: int  # including the head-only / frozen epoch where a method has one
    cap_s: float  # wall seconds since the process started
    work: Path


@dataclass
class Run:
    """The per-epoch record every method fills in the same way."""

    setup: Setup
    history: list[dict[str, Any]] = field(default_factory=list)
    test_acc: float | None = None
    notes: list[str] = field(default_factory=list)

    def epoch(self, stage: str, val_acc: float, val_bal: float | None = None) -> bool:
        """Record an epoch that just ended; True when the method should stop."""
        wall, cpu = time.perf_counter() - WALL0, cpu_seconds() - CPU0
        row = {"epoch": len(self.history) + 1, "stage": stage, "val_acc": float(val_acc)}
        row |= {"val_balanced_accuracy": val_bal, "wall_s": wall, "cpu_s": cpu}
        self.history.append(row)
        log(f"  epoch {row['epoch']} {stage}: val acc {val_acc:.4f} at {wall:.0f} s")
        return self.done()

    def done(self) -> bool:
        s = self.setup
        return bool(self.history) and (
            self.history[-1]["val_acc"] >= s.target
            or len(self.history) >= s.max_epochs
            or self.history[-1]["wall_s"] >= s.cap_s
        )


def _scores(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    pred = probs.argmax(1)
    return float(np.mean(pred == y)), float(balanced_accuracy_score(y, pred))


# --- Keras, as our user wrote it ---------------------------------------------------------------


def run_keras(s: Setup) -> Run:
    """The user's recipe (peers_methods.KerasRecipe), stopped at the target."""
    import tensorflow as tf

    recipe = KerasRecipe.build(s.root, s.img_size, s.batch_size, s.seed)
    run = Run(s, notes=[f"tensorflow {tf.__version__}, tf_keras"])

    def on_epoch_end(epoch: int, logs: dict[str, float] | None = None) -> None:
        recipe.model.stop_training = run.epoch("full", *_scores(*recipe.predict(recipe.val)))

    recipe.fit(s.max_epochs, on_epoch_end)
    run.test_acc = _scores(*recipe.predict_folder(s.root / "test"))[0]
    return run


# --- fastai fine_tune ----------------------------------------------------------------------------


def run_fastai(s: Setup) -> Run:
    """ImageDataLoaders.from_folder + aug_transforms(), vision_learner(timm MobileNet 0.25),
    fine_tune(max_epochs - 1, freeze_epochs=1): fastai's own recommended fine-tuning path."""
    import fastai
    import peers_models  # noqa: F401  (registers the MobileNet in timm)
    from fastai.callback.core import CancelFitException
    from fastai.vision.all import Callback, accuracy, get_image_files, vision_learner

    dls = fastai_loaders(s.root, s.img_size, s.batch_size, s.seed)
    run = Run(s, notes=[f"fastai {fastai.__version__}"])

    class StopAtTarget(Callback):  # type: ignore[misc]
        order, fits = 60, 0  # after the Recorder (50) has the epoch's metrics

        def before_fit(self) -> None:
            StopAtTarget.fits += 1
            if run.done():  # the frozen phase reached the target: skip the unfrozen one
                raise CancelFitException

        def after_epoch(self) -> None:
            values = dict(zip(self.recorder.metric_names, self.recorder.log, strict=False))
            stage = "head" if StopAtTarget.fits == 1 else "full"
            if run.epoch(stage, float(values["accuracy"])):
                raise CancelFitException

    stop = StopAtTarget()
    learn = vision_learner(dls, MOBILENET, pretrained=True, metrics=[accuracy], cbs=[stop])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(s.max_epochs - 1, freeze_epochs=1)
    learn.remove_cb(stop)
    test_dl = dls.test_dl(get_image_files(s.root / "test"), with_labels=True)
    with learn.no_bar():
        probs, targets = learn.get_preds(dl=test_dl)
    run.test_acc = _scores(targets.numpy(), probs.numpy())[0]
    return run


# --- timm's fine-tuning recipe in a plain loop ---------------------------------------------------

# From timm's train.py arguments as used for fine-tuning (its README and docs' examples): AdamW,
# weight decay 0.05, label smoothing 0.1, RandAugment `rand-m9-mstd0.5` (not `-inc1`: its
# posterize asks Pillow 11 for 0 bits and raises), random erasing 0.25,
# 1 warmup epoch from 1e-5 then cosine to 1e-6, the model's own mean/std. The peak LR is 1e-3,
# the usual fine-tuning value: timm's from-scratch rule (lr_base 0.1 x sqrt(32/256) for AdamW)
# would give 0.035.
TIMM_RECIPE = "adamw lr 1e-3 wd 0.05, smoothing 0.1, rand-m9-mstd0.5, reprob 0.25, warmup 1"


def run_timm(s: Setup) -> Run:
    """timm.create_model + timm.data.create_transform + create_optimizer_v2 + cosine scheduler."""
    import peers_models  # noqa: F401  (registers the MobileNet in timm)
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from torchvision.datasets import ImageFolder

    torch.manual_seed(s.seed)
    classes = sorted(p.name for p in (s.root / "train").iterdir())
    model = timm.create_model(MOBILENET, pretrained=True, num_classes=len(classes))
    cfg = resolve_data_config({"input_size": (3, s.img_size, s.img_size)}, model=model)
    train_tf = create_transform(
        **cfg, is_training=True, auto_augment="rand-m9-mstd0.5", re_prob=0.25
    )
    eval_tf = create_transform(**{**cfg, "crop_pct": 1.0})
    loader = torch.utils.data.DataLoader
    train = loader(ImageFolder(str(s.root / "train"), train_tf), s.batch_size, shuffle=True,
                   num_workers=2, drop_last=True, persistent_workers=True)  # fmt: skip
    val = loader(ImageFolder(str(s.root / "val"), eval_tf), 64, num_workers=2)
    test = loader(ImageFolder(str(s.root / "test"), eval_tf), 64, num_workers=2)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    sched = CosineLRScheduler(optimizer, t_initial=s.max_epochs, lr_min=1e-6,
                              warmup_t=1, warmup_lr_init=1e-5)  # fmt: skip
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    run = Run(s, notes=[f"timm {timm.__version__}: {TIMM_RECIPE}"])
    for epoch in range(s.max_epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
        sched.step(epoch + 1)
        if run.epoch("full", *_torch_scores(model, val)):
            break
    run.test_acc = _torch_scores(model, test)[0]
    return run


def _torch_scores(model: Any, loader: Any) -> tuple[float, float]:
    import torch

    model.eval()
    ys, probs = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(model(x).softmax(1).numpy())
            ys.append(y.numpy())
    return _scores(np.concatenate(ys), np.concatenate(probs))


# --- medfit ------------------------------------------------------------------------------------

EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/\d+\s+(\w+)\s.*val loss \S+ acc (\S+) bal (\S+)")


def run_medfit(s: Setup, model: str, weights: str, **options: Any) -> Run:
    """medfit.train with its defaults and `--stop-at TARGET` (one head epoch, then the full
    stage planned for the rest of the budget), then the selected checkpoint on test."""
    import peers_models  # noqa: F401  (registers the MobileNet in timm)

    import medfit
    from medfit.evaluate.runner import run_eval

    run = Run(s, notes=[f"medfit {model} {options or 'defaults'}"])

    def on_line(line: str) -> None:
        log(line)
        m = EPOCH_LINE.match(line)
        if m:
            run.epoch(m.group(2), float(m.group(3)), float(m.group(4)))

    result = medfit.train(
        str(s.root), out=str(s.work / "run"), log=on_line, report=False, model=model,
        weights=weights, img_size=s.img_size, head_epochs=1, epochs=s.max_epochs - 1,
        batch_size=s.batch_size, seed=s.seed, stop_at=s.target, patience=0,
        cache_dir=str(s.work / "cache"),  # a fresh cache: medfit pays its own decode time
        **options,
    )  # fmt: skip
    metrics = run_eval(result.dir, split="test", n_boot=0, log=log)["metrics"]
    value = metrics["accuracy"]
    run.test_acc = float(value["value"] if isinstance(value, dict) else value)
    run.notes.append(f"selected epoch {result.summary.get('best_epoch')}")
    return run


METHODS: dict[str, Callable[[Setup], Run]] = {
    "keras": run_keras,
    "fastai": run_fastai,
    "timm": run_timm,
    "medfit": lambda s: run_medfit(s, MOBILENET, str(TIMM_FILE)),
    "medfit_lite0": lambda s: run_medfit(s, "tf_efficientnet_lite0", "lite"),
    # Levers, each one option on top of medfit_lite0 (on/off on the same set and seeds).
    "medfit_lite0_compile": lambda s: run_medfit(s, "tf_efficientnet_lite0", "lite", compile=True),
    "medfit_lite0_contiguous": lambda s: run_medfit(
        s, "tf_efficientnet_lite0", "lite", channels_last=False
    ),
    # No LR warmup in the full stage (default 1 epoch): fewer epochs to the target here, but it
    # cost the suite's knee grades 0.04 QWK (bench/LOG.md, "time_to_accuracy.py"), so not default.
    "medfit_lite0_warmup0": lambda s: run_medfit(
        s, "tf_efficientnet_lite0", "lite", warmup_epochs=0.0
    ),
    "medfit_lite0_freeze_stem": lambda s: run_medfit(
        s, "tf_efficientnet_lite0", "lite", freeze_stem_epochs=2
    ),
    "medfit_lite0_contiguous_freeze_stem": lambda s: run_medfit(
        s, "tf_efficientnet_lite0", "lite", channels_last=False, freeze_stem_epochs=2
    ),
}

if __name__ == "__main__":
    sys.exit("run bench/time_to_accuracy.py")
