"""`medfit diagnose` on multi-label runs (sigmoid outputs, `data.task: multilabel`): the rules read
the val macro ROC-AUC and the losses, never the label-wise accuracies of the history; AUC changes
are weighed against the AUC's own (Hanley-McNeil) noise; the probes score sigmoid outputs by macro
AUC; rules with no multi-label meaning are skipped with a reason kept in diagnosis.json.

No training: synthetic histories, a synthetic run directory, and a 1-channel BatchNorm network
whose running statistics are planted."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medfit.config import RunConfig
from medfit.diagnose import diagnose_run
from medfit.diagnose.own import fit_rules as F
from medfit.diagnose.own import history_rules as R
from medfit.diagnose.own import probe_rules as P
from medfit.diagnose.own import probes as PR
from medfit.diagnose.own.facts import RunFacts, positives_per_label, read_run_facts
from medfit.diagnose.own.multilabel import (
    NOT_APPLICABLE,
    auc_se,
    macro_auc_sigma,
    rare_val_labels,
    val_auc_sigma,
)
from medfit.diagnose.own.probes import AugProbe, BNProbe, FitProbe, ProbeResults
from medfit.rundir import EpochRow, RunDir, SplitRow, Summary
from tests.test_diagnose import epoch, facts

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass"]
# 400 val images, every label with 30+ positives: the macro AUC's SE at 0.8 is about 0.017.
VAL_POSITIVES = dict(zip(LABELS, [40, 30, 50, 60, 35], strict=True))
TRAIN_POSITIVES = dict(zip(LABELS, [120, 90, 150, 180, 105], strict=True))
N_VAL = 400


def ml_epoch(i: int, auc: float, train_loss: float, val_loss: float, **kw: Any) -> EpochRow:
    """An epoch row as a multi-label run writes it: label-wise accuracies near 0.92 (sparse labels
    at p = 0.5), balanced accuracy and macro F1 per label, and the val macro AUC."""
    values: dict[str, Any] = {
        "train_acc": 0.93,
        "val_acc": 0.92,
        "val_balanced_accuracy": 0.90,
        "val_macro_f1": 0.2,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_macro_auc": auc,
        **kw,
    }
    return epoch(i, str(values.pop("stage", "full")), **values)


def ml_history(aucs: list[float], train: list[float], val: list[float]) -> list[EpochRow]:
    """One head epoch, then one full epoch per value."""
    rows = [ml_epoch(1, 0.62, 0.70, 0.60, stage="head")]
    for i, (a, t, v) in enumerate(zip(aucs, train, val, strict=True)):
        rows.append(ml_epoch(i + 2, a, t, v))
    return rows


def ml_facts(history: list[EpochRow], **kw: Any) -> RunFacts:
    cfg = {
        "data.task": "multilabel",
        "train.loss": "bce",
        "train.select_metric": "macro_auc",
        "train.balance": "sqrt",
        "data.aug": "xray",
        **kw.pop("cfg", {}),
    }
    base: dict[str, Any] = {
        "classes": LABELS,
        "train_counts": TRAIN_POSITIVES,
        "val_counts": VAL_POSITIVES,
        "multilabel": True,
        "val_images": N_VAL,
        "best_epoch": history[-1].epoch,
        "grayscale": True,
    }
    base.update(kw)
    return facts(history, cfg=cfg, **base)


# --- noise of an AUC ---------------------------------------------------------------------------


def test_hanley_mcneil_se_is_the_spread_of_simulated_aucs_or_a_little_more() -> None:
    """Binormal scores with AUC 0.8 on 20 positives and 180 negatives: the SE the rules use is
    the standard deviation of the AUC over repeated draws, or up to 30% more (Hanley-McNeil's
    exponential model is conservative for binormal scores, which only makes the rules quieter)."""
    rng = np.random.default_rng(0)
    shift = math.sqrt(2) * 0.8416  # Phi(shift / sqrt 2) = 0.8
    scores = np.concatenate([rng.normal(shift, 1, (2000, 20)), rng.normal(0, 1, (2000, 180))], 1)
    ranks = scores.argsort(1).argsort(1) + 1  # no ties in continuous draws
    aucs = (ranks[:, :20].sum(1) - 20 * 21 / 2) / (20 * 180)  # Mann-Whitney U / (n1 n2)
    assert float(np.mean(aucs)) == pytest.approx(0.8, abs=0.01)
    se = auc_se(0.8, 20, 180)
    assert 1.0 <= se / float(np.std(aucs)) <= 1.3
    assert auc_se(0.8, 5, 195) > 2 * auc_se(0.8, 50, 150)  # rare labels are the noisy ones
    assert math.isnan(auc_se(0.8, 0, 200))  # no positive: no AUC
    # A macro mean over L labels: sqrt(sum SE^2) / L, over the labels with both classes.
    both = macro_auc_sigma(0.8, [20, 20, 0], 200)
    assert both == pytest.approx(math.sqrt(2) * auc_se(0.8, 20, 180) / 2)


# --- facts -------------------------------------------------------------------------------------


def test_positives_per_label_read_split_cells() -> None:
    cells = ["Atelectasis|Mass", "(none)", "Mass", "Unknown|Mass"]
    counts = positives_per_label(cells, LABELS)
    assert counts == {"Atelectasis": 1, "Cardiomegaly": 0, "Effusion": 0, "Infiltration": 0,
                      "Mass": 2}  # fmt: skip


def test_the_val_curve_is_the_macro_auc() -> None:
    f = ml_facts(ml_history([0.7, 0.8, 0.82], [0.5, 0.4, 0.35], [0.4, 0.35, 0.34]))
    assert [f.val_score(e) for e in f.full] == [0.7, 0.8, 0.82]
    assert f.n_val == N_VAL  # images, not the sum of positives
    assert f.val_metric == "val macro AUC"
    single = facts()
    assert single.val_score(single.history[-1]) == single.history[-1].val_acc


# --- history rules -----------------------------------------------------------------------------


def test_labelwise_accuracies_do_not_trigger_single_label_rules() -> None:
    """Val label-wise accuracy that swings and peaks early, far above the balanced accuracy: as a
    single-label run that is val_instability, an LR decline and class imbalance; on a multi-label
    run whose macro AUC climbs steadily, it is nothing."""
    accs = [0.93, 0.60, 0.92, 0.55, 0.58]
    rows = [ml_epoch(1, 0.62, 0.70, 0.60, stage="head")]
    for i, (acc, auc) in enumerate(zip(accs, [0.70, 0.72, 0.74, 0.75, 0.76], strict=True)):
        rows.append(
            ml_epoch(i + 2, auc, 0.5, 0.40 - 0.01 * i, val_acc=acc, val_balanced_accuracy=0.30)
        )
    ml = ml_facts(rows, check={"verdict": []})
    assert R.run_rules(ml) == []
    single = replace(ml, multilabel=False, val_images=None, config=RunConfig())
    fired = {f.rule for f in R.run_rules(single)}
    assert {"val_instability", "lr_too_high", "class_imbalance"} <= fired


def test_overfitting_reads_val_bce_and_a_falling_val_auc() -> None:
    h = ml_history([0.74, 0.80, 0.78, 0.74], [0.45, 0.38, 0.30, 0.22], [0.40, 0.36, 0.42, 0.50])
    f = R.overfitting(ml_facts(h))
    assert f is not None and f.severity == "high"
    assert f.numbers["peak_val_macro_auc"] == 0.80 and f.numbers["auc_fall"] == pytest.approx(0.06)
    assert f.numbers["auc_sigma"] == pytest.approx(val_auc_sigma(ml_facts(h), 0.80))
    assert "`--epochs 2`: val macro AUC was highest after full epoch 2" in f.fix
    assert "macro AUC" in f.evidence and "accuracy" not in f.evidence


def test_rising_val_bce_with_a_holding_auc_is_not_overfitting() -> None:
    """Val BCE up 39% while the macro AUC holds (over-confidence) and the label-wise accuracy gap
    grows: the single-label rule would call it overfitting; AUC selection does not mind it."""
    h = ml_history([0.74, 0.80, 0.80, 0.805], [0.45, 0.38, 0.30, 0.22], [0.40, 0.36, 0.42, 0.50])
    h = [*h[:-2], replace(h[-2], train_acc=0.97), replace(h[-1], train_acc=0.99)]
    assert R.overfitting(ml_facts(h)) is None
    assert R.overfitting(replace(ml_facts(h), multilabel=False)) is not None
    # A fall inside the noise: 0.80 -> 0.79 is under 2 SE (~0.034) of a 400-image val set.
    small = ml_history([0.74, 0.80, 0.79, 0.79], [0.45, 0.38, 0.30, 0.22], [0.4, 0.36, 0.42, 0.5])
    assert R.overfitting(ml_facts(small)) is None


def test_val_auc_swings_are_weighed_against_the_auc_noise() -> None:
    h = ml_history([0.70, 0.80, 0.66, 0.81, 0.67], [0.5] * 5, [0.4] * 5)
    ml = ml_facts(h)
    f = R.val_instability(ml)
    assert f is not None and f.severity == "high"
    assert f.title.startswith("validation macro AUC")
    assert f.numbers["auc_sigma"] == pytest.approx(val_auc_sigma(ml, 0.67))
    assert f.numbers["auc_sigma"] != pytest.approx(R.binomial_sigma(0.67, N_VAL), rel=0.05)
    # The same swings on a val set with 3 positives per label are noise.
    tiny = ml_facts(h, val_counts=dict.fromkeys(LABELS, 3), val_images=40)
    assert R.val_instability(tiny) is None
    # Steady improvement is not instability.
    steady = ml_history([0.60, 0.70, 0.76, 0.79], [0.5] * 4, [0.4] * 4)
    assert R.val_instability(ml_facts(steady)) is None


def test_lr_rules_read_auc_not_labelwise_accuracy() -> None:
    # LR 10x the default and a val macro AUC at chance: "chance", though train BCE is low.
    chance = ml_history([0.52, 0.50, 0.51], [0.30, 0.29, 0.29], [0.4] * 3)
    f = R.lr_too_high(ml_facts(chance, cfg={"train.lr": 3e-2}))
    assert f is not None and "chance" in f.numbers["signs"] and "macro AUC" in f.evidence
    assert R.lr_too_high(ml_facts(chance)) is None  # at the default LR it is not the LR's doing
    # LR below the default, flat BCE, macro AUC 0.70: too low, though label-wise train acc 0.93
    # (which the single-label rule takes for a converged run).
    flat = ml_history([0.69, 0.70, 0.70], [0.50, 0.495, 0.49], [0.45] * 3)
    low = R.lr_too_low(ml_facts(flat, cfg={"train.lr": 1e-4}))
    assert low is not None and low.numbers["macro_auc"] == 0.70
    assert R.lr_too_low(replace(ml_facts(flat, cfg={"train.lr": 1e-4}), multilabel=False)) is None
    converged = ml_history([0.92, 0.93, 0.93], [0.20, 0.199, 0.198], [0.25] * 3)
    assert R.lr_too_low(ml_facts(converged, cfg={"train.lr": 1e-4})) is None
    # eval_train.json's macro AUC, when present, is the train-side score it weighs.
    evals = {"train": {"macro_auc": 0.95}}
    assert R.lr_too_low(ml_facts(flat, cfg={"train.lr": 1e-4}, evals=evals)) is None


def test_low_resolution_weighs_the_best_val_auc() -> None:
    h = ml_history([0.70, 0.75, 0.78], [0.5, 0.45, 0.42], [0.4] * 3)
    f = R.low_resolution(ml_facts(h, native_size=224))
    assert f is not None and f.numbers["best_val_macro_auc"] == 0.78
    high = ml_history([0.95, 0.96, 0.97], [0.5, 0.45, 0.42], [0.4] * 3)  # bal. acc 0.90 < 0.95
    assert R.low_resolution(ml_facts(high, native_size=224)) is None


def test_rare_val_labels_finding_and_checks_duplicate_folded_in() -> None:
    counts = {**VAL_POSITIVES, "Cardiomegaly": 3, "Mass": 6, "Infiltration": 0}
    check = {
        "verdict": [{"key": "rare_labels", "severity": "warning", "title": "2 rare", "fix": ""}]
    }
    h = ml_history([0.70, 0.72, 0.73], [0.5, 0.45, 0.42], [0.4] * 3)
    ml = ml_facts(h, val_counts=counts, check=check)
    f = rare_val_labels(ml)
    assert f is not None and f.severity == "medium"
    assert f.numbers["rare"] == {"Cardiomegaly": 3, "Mass": 6}
    assert f.numbers["absent"] == ["Infiltration"]
    assert f.numbers["rare_noise_share"] > 0.5  # the two rare labels carry most of the noise
    assert f.numbers["auc_sigma_without_rare"] < f.numbers["auc_sigma"]
    assert "under twice that noise" in f.evidence  # 0.70-0.73 is under 2 SE
    rules = [(x.rule, x.numbers.get("check_key")) for x in R.run_rules(ml)]
    assert ("rare_val_labels", None) in rules and ("data", "rare_labels") not in rules
    assert "medfit check says the same" in f.evidence
    assert rare_val_labels(ml_facts(h)) is None  # every label 30+ positives
    assert rare_val_labels(facts()) is None  # single-label


def test_leakage_evidence_names_the_val_macro_auc() -> None:
    check = {
        "verdict": [{"key": "group_leak", "severity": "critical", "title": "leak", "fix": "x"}]
    }
    ml = ml_facts(ml_history([0.7, 0.75, 0.78], [0.5, 0.45, 0.42], [0.4] * 3), check=check)
    (leak,) = [f for f in R.run_rules(ml) if f.rule == "leakage"]
    assert "val macro AUC (0.780)" in leak.evidence


# --- fit rules ---------------------------------------------------------------------------------


def test_a_val_auc_still_climbing_at_the_end_is_underfitting_still_learning() -> None:
    h = ml_history([0.70, 0.74, 0.78, 0.82], [0.50, 0.45, 0.41, 0.37], [0.45, 0.42, 0.40, 0.38])
    f = F.underfitting(ml_facts(h))
    assert f is not None and f.numbers["signs"] == ["still_learning"]
    assert f.title.startswith("underfitting: still learning")
    assert "--epochs 8" in f.fix and "still_learning" in f.numbers["causes"]
    assert "balancing" not in f.numbers["causes"]  # BCE positive weights are not the culprit
    assert "label-wise" in f.evidence  # says why the history's train accuracy is not used
    # Best by a hair at the end (0.79 -> 0.80, under 1 SE): not a rising curve.
    hair = ml_history([0.70, 0.79, 0.795, 0.80], [0.50, 0.45, 0.41, 0.37], [0.45, 0.42, 0.4, 0.38])
    assert F.underfitting(ml_facts(hair)) is None
    # The kept epoch is not the last: training went on past the best.
    assert F.underfitting(ml_facts(h, best_epoch=3)) is None
    # Already at a 0.93 val macro AUC: fit, not underfit.
    good = ml_history([0.85, 0.89, 0.91, 0.93], [0.50, 0.45, 0.41, 0.37], [0.4] * 4)
    assert F.underfitting(ml_facts(good)) is None


def ml_probes(train_auc: float, sigma: float = 0.025) -> ProbeResults:
    fit = FitProbe(256, train_auc, [30] * 5, [40] * 5, [20] * 5, "macro_auc", sigma)
    return ProbeResults(None, None, 1.0, fit=fit)


def test_underfitting_on_the_probe_measured_train_auc() -> None:
    h = ml_history([0.70, 0.71, 0.71, 0.72], [0.50, 0.49, 0.49, 0.49], [0.45] * 4)
    ml = ml_facts(h)
    assert F.underfitting(ml) is None  # nothing says so from the history alone
    no_gap = F.underfitting(ml, ml_probes(0.73))
    assert no_gap is not None and no_gap.numbers["signs"] == ["no_gap"]
    assert no_gap.severity == "medium" and no_gap.numbers["train_macro_auc"] == 0.73
    chance = F.underfitting(ml, ml_probes(0.53))
    assert (
        chance is not None and chance.severity == "high" and "chance_auc" in chance.numbers["signs"]
    )
    assert F.underfitting(ml, ml_probes(0.86)) is None  # a clear gap: the model fits its images
    # A single-label probe record's accuracy is never taken for a macro AUC.
    assert ProbeResults(None, None, 1.0, fit=FitProbe(256, 0.5, [1], [1], [1])).clean_auc() is None
    assert ml_probes(0.7).clean_accuracy() is None


def test_classes_never_predicted_is_not_applied() -> None:
    h = ml_history([0.70, 0.71, 0.72], [0.5] * 3, [0.45] * 3)
    probe = FitProbe(256, 0.7, [30] * 5, [0, 0, 40, 40, 40], [0] * 5, "macro_auc", 0.02)
    assert F.classes_never_predicted(ml_facts(h), ProbeResults(None, None, 1.0, fit=probe)) is None
    assert "classes_never_predicted" in NOT_APPLICABLE and "class_imbalance" in NOT_APPLICABLE
    assert R.not_applicable(ml_facts(h)) == NOT_APPLICABLE and R.not_applicable(facts()) == {}


# --- probes ------------------------------------------------------------------------------------


def test_probe_rules_on_macro_auc() -> None:
    def bn(eval_auc: float, batch_auc: float, sigma: float) -> BNProbe:
        return BNProbe(256, 32, "train", eval_auc, batch_auc, 0.8, "macro_auc", sigma, 0.1)

    high = P.bn_mismatch(bn(0.55, 0.80, 0.02))
    assert high is not None and high.severity == "high" and "macro AUC 0.800" in high.evidence
    assert high.numbers["macro_auc_eval"] == 0.55 and "acc_eval" not in high.numbers
    medium = P.bn_mismatch(bn(0.72, 0.80, 0.02))  # 0.08 >= 0.05 and 3 SE
    assert medium is not None and medium.severity == "medium"
    assert P.bn_mismatch(bn(0.72, 0.80, 0.04)) is None  # 0.08 is under 3 SE of a noisy probe
    assert P.bn_mismatch(bn(0.76, 0.79, 0.005)) is None  # 0.03: under the AUC threshold
    # An accuracy record with the same numbers fires on accuracy's own (binomial) thresholds.
    assert P.bn_mismatch(BNProbe(256, 32, "train", 0.72, 0.80, 0.8)) is None

    aug = P.aug_destroys_signal(AugProbe(256, "xray", 0.80, 0.72, "macro_auc", 0.02))
    assert aug is not None and aug.severity == "high" and "macro AUC" in aug.evidence
    assert P.aug_destroys_signal(AugProbe(256, "xray", 0.80, 0.78, "macro_auc", 0.02)) is None


def test_multilabel_probe_record_round_trips_and_single_label_records_are_unchanged() -> None:
    fit = FitProbe(256, 0.7, [30] * 5, [40] * 5, [20] * 5, "macro_auc", 0.02)
    bn = BNProbe(256, 32, "train", 0.7, 0.72, 0.8, "macro_auc", 0.02, 0.05)
    result = ProbeResults(bn, AugProbe(256, "xray", 0.7, 0.68, "macro_auc", 0.02), 1.0, fit=fit)
    raw = json.loads(json.dumps(result.to_dict()))
    assert raw["bn"]["metric"] == "macro_auc" and raw["bn"]["mean_abs_dp"] == 0.05
    assert ProbeResults.from_dict(raw) == result
    single = ProbeResults(BNProbe(256, 32, "train", 0.6, 0.6, 0.9), None, 1.0).to_dict()
    assert set(single["bn"]) == {
        "images", "batch_size", "policy", "acc_eval", "acc_batch_stats", "agreement"
    }  # fmt: skip


def test_multilabel_probe_samples_carry_label_vectors() -> None:
    h = ml_history([0.70, 0.71, 0.72], [0.5] * 3, [0.45] * 3)
    paths = [("a.png", "Atelectasis|Mass"), ("b.png", "(none)"), ("c.png", "Nope")]
    samples = PR._multilabel_samples(ml_facts(h, train_paths=paths))
    assert [s.targets for s in samples] == [(1, 0, 0, 0, 1), (0, 0, 0, 0, 0)]
    # The stratification key is the rarest positive label (Cardiomegaly 90 < ... ; here Mass
    # 105 < Atelectasis 120), or len(classes) for no finding.
    assert [s.label for s in samples] == [LABELS.index("Mass"), len(LABELS)]


class Brightness(nn.Module):
    """Mean brightness -> BatchNorm -> one logit per label: label 0 is "bright", label 1 "dark"."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[4.0], [-4.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(x.mean(1, keepdim=True))
        return self.head(z.mean((2, 3)))


