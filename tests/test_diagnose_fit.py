"""`medfit diagnose` fit rules: underfitting (probe-measured or from the history), classes never
predicted (eval's predictions CSV or the probe), and low_resolution weighing the images' own size.

The planted case is the user's: 5 fundus grades, 1,080 train images (28 px originals) at 64 px,
class-weighted loss, the microscopy preset, train accuracy 0.41 with val 0.40 after 8 full epochs,
grades 2 and 3 never predicted."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medfit.diagnose import diagnose_run
from medfit.diagnose.findings import Finding
from medfit.diagnose.own import fit_rules as F
from medfit.diagnose.own import history_rules as R
from medfit.diagnose.own.facts import ClassPredictions, RunFacts, _check_size, _header_size
from medfit.diagnose.own.probes import AugProbe, BNProbe, FitProbe, ProbeResults
from medfit.diagnose.own.run import all_findings
from medfit.rundir import EpochRow
from tests.deploy_helpers import copy_run
from tests.test_diagnose import clean_history, epoch, facts

GRADES = ["grade0", "grade1", "grade2", "grade3", "grade4"]
# RetinaMNIST-like counts: grade0 is 45% of train (the majority-class rate).
TRAIN_COUNTS = dict(zip(GRADES, [486, 128, 206, 194, 66], strict=True))
VAL_COUNTS = dict(zip(GRADES, [54, 14, 23, 21, 8], strict=True))


def underfit_history(train_acc: float = 0.38, val_acc: float = 0.40) -> list[EpochRow]:
    """1 head + 8 full epochs with the loss stuck near ln 5 = 1.609."""
    rows = [epoch(1, "head", train_loss=1.60, train_acc=0.30, val_loss=1.58, val_acc=0.35)]
    for i in range(2, 10):
        rows.append(
            epoch(
                i,
                train_loss=1.56 - 0.002 * i,
                train_acc=train_acc,
                val_loss=1.55,
                val_acc=val_acc,
                val_balanced_accuracy=0.36,
            )
        )
    return rows


def fundus_facts(**kw: Any) -> RunFacts:
    cfg = {"train.balance": "loss", "data.aug": "microscopy", **kw.pop("cfg", {})}
    base: dict[str, Any] = {
        "history": underfit_history(),
        "classes": GRADES,
        "train_counts": TRAIN_COUNTS,
        "val_counts": VAL_COUNTS,
        "native_size": 224,
        "source_size": 28,
        "best_epoch": 9,
        "check": None,
    }
    base.update(kw)
    return facts(base.pop("history"), cfg=cfg, **base)


def fit_probe(acc: float, predicted: list[int] | None = None, images: int = 256) -> FitProbe:
    support = [115, 30, 49, 46, 16]
    return FitProbe(images, acc, support, predicted or [150, 40, 0, 0, 66], [0] * 5)


def probes(acc_clean: float = 0.41, acc_aug: float = 0.40, **kw: Any) -> ProbeResults:
    fit = kw.pop("fit", fit_probe(acc_clean))
    return ProbeResults(None, AugProbe(256, "microscopy", acc_clean, acc_aug), 1.0, fit=fit)


# --- underfitting ------------------------------------------------------------------------------


def test_underfitting_fires_on_the_probe_measured_fit_with_causes_ranked() -> None:
    f = F.underfitting(fundus_facts(), probes())
    assert f is not None and f.rule == "underfitting" and f.severity == "high"
    assert set(f.numbers["signs"]) == {"no_gap", "chance_accuracy", "chance_loss"}
    assert f.numbers["train_acc_source"] == "probe" and f.numbers["train_acc"] == 0.41
    assert f.numbers["majority_rate"] == pytest.approx(486 / 1080)
    assert "0.410 on 256 un-augmented training images" in f.evidence
    assert "val accuracy 0.400 at epoch 9" in f.evidence and "0.450" in f.evidence
    assert "8 full epochs" in f.evidence and "ln 5" in f.evidence
    # Train accuracy below the majority rate is the weighted loss's signature: it comes first.
    assert f.numbers["causes"] == ["balancing", "strong_augmentation"]
    assert f.fix.index("`--balance none`") < f.fix.index("`--aug light`")


def test_underfitting_ranks_augmentation_first_when_the_probe_shows_it_removes_signal() -> None:
    f = F.underfitting(fundus_facts(), probes(acc_clean=0.41, acc_aug=0.25))
    assert f is not None and f.numbers["causes"] == ["strong_augmentation", "balancing"]
    assert "score 0.160 lower" in f.fix
    # Balanced classes: no class weights to blame.
    even = {g: 216 for g in GRADES}
    f = F.underfitting(fundus_facts(train_counts=even), probes())
    assert f is not None and f.numbers["causes"] == ["strong_augmentation"]


def test_underfitting_is_silent_on_a_healthy_fit() -> None:
    healthy = ProbeResults(None, None, 1.0, fit=fit_probe(0.85))
    h = clean_history()
    wide = [*h[:-1], epoch(5, train_loss=0.3, train_acc=0.9, val_acc=0.70, val_loss=0.8)]
    assert F.underfitting(facts(wide, best_epoch=5), healthy) is None  # 0.85 vs 0.70: a gap
    assert F.fit_findings(facts()) == []  # the clean history, no probes
    # Past 90% on its own training images the model has fit them, gap or not.
    fitted = ProbeResults(None, None, 1.0, fit=fit_probe(0.95))
    same = [*h[:-1], epoch(5, train_acc=0.9, val_acc=0.95, val_balanced_accuracy=0.95)]
    assert F.underfitting(facts(same, best_epoch=5), fitted) is None


def test_underfitting_without_a_gap_is_medium() -> None:
    h = clean_history()
    # 0.85 clean vs 0.86 val: no gap at all, far above the 0.25 majority rate, loss low.
    f = F.underfitting(facts(h, best_epoch=5), ProbeResults(None, None, 1.0, fit=fit_probe(0.85)))
    assert f is not None and f.severity == "medium" and f.numbers["signs"] == ["no_gap"]
    assert f.numbers["gap_needed"] == pytest.approx(
        2 * ((0.85 * 0.15 / 256) + (0.86 * 0.14 / 400)) ** 0.5
    )


def test_underfitting_falls_back_to_the_history_and_says_so() -> None:
    f = F.underfitting(fundus_facts())  # no probes
    assert f is not None and f.severity == "high" and f.numbers["train_acc_source"] == "history"
    assert f.numbers["train_acc"] == 0.38 and "understates the fit" in f.evidence
    # From the history, augmented train accuracy a little under val is no finding on its own
    # unless it is not above val at all.
    below = [*clean_history()[:-1], epoch(5, train_loss=0.5, train_acc=0.60, val_acc=0.62)]
    f = F.underfitting(facts(below))
    assert f is not None and f.numbers["signs"] == ["no_gap"] and f.severity == "medium"
    above = [*clean_history()[:-1], epoch(5, train_loss=0.5, train_acc=0.64, val_acc=0.62)]
    assert F.underfitting(facts(above)) is None  # a 2-point gap on augmented batches is a gap


def knee_history(last_losses: tuple[float, float, float]) -> list[EpochRow]:
    """Knee grades at 128 px (bench/results/knee.json): 1 head + 6 full epochs, the val metric
    best at the last epoch, the train loss still falling at 0.7 ln 5."""
    rows = [epoch(1, "head", train_loss=1.50, train_acc=0.36, val_loss=1.38, val_acc=0.37)]
    losses = (1.39, 1.29, 1.23, *last_losses)
    vals = (0.46, 0.57, 0.60, 0.61, 0.61, 0.60)
    for i, (loss, val) in enumerate(zip(losses, vals, strict=True), 2):
        rows.append(epoch(i, train_loss=loss, train_acc=0.6, val_loss=1.0, val_acc=val))
    return rows


def knee_facts(last_losses: tuple[float, float, float], best_epoch: int = 7) -> RunFacts:
    val = dict(zip(GRADES, [327, 153, 212, 106, 28], strict=True))  # knee's 826 val images
    return fundus_facts(history=knee_history(last_losses), best_epoch=best_epoch, val_counts=val)


def test_a_run_still_learning_when_it_stopped_is_told_longer_or_larger() -> None:
    knee = probes(fit=fit_probe(0.695))
    f = F.underfitting(knee_facts((1.19, 1.155, 1.132)), knee)
    assert f is not None and f.numbers["signs"] == ["still_learning"] and f.severity == "medium"
    assert "still learning when training stopped" in f.title
    assert f.fix.startswith("`--epochs 12` (best epoch 7 was the last")
    assert "`--model tf_efficientnet_lite1`" in f.fix
    # The same curve levelled off (loss flat), or its best epoch earlier: no finding.
    assert F.underfitting(knee_facts((1.14, 1.135, 1.132)), knee) is None
    assert F.underfitting(knee_facts((1.19, 1.155, 1.132), best_epoch=6), knee) is None


def test_underfitting_needs_three_full_epochs() -> None:
    short = underfit_history()[:3]  # head + 2 full
    assert F.underfitting(fundus_facts(history=short), probes()) is None


def test_underfitting_causes_from_the_config() -> None:
    h = [epoch(1, "head")] + [
        epoch(i, train_loss=1.3, train_acc=0.3, val_acc=0.3) for i in (2, 3, 4)
    ]
    cfg = {
        "train.bn": "frozen",
        "train.lr": 3e-4,
        "train.label_smoothing": 0.3,
        "model.drop_rate": 0.5,
        "data.aug": "light",
    }
    f = F.underfitting(facts(h, cfg=cfg))
    assert f is not None
    assert f.numbers["causes"] == ["bn_frozen", "few_epochs", "label_smoothing", "dropout"]
    assert f.fix.startswith("`--bn train --lr 0.003`") and "`--epochs 10`" in f.fix
    low = F.underfitting(facts(h, cfg={"train.lr": 5e-4, "data.aug": "light"}))
    assert low is not None and low.numbers["causes"] == ["lr_low", "few_epochs"]
    assert "`--lr 0.003`" in low.fix
    small = F.underfitting(facts(h, cfg={"train.batch_size": 4, "data.aug": "light"}))
    assert small is not None and small.numbers["causes"] == ["bn_small_batch", "few_epochs"]
    assert small.fix.startswith("`--bn frozen --lr 0.0003`")
    # 1e-3 is not "below 1e-3"; 1e-2 is 3x above the default.
    edge = F.underfitting(facts(h, cfg={"train.lr": 1e-3, "data.aug": "light"}))
    assert edge is not None and edge.numbers["causes"] == ["few_epochs"]
    high = F.underfitting(facts(h, cfg={"train.lr": 1e-2, "data.aug": "light"}))
    assert high is not None and high.numbers["causes"][0] == "lr_high"


# --- classes never predicted -------------------------------------------------------------------


def predictions(predicted: dict[str, int], support: dict[str, int]) -> ClassPredictions:
    """Pairs where each class's first images are predicted as itself, the rest as grade0."""
    pairs, left = [], dict(predicted)
    for label, n in support.items():
        for _ in range(n):
            guess = label if left.get(label, 0) > 0 else "grade0"
            left[label] = left.get(label, 0) - 1
            pairs.append((label, guess))
    return ClassPredictions.from_pairs("predictions_test.csv (medfit eval)", GRADES, pairs)


