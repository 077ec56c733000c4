"""Probes: run the selected checkpoint on a few hundred training images to test three suspicions.

- Not fitting the training data: accuracy and per-class predictions on the un-augmented training
  images (the history's train accuracy is on augmented batches, with dropout on, averaged over an
  epoch in which the weights moved: it understates how well the kept weights fit).
- BatchNorm mismatch: the same batches through the network with BatchNorm in eval mode (running
  statistics, what validation and deployment use) and in train mode (batch statistics, what the
  weights were trained with). A healthy network gives nearly the same answers either way.
- Augmentation destroying the label: the same images un-augmented and augmented with the run's
  own preset. The model was trained on augmented images, so if the preset keeps the label it
  recognises them about as well as the originals.

Everything goes through medfit's own pieces: `medfit.inference.load` for the checkpoint (weights
only), `cache_splits` for decoding, the run's `Preprocess.input_fn` for resize and normalisation.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfit.data.augment import build_train_augment
from medfit.data.dataset import cache_splits
from medfit.data.sources import DatasetIndex, Sample
from medfit.diagnose.own.facts import RunFacts
from medfit.errors import MedfitError
from medfit.model.policy import BN_TYPES
from medfit.progress import Log, duration
from medfit.rundir import RunDir

# 256 images: binomial noise of an accuracy is at most ±0.031, so the 10-point effects the rules
# look for stand out, and two forward passes at 64 px take seconds on a CPU.
PROBE_IMAGES = 256
PROBE_SEED = 0  # the same images and augmentation draws on every diagnose of a run


@dataclass(frozen=True)
class BNProbe:
    images: int
    batch_size: int
    policy: str  # the run's BatchNorm policy in the full stage
    acc_eval: float  # BatchNorm running statistics (what validation used)
    acc_batch_stats: float  # BatchNorm batch statistics (what training used)
    agreement: float  # share of images with the same predicted class in both modes


@dataclass(frozen=True)
class AugProbe:
    images: int
    preset: str
    acc_clean: float  # un-augmented training images (eval transform)
    acc_augmented: float  # the same images through the run's training augmentation


@dataclass(frozen=True)
class FitProbe:
    images: int
    acc_clean: float  # un-augmented training images, BatchNorm in eval mode
    support: list[int]  # per class, in the run's class order
    predicted: list[int]
    correct: list[int]


@dataclass(frozen=True)
class ProbeResults:
    bn: BNProbe | None
    aug: AugProbe | None
    seconds: float
    skipped: str | None = None  # why no probe ran
    fit: FitProbe | None = None  # None in records written before this probe existed

    def to_dict(self) -> dict[str, Any]:
        return {
            "bn": dataclasses.asdict(self.bn) if self.bn else None,
            "augmentation": dataclasses.asdict(self.aug) if self.aug else None,
            "fit": dataclasses.asdict(self.fit) if self.fit else None,
            "seconds": round(self.seconds, 2),
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProbeResults:
        """The record `to_dict` wrote (diagnosis.json "probes"), to re-apply the rules to it."""
        bn, aug, fit = raw.get("bn"), raw.get("augmentation"), raw.get("fit")
        return cls(
            BNProbe(**bn) if bn else None,
            AugProbe(**aug) if aug else None,
            float(raw.get("seconds") or 0.0),
            raw.get("skipped"),
            FitProbe(**fit) if fit else None,
        )

    def clean_accuracy(self) -> tuple[float, int] | None:
        """(accuracy, images) of the kept weights on un-augmented training images, from whichever
        probe measured it (older records have only the augmentation or BatchNorm probe)."""
        if self.fit:
            return self.fit.acc_clean, self.fit.images
        if self.aug:
            return self.aug.acc_clean, self.aug.images
        if self.bn:
            return self.bn.acc_eval, self.bn.images
        return None


def run_probes(facts: RunFacts, log: Log = print, device: str = "auto") -> ProbeResults:
    """Every probe on up to PROBE_IMAGES training images; skipped (with the reason) when the
    checkpoint or the training images are not available."""
    started = time.perf_counter()
    reason = _unavailable(facts)
    if reason:
        return ProbeResults(None, None, 0.0, reason)
    from medfit.inference import load

    classifier = load(facts.path, device=device)
    pixels, labels = _probe_images(facts, log)
    order = np.random.default_rng(PROBE_SEED).permutation(len(labels))  # mixed-class batches
    pixels, labels = pixels[order], labels[order]
    model, dev, pre = classifier.model, classifier.device, facts.preprocess
    clean = pre.input_fn(dev)
    model.eval()
    passes = 4 if facts.config.data.aug not in ("none", "auto") else 3
    log(f"  probes: {passes} forward passes over {len(labels)} training images")
    fit = _fit_probe(_predict(model, pixels, clean, facts.config.train.batch_size), labels, facts)
    log(f"  probes: 1/{passes} done in {duration(time.perf_counter() - started)}")
    bn = _bn_probe(facts, model, pixels, labels, clean)
    log(f"  probes: 3/{passes} done in {duration(time.perf_counter() - started)}")
    aug = None
    if passes == 4:
        augment = pre.input_fn(dev, build_train_augment(facts.config.data.aug, pre.img_size))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PROBE_SEED)
            acc_aug = _accuracy(model, pixels, labels, augment, facts.config.train.batch_size)
        aug = AugProbe(len(labels), facts.config.data.aug, fit.acc_clean, acc_aug)
    return ProbeResults(bn, aug, time.perf_counter() - started, fit=fit)


def _unavailable(facts: RunFacts) -> str | None:
    best = RunDir(facts.path).best
    if not best.is_file():
        return f"no {best.relative_to(facts.path)}"
    if not facts.train_paths:
        return "split.csv lists no training images"
    missing = next((p for p, _ in facts.train_paths if not Path(p).exists()), None)
    if missing:
        return (
            f"training image {missing} not found (split.csv paths are relative to where "
            "training ran: run diagnose from there)"
        )
    return None


def _probe_images(facts: RunFacts, log: Log) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of the run's training images, decoded through medfit's cache."""
    index_of = {c: i for i, c in enumerate(facts.classes)}
    samples = [Sample(p, index_of[c], "train") for p, c in facts.train_paths if c in index_of]
    index = DatasetIndex(facts.config.data.root, list(facts.classes), samples)
    data_cfg = dataclasses.replace(facts.config.data, max_train=PROBE_IMAGES, strict=False)
    p = facts.preprocess
    part = cache_splits(
        index, data_cfg, p.cache_size, p.interpolation, PROBE_SEED, log, splits=("train",)
    )
    if "train" not in part:
        raise MedfitError(f"{facts.path}: none of the training images could be decoded")
    return np.asarray(part["train"].pixels), np.asarray(part["train"].labels)


