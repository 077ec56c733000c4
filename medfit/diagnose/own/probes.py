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

Multi-label runs (sigmoid outputs, split.csv cells "A|B" read by `label_vector`): an argmax
against a label makes no sense there, so each probe scores the macro ROC-AUC of the sigmoid
outputs over the labels with PROBE_MIN_POSITIVES positives (and negatives) among the probe
images, with its Hanley-McNeil SE (`sigma`) for the rules to weigh gaps against; the records say
`metric: "macro_auc"` and their acc_* fields hold macro AUCs. The BatchNorm probe adds the share
of image-label calls that agree at the run's thresholds (thresholds.json, 0.5 before eval) and
the mean |Δp|; the fit probe's per-class counts become positives, calls and hits per label.
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
from medfit.data.sources import DatasetIndex, Sample, label_vector
from medfit.diagnose.own.facts import RunFacts
from medfit.diagnose.own.multilabel import macro_auc_sigma
from medfit.errors import MedfitError
from medfit.inference.scores import macro_auc, measurable, sigmoid
from medfit.model.policy import BN_TYPES
from medfit.progress import Log, duration
from medfit.rundir import RunDir

# 256 images: binomial noise of an accuracy is at most ±0.031, so the 10-point effects the rules
# look for stand out, and two forward passes at 64 px take seconds on a CPU.
PROBE_IMAGES = 256
PROBE_SEED = 0  # the same images and augmentation draws on every diagnose of a run
# Multi-label: a label's AUC on the probe images counts once it has 5 positives (and negatives):
# with fewer one image moves it by 0.2 or more, and the macro mean would be mostly that noise.
PROBE_MIN_POSITIVES = 5
ACCURACY, MACRO_AUC = "accuracy", "macro_auc"


@dataclass(frozen=True)
class BNProbe:
    images: int
    batch_size: int
    policy: str  # the run's BatchNorm policy in the full stage
    acc_eval: float  # BatchNorm running statistics (what validation used)
    acc_batch_stats: float  # BatchNorm batch statistics (what training used)
    agreement: float  # share of images with the same predicted class in both modes
    # Multi-label: acc_* are macro AUCs, agreement is over image-label calls at the thresholds.
    metric: str = ACCURACY
    sigma: float | None = None  # multi-label: SE of the macro AUC on these images
    mean_abs_dp: float | None = None  # multi-label: mean |p(batch stats) - p(running stats)|


@dataclass(frozen=True)
class AugProbe:
    images: int
    preset: str
    acc_clean: float  # un-augmented training images (eval transform)
    acc_augmented: float  # the same images through the run's training augmentation
    metric: str = ACCURACY  # multi-label: acc_* are macro AUCs
    sigma: float | None = None  # multi-label: SE of the macro AUC on these images


@dataclass(frozen=True)
class FitProbe:
    images: int
    acc_clean: float  # un-augmented training images, BatchNorm in eval mode
    support: list[int]  # per class, in the run's class order
    predicted: list[int]
    correct: list[int]
    # Multi-label: acc_clean is a macro AUC, and per label support/predicted/correct are the
    # positives, the calls at the run's thresholds and the positives called.
    metric: str = ACCURACY
    sigma: float | None = None  # multi-label: SE of the macro AUC on these images