TEST_SUPPORT = dict(zip(GRADES, [174, 46, 92, 68, 20], strict=True))


def test_classes_never_predicted_fires_on_two_missing_classes() -> None:
    preds = predictions({"grade1": 10, "grade4": 8}, TEST_SUPPORT)
    assert preds.predicted[2] == preds.predicted[3] == 0
    f = F.classes_never_predicted(fundus_facts(predictions=preds))
    assert f is not None and f.severity == "high" and f.numbers["classes"] == ["grade2", "grade3"]
    assert f.title == "the model never predicts grade2, grade3"
    assert f.numbers["support"] == {"grade2": 92, "grade3": 68}
    assert f.numbers["recall"] == {"grade2": 0.0, "grade3": 0.0}
    assert "grade2: 92 images (23%), predicted 0 times, recall 0.00" in f.evidence
    assert f.evidence.startswith("predictions_test.csv (medfit eval), 400 images")
    assert "ordinal grades" in f.fix and "no more resolution: the images are 28 px" in f.fix


def test_classes_never_predicted_is_silent_when_every_class_is_predicted() -> None:
    preds = predictions({g: n // 2 for g, n in TEST_SUPPORT.items()}, TEST_SUPPORT)
    assert F.classes_never_predicted(fundus_facts(predictions=preds)) is None
    # A class under 5% of the images is too small to judge, predicted or not.
    tiny = {**TEST_SUPPORT, "grade4": 10}
    preds = predictions({"grade1": 10, "grade2": 20, "grade3": 20}, tiny)
    assert F.classes_never_predicted(fundus_facts(predictions=preds)) is None
    assert F.classes_never_predicted(fundus_facts()) is None  # no CSV, no probe: skipped


def test_classes_almost_never_predicted_is_medium() -> None:
    # grade3: 68 of 400 images, predicted 5 times (1.25% < 2%).
    preds = predictions({"grade1": 10, "grade2": 30, "grade3": 5, "grade4": 8}, TEST_SUPPORT)
    f = F.classes_never_predicted(fundus_facts(predictions=preds))
    assert f is not None and f.severity == "medium" and f.numbers["classes"] == ["grade3"]
    assert f.title == "the model almost never predicts grade3"


def test_classes_never_predicted_fix_follows_the_config() -> None:
    preds = predictions({"grade1": 10, "grade4": 8}, TEST_SUPPORT)
    unbalanced = fundus_facts(predictions=preds, cfg={"train.balance": "none"})
    f = F.classes_never_predicted(unbalanced)
    assert f is not None and f.fix.startswith("`--balance sqrt` or `--balance loss`")
    underfit = Finding("underfitting", "high", "t", "e", "`--balance none` (weighted loss)")
    f = F.classes_never_predicted(fundus_facts(predictions=preds), underfit=underfit)
    assert f is not None and f.fix.startswith("the model is underfit, so its fixes first")
    assert "`underfitting`): `--balance none`;" in f.fix
    # 100 px originals: more resolution is available, capped at nothing above the images.
    f = F.classes_never_predicted(fundus_facts(predictions=preds, source_size=100))
    assert f is not None and "`--img-size 100`" in f.fix
    # Unordered classes: no grade advice.
    names = ["a", "b", "c", "d", "e"]
    pairs = [(n, "a") for n in names for _ in range(20)]
    plain = ClassPredictions.from_pairs("x", names, pairs)
    f = F.classes_never_predicted(facts(predictions=plain, classes=names))
    assert f is not None and "ordinal" not in f.fix and "--epochs" in f.fix


def test_classes_never_predicted_uses_the_probe_when_eval_has_not_run() -> None:
    f = F.classes_never_predicted(fundus_facts(), probes())
    assert f is not None and f.numbers["source"] == "256 un-augmented training images (probe)"
    assert f.numbers["classes"] == ["grade2", "grade3"]
    # eval's predictions win over the probe's.
    everything = predictions({g: n // 2 for g, n in TEST_SUPPORT.items()}, TEST_SUPPORT)
    assert F.classes_never_predicted(fundus_facts(predictions=everything), probes()) is None


def test_the_users_run_ranks_underfitting_first_and_no_resolution_advice() -> None:
    run = fundus_facts(predictions=predictions({"grade1": 10, "grade4": 8}, TEST_SUPPORT))
    found = all_findings(run, probes())
    rules = [f.rule for f in found]
    assert rules[:2] == ["underfitting", "classes_never_predicted"]
    assert "low_resolution" not in rules and rules[-1] == "check_missing"
    assert "underfit" in found[1].fix


# --- resolution and the images' own size -------------------------------------------------------


def test_low_resolution_weighs_the_images_own_size() -> None:
    assert R.low_resolution(facts(native_size=224, source_size=28)) is None  # 28 px upsampled
    assert R.low_resolution(facts(native_size=224, source_size=64)) is None
    assert R.low_resolution(facts(native_size=224, source_size=72)) is None  # 12% more: no gain
    f = R.low_resolution(facts(native_size=224, source_size=100))
    assert f is not None and "`--img-size 100`" in f.fix and "100 px" in f.evidence
    assert f.numbers["source_size"] == 100 and f.numbers["suggested_size"] == 100
    big = R.low_resolution(facts(native_size=224, source_size=512))
    assert big is not None and "`--img-size 128`" in big.fix and "512 px" in big.evidence
    unknown = R.low_resolution(facts(native_size=224))
    assert unknown is not None and "unknown" in unknown.evidence


def test_image_size_from_headers_and_check_json(tmp_path: Path) -> None:
    paths = []
    for i, (w, h) in enumerate([(100, 60), (90, 100), (100, 100), (300, 200)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (w, h)).save(path)
        paths.append(str(path))
    (tmp_path / "x.dcm").write_bytes(b"not an image")
    assert _header_size([*paths, str(tmp_path / "x.dcm"), str(tmp_path / "gone.png")]) == 100
    assert _header_size([str(tmp_path / "gone.png")]) is None
    sizes = {"width": {"median": 28.0}, "height": {"median": 30.0}}
    assert _check_size({"inventory": {"sizes": sizes}}) == 30
    assert _check_size({"verdict": []}) is None and _check_size(None) is None


# --- probe record ------------------------------------------------------------------------------


def test_probe_record_round_trip_and_older_records() -> None:
    result = ProbeResults(BNProbe(256, 32, "train", 0.6, 0.6, 0.9), None, 1.0, fit=fit_probe(0.5))
    back = ProbeResults.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result and back.clean_accuracy() == (0.5, 256)
    old = result.to_dict()
    del old["fit"]  # written before the fit probe existed
    assert ProbeResults.from_dict(old).clean_accuracy() == (0.6, 256)  # BN eval-mode accuracy


# --- end to end on the session's tiny run ------------------------------------------------------


@pytest.fixture
def run_copy(run: Path, tmp_path: Path) -> Path:
    return copy_run(run, tmp_path / "run")


def test_diagnose_reads_evals_predictions_csv(run_copy: Path) -> None:
    classes = json.loads((run_copy / "classes.json").read_text())
    with (run_copy / "predictions_test.csv").open("w", newline="") as f:
        writer = csv.writer(f)  # the columns medfit eval writes (evaluate/runner.py)
        writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in classes]])
        for i in range(10):
            writer.writerow([f"img{i}.png", classes[i % 2], classes[0], "0.9", "0.1"])
    diagnosis = diagnose_run(run_copy, probes=False, log=lambda _: None)
    found = {f.rule: f for f in diagnosis.findings}
    missed = found["classes_never_predicted"]
    assert missed.numbers["classes"] == [classes[1]]
    assert missed.numbers["source"] == "predictions_test.csv (medfit eval)"


def test_a_far_too_low_lr_outranks_the_balancing_cause() -> None:
    """3 epochs at 1e-5 with a weighted loss: the LR, 300x under the default, is the cause."""
    from medfit.diagnose.own.fit_rules import _lr_cause

    near = _lr_cause(fundus_facts(cfg={"train.lr": 9e-4}))
    far = _lr_cause(fundus_facts(cfg={"train.lr": 1e-5}))
    assert near is not None and far is not None
    assert far.weight > near.weight >= 2.0
    assert far.weight > 3.0  # the balancing cause's most (1.5 + 1.5 below the majority rate)