@torch.no_grad()
def _predict(
    model: nn.Module,
    pixels: np.ndarray,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
) -> np.ndarray:
    preds = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size]))
        preds.append(model(to_input(batch)).argmax(1).cpu().numpy())
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def _accuracy(
    model: nn.Module,
    pixels: np.ndarray,
    labels: np.ndarray,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
) -> float:
    model.eval()
    return float(np.mean(_predict(model, pixels, to_input, batch_size) == labels))


def _fit_probe(preds: np.ndarray, labels: np.ndarray, facts: RunFacts) -> FitProbe:
    k = len(facts.classes)
    return FitProbe(
        images=len(labels),
        acc_clean=float(np.mean(preds == labels)),
        support=np.bincount(labels, minlength=k).tolist(),
        predicted=np.bincount(preds, minlength=k).tolist(),
        correct=np.bincount(labels[preds == labels], minlength=k).tolist(),
    )


def _bn_probe(
    facts: RunFacts,
    model: nn.Module,
    pixels: np.ndarray,
    labels: np.ndarray,
    to_input: Callable[[torch.Tensor], torch.Tensor],
) -> BNProbe:
    """Eval-mode vs batch-statistics predictions on whole batches of the run's batch size."""
    batch = facts.config.train.batch_size
    n = max(len(labels) // batch, 1) * batch  # whole batches only: a 1-image batch has no stats
    pixels, labels = pixels[:n], labels[:n]
    model.eval()
    eval_preds = _predict(model, pixels, to_input, batch)
    batch_stats = copy.deepcopy(model)  # train-mode BN updates running stats: never the original
    for module in batch_stats.modules():
        if isinstance(module, BN_TYPES):
            module.train()
    train_preds = _predict(batch_stats, pixels, to_input, batch)
    return BNProbe(
        images=len(labels),
        batch_size=batch,
        policy=facts.config.train.bn,
        acc_eval=float(np.mean(eval_preds == labels)),
        acc_batch_stats=float(np.mean(train_preds == labels)),
        agreement=float(np.mean(eval_preds == train_preds)),
    )