def _brightness_images(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    level = rng.integers(60, 200, n)
    pixels = np.broadcast_to(level[:, None, None, None], (n, 4, 4, 3)).astype(np.uint8)
    bright = level > 130
    # Labels follow brightness with 10% of them flipped, so the AUC is high but not perfect.
    flip = rng.random(n) < 0.1
    labels = np.stack([bright ^ flip, ~bright ^ flip], axis=1).astype(np.int64)
    return np.ascontiguousarray(pixels), labels


def _to_input(batch: torch.Tensor) -> torch.Tensor:
    return batch.permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("planted", [False, True])
def test_bn_probe_scores_sigmoid_outputs_by_macro_auc(planted: bool) -> None:
    """A network whose running statistics describe its data agrees with itself in both modes; one
    whose running mean is far off saturates every sigmoid in eval mode (macro AUC 0.5) while batch
    statistics still separate the labels: a high bn_mismatch, on macro AUC."""
    pixels, labels = _brightness_images()
    model = Brightness()
    x = _to_input(torch.from_numpy(pixels)).mean(1)
    with torch.no_grad():
        model.bn.running_mean.fill_(50.0 if planted else float(x.mean()))
        model.bn.running_var.fill_(float(x.var()))
    h = ml_history([0.7, 0.71, 0.72], [0.5] * 3, [0.45] * 3)
    ml = ml_facts(h, classes=["bright", "dark"], cfg={"train.batch_size": 32})
    probe = PR._bn_probe_multilabel(ml, model, pixels, labels, _to_input, np.array([0.5, 0.5]))
    assert probe.metric == "macro_auc" and probe.images == 128 and probe.sigma is not None
    assert probe.acc_batch_stats > 0.8  # batch statistics: brightness separates the labels
    finding = P.bn_mismatch(probe)
    if planted:
        assert probe.acc_eval == pytest.approx(0.5)  # every eval-mode output saturated: ties
        assert finding is not None and finding.severity == "high"
        assert probe.agreement < 0.75 and (probe.mean_abs_dp or 0) > 0.2
    else:
        assert probe.acc_eval == pytest.approx(probe.acc_batch_stats, abs=0.02)
        assert finding is None
    assert model.bn.running_mean.item() == pytest.approx(50.0 if planted else float(x.mean()))


def test_the_fit_probe_counts_calls_per_label_at_the_thresholds() -> None:
    labels = np.array([[1, 0], [1, 1], [0, 0], [0, 1]] * 5)
    probs = np.array([[0.9, 0.1], [0.8, 0.7], [0.85, 0.6], [0.1, 0.9]] * 5)
    fit = PR.multilabel_fit_probe(labels, probs, np.array([0.5, 0.55]))
    assert fit.support == [10, 10] and fit.predicted == [15, 15] and fit.correct == [10, 10]
    assert fit.acc_clean == pytest.approx(
        np.mean([roc_auc_score(labels[:, j], probs[:, j]) for j in range(2)])
    )
    assert fit.metric == "macro_auc" and fit.sigma is not None and fit.sigma > 0


# --- a multi-label run directory, end to end (history and config; no checkpoint) ---------------


def write_run(path: Path, history: list[EpochRow], val_cells: list[str]) -> Path:
    """A run directory as multi-label training leaves it (no checkpoint: --no-probes)."""
    run = RunDir(path)
    path.mkdir(parents=True)
    config = RunConfig()
    config.data.root, config.data.task, config.data.aug = "/data/labels.csv", "multilabel", "xray"
    config.model.weights = "none"
    config.train.loss, config.train.select_metric = "bce", "macro_auc"
    config.dump(run.config)
    run.write_history(history)
    pre = {"img_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}
    run.write_json(run.preprocess, {**pre, "interpolation": "bicubic", "crop_pct": 0.875})
    run.write_json(run.classes, LABELS)
    train = ["Atelectasis|Mass", "(none)", "Effusion", "Infiltration|Cardiomegaly"] * 50
    rows = [SplitRow(f"/data/t{i}.png", c, "train", "ok") for i, c in enumerate(train)]
    rows += [SplitRow(f"/data/v{i}.png", c, "val", "ok") for i, c in enumerate(val_cells)]
    run.write_split_rows(rows)
    final = {"val_acc": 0.92, "val_balanced_accuracy": 0.6, "val_macro_f1": 0.2}
    summary = Summary("tf_efficientnet_lite0", "none", LABELS, 200, len(val_cells), 0,
                      "macro_auc", history[-1].epoch, history[-1].val_macro_auc, len(history),
                      {**final, "val_macro_auc": history[-1].val_macro_auc}, 0.1, 10.0, "cpu",
                      12.0)  # fmt: skip
    run.write_json(run.summary, summary.to_dict())
    return path


def test_diagnose_a_multilabel_run_directory(tmp_path: Path) -> None:
    # 300 val images: every label 30+ positives but Mass (4) and Infiltration (none).
    val = ["Atelectasis|Effusion"] * 40 + ["Cardiomegaly"] * 30 + ["Effusion"] * 20
    val += ["Mass"] * 4 + ["(none)"] * 206
    # Label-wise accuracy far above balanced accuracy (class_imbalance as single-label) while
    # the val macro AUC is still climbing at the last epoch.
    history = ml_history(
        [0.70, 0.74, 0.78, 0.82], [0.50, 0.45, 0.41, 0.37], [0.45, 0.42, 0.40, 0.38]
    )
    history = [replace(e, val_balanced_accuracy=0.55) for e in history]
    run = write_run(tmp_path / "run", history, val)
    facts_ = read_run_facts(run)
    assert facts_.multilabel and facts_.n_val == 300
    assert facts_.val_counts == {"Atelectasis": 40, "Cardiomegaly": 30, "Effusion": 60,
                                 "Infiltration": 0, "Mass": 4}  # fmt: skip
    assert facts_.train_counts["Atelectasis"] == 50 and facts_.predictions is None
    lines: list[str] = []
    diagnosis = diagnose_run(run, probes=False, log=lines.append)
    saved = json.loads((run / "diagnosis.json").read_text())
    rules = [f["rule"] for f in saved["findings"]]
    assert "underfitting" in rules and "rare_val_labels" in rules
    assert "class_imbalance" not in rules
    assert saved["not_applicable"] == NOT_APPLICABLE
    assert rules == [f.rule for f in diagnosis.findings]
    assert any("not applied to this multi-label run" in line for line in lines)
    rare = next(f for f in saved["findings"] if f["rule"] == "rare_val_labels")
    assert rare["numbers"]["rare"] == {"Mass": 4} and rare["numbers"]["absent"] == ["Infiltration"]


def test_split_csv_cells_written_by_training_are_read_back(tmp_path: Path) -> None:
    """split.csv as RunDir writes it round-trips the "|"-joined cells diagnose counts."""
    run = RunDir(tmp_path)
    run.write_split_rows([SplitRow("/x.png", "Atelectasis|Mass", "val", "ok")])
    cells = [r["label"] for r in csv.DictReader(run.split.read_text().splitlines())]
    assert positives_per_label(cells, LABELS)["Mass"] == 1


def test_probes_on_an_untrained_multilabel_checkpoint(tmp_path: Path) -> None:
    """The real probe pipeline on a randomly initialised tiny timm network saved as a multi-label
    checkpoint (no training): sigmoid outputs scored by macro AUC against split.csv's label
    vectors, on every training image (not just those with exactly one label)."""
    import timm
    from PIL import Image

    from medfit.model.checkpoint import save_checkpoint

    (tmp_path / "img").mkdir()
    cells = ["Atelectasis|Mass", "(none)", "Effusion", "Infiltration|Cardiomegaly"] * 8
    cells += ["Atelectasis", "Mass|Effusion"] * 4
    rng = np.random.default_rng(0)
    paths = []
    for i in range(len(cells)):
        path = tmp_path / "img" / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
        paths.append(str(path))
    run = tmp_path / "run"
    history = ml_history([0.6, 0.62, 0.63], [0.5, 0.48, 0.47], [0.45] * 3)
    write_run(run, history, ["Atelectasis", "Mass", "(none)"] * 10)
    rows = [SplitRow(p, c, "train", "ok") for p, c in zip(paths, cells, strict=True)]
    rows += [SplitRow(f"/v{i}.png", "Mass", "val", "ok") for i in range(10)]
    RunDir(run).write_split_rows(rows)
    config = RunConfig.load(run / "config.yaml")
    config.model.name, config.data.cache_dir = "test_efficientnet", str(tmp_path / "cache")
    config.train.batch_size = 16
    config.dump(run / "config.yaml")
    pre = {"img_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic"}
    pre = {**pre, "crop_pct": 0.875}
    RunDir(run).write_json(run / "preprocess.json", pre)
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=len(LABELS))
    state = {"model": model.state_dict(), "model_name": "test_efficientnet", "classes": LABELS,
             "preprocess": pre, "config": config.to_dict(), "epoch": 4}  # fmt: skip
    (run / "checkpoints").mkdir()
    save_checkpoint(state, run / "checkpoints" / "best.pt")

    diagnose_run(run, log=lambda _: None, device="cpu")
    probes = json.loads((run / "diagnosis.json").read_text())["probes"]
    assert probes["skipped"] is None
    fit, bn, aug = probes["fit"], probes["bn"], probes["augmentation"]
    assert fit["metric"] == bn["metric"] == aug["metric"] == "macro_auc"
    assert fit["images"] == len(cells)  # the multi-label cells too, not only single labels
    positives = positives_per_label(cells, LABELS)
    assert fit["support"] == [positives[c] for c in LABELS]  # positives per label
    assert 0.0 <= fit["acc_clean"] <= 1.0 and fit["sigma"] > 0
    assert bn["images"] == 32 and bn["batch_size"] == 16 and 0 <= bn["agreement"] <= 1
    assert aug["preset"] == "xray" and aug["acc_clean"] == fit["acc_clean"]