@dataclass(frozen=True)
class ProbeResults:
    bn: BNProbe | None
    aug: AugProbe | None
    seconds: float
    skipped: str | None = None  # why no probe ran
    fit: FitProbe | None = None  # None in records written before this probe existed

    def to_dict(self) -> dict[str, Any]:
        return {
            "bn": _record(self.bn),
            "augmentation": _record(self.aug),
            "fit": _record(self.fit),
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
        probe measured it (older records have only the augmentation or BatchNorm probe); None
        for a multi-label record (see `clean_auc`)."""
        if self.fit:
            return (self.fit.acc_clean, self.fit.images) if self.fit.metric == ACCURACY else None
        if self.aug:
            return (self.aug.acc_clean, self.aug.images) if self.aug.metric == ACCURACY else None
        if self.bn:
            return (self.bn.acc_eval, self.bn.images) if self.bn.metric == ACCURACY else None
        return None

    def clean_auc(self) -> tuple[float, int, float] | None:
        """Multi-label: (macro AUC, images, its SE) of the kept weights on un-augmented training
        images, BatchNorm in eval mode; None for single-label records or when unmeasured."""
        for probe in (self.fit, self.aug, self.bn):
            if probe is None or probe.metric != MACRO_AUC:
                continue
            score = probe.acc_eval if isinstance(probe, BNProbe) else probe.acc_clean
            if score is not None and np.isfinite(score) and probe.sigma is not None:
                return float(score), probe.images, float(probe.sigma)
        return None


def _record(probe: BNProbe | AugProbe | FitProbe | None) -> dict[str, Any] | None:
    """A probe as JSON; the multi-label-only fields are left out of single-label records."""
    if probe is None:
        return None
    record = dataclasses.asdict(probe)
    if probe.metric == ACCURACY:
        for key in ("metric", "sigma", "mean_abs_dp"):
            record.pop(key, None)
    return record


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
    if facts.multilabel:
        thresholds = np.asarray(classifier.thresholds or [0.5] * len(facts.classes))
        data = (pixels, labels)
        return _multilabel_probes(facts, model, data, thresholds, dev, passes, log, started)
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
    """A stratified subset of the run's training images, decoded through medfit's cache
    (multi-label: labels (N, L) 0/1, stratified by each image's rarest label)."""
    index_of = {c: i for i, c in enumerate(facts.classes)}
    if facts.multilabel:
        samples = _multilabel_samples(facts)
    else:
        samples = [Sample(p, index_of[c], "train") for p, c in facts.train_paths if c in index_of]
    index = DatasetIndex(
        facts.config.data.root, list(facts.classes), samples, multilabel=facts.multilabel
    )
    data_cfg = dataclasses.replace(facts.config.data, max_train=PROBE_IMAGES, strict=False)
    p = facts.preprocess
    part = cache_splits(
        index, data_cfg, p.cache_size, p.interpolation, PROBE_SEED, log, splits=("train",)
    )
    if "train" not in part:
        raise MedfitError(f"{facts.path}: none of the training images could be decoded")
    return np.asarray(part["train"].pixels), np.asarray(part["train"].labels)


def _multilabel_samples(facts: RunFacts) -> list[Sample]:
    """split.csv's training rows as multi-label samples; the stratification key is the rarest
    positive label (train positives), or len(classes) for an image with no finding, as when
    the manifest was indexed (data/manifest.py)."""
    classes = list(facts.classes)
    rarity = {c: (facts.train_counts.get(c, 0), c) for c in classes}
    samples = []
    for path, cell in facts.train_paths:
        vector = label_vector(cell, classes)
        if vector is None:
            continue
        on = [i for i, v in enumerate(vector) if v]
        key = min(on, key=lambda i: rarity[classes[i]]) if on else len(classes)
        samples.append(Sample(path, key, "train", targets=tuple(vector)))
    return samples


@torch.no_grad()
def _logits(
    model: nn.Module,
    pixels: np.ndarray,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
) -> np.ndarray:
    """(N, K) float logits in batches of `batch_size`."""
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size]))
        out.append(model(to_input(batch)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def multilabel_score(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(macro ROC-AUC, its Hanley-McNeil SE) of sigmoid outputs `probs` (N, L) against 0/1
    `labels`, over the labels with PROBE_MIN_POSITIVES positives and negatives; NaNs when none
    has."""
    labels = np.asarray(labels).astype(np.int64)
    keep = measurable(labels, PROBE_MIN_POSITIVES)
    auc = macro_auc(labels, probs, PROBE_MIN_POSITIVES)
    positives = labels[:, keep].sum(0).tolist()
    return auc, macro_auc_sigma(auc, positives, len(labels))


def _multilabel_probes(
    facts: RunFacts,
    model: nn.Module,
    data: tuple[np.ndarray, np.ndarray],
    thresholds: np.ndarray,
    dev: torch.device,
    passes: int,
    log: Log,
    started: float,
) -> ProbeResults:
    """The three probes for sigmoid outputs, scored by macro AUC."""
    pixels, labels = data
    pre, batch = facts.preprocess, facts.config.train.batch_size
    clean = pre.input_fn(dev)
    fit = multilabel_fit_probe(labels, sigmoid(_logits(model, pixels, clean, batch)), thresholds)
    log(f"  probes: 1/{passes} done in {duration(time.perf_counter() - started)}")
    bn = _bn_probe_multilabel(facts, model, pixels, labels, clean, thresholds)
    log(f"  probes: 3/{passes} done in {duration(time.perf_counter() - started)}")
    aug = None
    if passes == 4:
        augment = pre.input_fn(dev, build_train_augment(facts.config.data.aug, pre.img_size))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PROBE_SEED)
            model.eval()
            probs = sigmoid(_logits(model, pixels, augment, batch))
        auc_aug, sigma_aug = multilabel_score(labels, probs)
        sigma = _larger(fit.sigma, sigma_aug)
        aug = AugProbe(len(labels), facts.config.data.aug, fit.acc_clean, auc_aug, MACRO_AUC, sigma)
    return ProbeResults(bn, aug, time.perf_counter() - started, fit=fit)


def _larger(*sigmas: float | None) -> float | None:
    """The larger of the finite SEs (the noisier of two measurements), or None."""
    finite = [float(s) for s in sigmas if s is not None and np.isfinite(s)]
    return max(finite) if finite else None


def multilabel_fit_probe(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> FitProbe:
    """The kept weights on un-augmented training images: macro AUC and, per label, positives,
    calls at the run's thresholds and positives called."""
    labels = np.asarray(labels).astype(bool)
    called = probs >= thresholds
    auc, sigma = multilabel_score(labels, probs)
    return FitProbe(
        images=len(labels),
        acc_clean=auc,
        support=labels.sum(0).tolist(),
        predicted=called.sum(0).tolist(),
        correct=(called & labels).sum(0).tolist(),
        metric=MACRO_AUC,
        sigma=sigma,
    )


def _bn_probe_multilabel(
    facts: RunFacts,
    model: nn.Module,
    pixels: np.ndarray,
    labels: np.ndarray,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    thresholds: np.ndarray,
) -> BNProbe:
    """Eval-mode vs batch-statistics sigmoid outputs on whole batches, scored by macro AUC."""
    batch = facts.config.train.batch_size
    n = max(len(labels) // batch, 1) * batch  # whole batches only: a 1-image batch has no stats
    pixels, labels = pixels[:n], labels[:n]
    model.eval()
    eval_probs = sigmoid(_logits(model, pixels, to_input, batch))
    batch_stats = _batch_stats_copy(model)
    train_probs = sigmoid(_logits(batch_stats, pixels, to_input, batch))
    return bn_probe_from_outputs(facts, labels, eval_probs, train_probs, thresholds)


def bn_probe_from_outputs(
    facts: RunFacts,
    labels: np.ndarray,
    eval_probs: np.ndarray,
    train_probs: np.ndarray,
    thresholds: np.ndarray,
) -> BNProbe:
    """The multi-label BatchNorm record from both modes' sigmoid outputs on the same images."""
    auc_eval, sigma_eval = multilabel_score(labels, eval_probs)
    auc_train, sigma_train = multilabel_score(labels, train_probs)
    return BNProbe(
        images=len(labels),
        batch_size=facts.config.train.batch_size,
        policy=facts.config.train.bn,
        acc_eval=auc_eval,
        acc_batch_stats=auc_train,
        agreement=float(np.mean((eval_probs >= thresholds) == (train_probs >= thresholds))),
        metric=MACRO_AUC,
        sigma=_larger(sigma_eval, sigma_train),
        mean_abs_dp=float(np.mean(np.abs(eval_probs - train_probs))),
    )


def _batch_stats_copy(model: nn.Module) -> nn.Module:
    """A copy with BatchNorm in train mode (train-mode BN updates its running statistics: never
    the original)."""
    batch_stats = copy.deepcopy(model)
    for module in batch_stats.modules():
        if isinstance(module, BN_TYPES):
            module.train()
    return batch_stats


@torch.no_grad()
def _predict(
    model: nn.Module,
    pixels: np.ndarray,
    to_input: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
) -> np.ndarray:
    logits = _logits(model, pixels, to_input, batch_size)
    return logits.argmax(1) if len(logits) else np.zeros(0, dtype=np.int64)


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
    train_preds = _predict(_batch_stats_copy(model), pixels, to_input, batch)
    return BNProbe(
        images=len(labels),
        batch_size=batch,
        policy=facts.config.train.bn,
        acc_eval=float(np.mean(eval_preds == labels)),
        acc_batch_stats=float(np.mean(train_preds == labels)),
        agreement=float(np.mean(eval_preds == train_preds)),
    )
