"""`medfit diagnose`: each rule fires on its planted pattern and stays silent on a clean history;
the probes and diagnose_run end to end on the session's tiny trained run."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from medfit.config import RunConfig
from medfit.diagnose import check_rules as C
from medfit.diagnose import diagnose_run
from medfit.diagnose.cli import DIAGNOSE_COMMANDS, add_diagnose_commands
from medfit.diagnose.findings import Diagnosis, Finding, rank
from medfit.diagnose.own import history_rules as R
from medfit.diagnose.own import probe_rules as P
from medfit.diagnose.own.facts import RunFacts
from medfit.diagnose.own.probes import AugProbe, BNProbe
from medfit.errors import MedfitError
from medfit.model.backbones import Preprocess
from medfit.rundir import EpochRow
from tests.deploy_helpers import copy_run

WEIGHTS_NORM = (0.5, 0.5, 0.5)


def epoch(i: int, stage: str = "full", **values: float) -> EpochRow:
    base: dict[str, Any] = {
        "train_loss": 0.6,
        "train_acc": 0.8,
        "val_loss": 0.5,
        "val_acc": 0.8,
        "val_balanced_accuracy": 0.8,
        "val_macro_f1": 0.8,
        "lr": 3e-3,
        "data_s": 0.1,
        "augment_s": 0.5,
        "compute_s": 9.0,
        "eval_s": 1.0,
        "epoch_s": 10.6,
    }
    base.update(values)
    return EpochRow(epoch=i, stage=stage, **base)


def clean_history() -> list[EpochRow]:
    """A healthy run: head epoch, then steady improvement that levels off."""
    rows = [(0.9, 0.70, 0.75, 0.70, 0.70), (0.6, 0.80, 0.55, 0.80, 0.81)]
    rows += [(0.5, 0.85, 0.48, 0.84, 0.845), (0.45, 0.88, 0.46, 0.855, 0.85)]
    rows += [(0.42, 0.89, 0.45, 0.86, 0.855)]
    return [
        epoch(
            i + 1,
            "head" if i == 0 else "full",
            train_loss=tl,
            train_acc=ta,
            val_loss=vl,
            val_acc=va,
            val_balanced_accuracy=vb,
        )
        for i, (tl, ta, vl, va, vb) in enumerate(rows)
    ]


def facts(history: list[EpochRow] | None = None, **kw: Any) -> RunFacts:
    config = RunConfig()
    config.data.aug, config.train.bn, config.train.lr = "microscopy", "train", 3e-3
    config.train.balance, config.train.select_metric = "none", "accuracy"
    for key, value in kw.pop("cfg", {}).items():
        section, _, name = key.partition(".")
        setattr(getattr(config, section), name, value)
    base: dict[str, Any] = {
        "path": Path("/runs/x"),
        "history": history if history is not None else clean_history(),
        "config": config,
        "preprocess": Preprocess(64, WEIGHTS_NORM, WEIGHTS_NORM, "bicubic", 0.875),
        "expected_mean": WEIGHTS_NORM,
        "expected_std": WEIGHTS_NORM,
        "native_size": 96,  # the clean run's 64 px is above half of it
        "classes": ["a", "b", "c", "d"],
        "train_counts": {"a": 250, "b": 250, "c": 250, "d": 250},
        "val_counts": {"a": 100, "b": 100, "c": 100, "d": 100},
        "grayscale": False,
        "check": {"verdict": []},
    }
    base.update(kw)
    return RunFacts(**base)


def test_clean_history_has_no_findings() -> None:
    assert R.run_rules(facts()) == []


def test_low_resolution_fires_below_half_the_native_size_with_room_to_improve() -> None:
    finding = R.low_resolution(facts(native_size=224))
    assert finding is not None and finding.rule == "low_resolution"
    assert "--img-size 128" in finding.fix  # double the size, capped at the native one
    assert finding.numbers["native_size"] == 224
    assert R.low_resolution(facts(native_size=128)) is None  # 64 px is half: not "far below"
    assert R.low_resolution(facts(native_size=None)) is None  # random init: no native size
    high = [epoch(i + 1, val_balanced_accuracy=0.97) for i in range(3)]
    assert R.low_resolution(facts(history=high, native_size=224)) is None  # no room left


def test_overfitting_fires_on_rising_val_loss_and_growing_gap() -> None:
    h = clean_history()[:3]
    h += [
        epoch(4, train_loss=0.30, train_acc=0.95, val_loss=0.60, val_acc=0.82),
        epoch(5, train_loss=0.15, train_acc=0.99, val_loss=0.75, val_acc=0.81),
    ]
    f = R.overfitting(facts(h))
    assert f is not None and f.severity == "high"
    assert f.numbers["min_val_loss_epoch"] == 3 and f.numbers["val_loss_rise"] == pytest.approx(
        0.75 / 0.48 - 1
    )
    assert "--epochs 2" in f.fix  # val loss lowest after the 2nd full epoch
    assert R.overfitting(facts()) is None
    # Val loss rising while train loss rises too is not overfitting.
    h2 = [*h[:3], replace(h[3], train_loss=0.6), replace(h[4], train_loss=0.62)]
    assert R.overfitting(facts(h2)) is None


def test_val_instability_compares_swings_with_binomial_noise() -> None:
    accs = [0.60, 0.75, 0.55, 0.78, 0.58]
    h = [epoch(i + 1, val_acc=a) for i, a in enumerate(accs)]
    f = R.val_instability(facts(h))
    assert f is not None and f.severity == "high"
    sigma = math.sqrt(0.58 * 0.42 / 400)
    assert f.numbers["binomial_sigma"] == pytest.approx(sigma)
    assert f.numbers["worst_drop"] == pytest.approx(0.20)
    # The same swings on a val set 100x larger... are still real; on 4 images they are noise.
    assert R.val_instability(facts(h, val_counts={"a": 2, "b": 2})) is None
    # Steady improvement has large diffs but no drop.
    steady = [epoch(i + 1, val_acc=a) for i, a in enumerate([0.3, 0.6, 0.7, 0.72])]
    assert R.val_instability(facts(steady)) is None


def test_val_instability_fix_names_what_the_config_shows() -> None:
    h = [epoch(i + 1, val_acc=a) for i, a in enumerate([0.60, 0.75, 0.55, 0.78, 0.58])]
    default = R.val_instability(facts(h))
    assert default is not None and "`--lr 0.001`" in default.fix  # defaults: a lower peak LR
    unit = R.val_instability(facts(h, cfg={"model.normalize": "unit"}))
    assert unit is not None and unit.fix.startswith("`--normalize weights`")
    assert "a third" not in unit.fix  # the input scaling comes first, not a guess at the LR


def test_normalization_fires_on_unit_inputs_only() -> None:
    unit = Preprocess(64, (0.0,) * 3, (1.0,) * 3, "bicubic", 0.875)
    f = R.normalization(facts(preprocess=unit, cfg={"model.normalize": "unit"}))
    assert f is not None and f.severity == "high" and "--normalize weights" in f.fix
    assert "[0.00, 1.00]" in f.evidence and "[-1.00, 1.00]" in f.evidence
    assert R.normalization(facts()) is None
    assert R.normalization(facts(expected_mean=None, expected_std=None)) is None  # from scratch


def test_lr_too_high_signs() -> None:
    nan_steps = [*clean_history()[:-1], replace(clean_history()[-1], skipped_steps=7)]
    f = R.lr_too_high(facts(nan_steps))
    assert f is not None and f.severity == "high" and "non_finite" in f.numbers["signs"]
    chance = [epoch(1, "head")] + [epoch(i, train_loss=1.38, train_acc=0.26) for i in (2, 3, 4)]
    f = R.lr_too_high(facts(chance, cfg={"train.lr": 0.1}))
    assert f is not None and "chance" in f.numbers["signs"] and "--lr 1e-02" in f.fix
    # The same flat chance-level loss at the default LR is not blamed on a high LR.
    f = R.lr_too_high(facts(chance))
    assert f is None or "chance" not in f.numbers["signs"]
    spike = [epoch(1, "head"), epoch(2, train_loss=0.5), epoch(3, train_loss=0.9)]
    f = R.lr_too_high(facts(spike))
    assert f is not None and f.numbers["signs"] == ["spike"] and f.severity == "medium"
    decline = [epoch(i + 1, val_acc=a, train_loss=0.6) for i, a in enumerate([0.8, 0.7, 0.6, 0.6])]
    f = R.lr_too_high(facts(decline))
    assert f is not None and "decline" in f.numbers["signs"]
    assert R.lr_too_high(facts()) is None


def test_lr_too_low_fires_on_flat_loss() -> None:
    flat = [epoch(1, "head")] + [epoch(i, train_loss=1.0, train_acc=0.6) for i in (2, 3, 4)]
    f = R.lr_too_low(facts(flat, cfg={"train.lr": 1e-5}))
    assert f is not None and "--lr 1e-04" in f.fix
    assert R.lr_too_low(facts()) is None
    assert R.lr_too_low(facts(flat)) is None  # at the default LR a flat loss has another cause
    # Flat because converged (high train accuracy) is fine.
    done = [epoch(i, train_loss=0.3, train_acc=0.98) for i in (1, 2, 3)]
    assert R.lr_too_low(facts(done, cfg={"train.lr": 1e-5})) is None


def test_aug_orientation_only_on_grayscale_with_flips_or_big_turns() -> None:
    f = R.aug_orientation(facts(grayscale=True, cfg={"data.aug": "rotate90"}))
    assert f is not None and "--aug xray" in f.fix and f.numbers["vflip"] is True
    assert R.aug_orientation(facts(grayscale=True, cfg={"data.aug": "xray"})) is None
    assert R.aug_orientation(facts(grayscale=False, cfg={"data.aug": "rotate90"})) is None


def test_data_bound_names_the_bottleneck() -> None:
    slow = [epoch(i, data_s=6.0, augment_s=1.0, compute_s=3.0, epoch_s=11.0) for i in (1, 2)]
    f = R.data_bound(facts(slow))
    assert f is not None and f.severity == "medium" and "--workers" in f.fix
    assert f.numbers["share"] == pytest.approx(0.7)
    aug_heavy = [epoch(i, data_s=0.1, augment_s=4.0, compute_s=6.0, epoch_s=11.1) for i in (1, 2)]
    f = R.data_bound(facts(aug_heavy))
    assert f is not None and f.severity == "low" and "--aug light" in f.fix
    assert R.data_bound(facts()) is None


def test_class_imbalance_gap_and_fix() -> None:
    h = [*clean_history()[:-1], epoch(5, val_acc=0.85, val_balanced_accuracy=0.62)]
    f = R.class_imbalance(facts(h, train_counts={"a": 900, "b": 100}))
    assert f is not None and f.severity == "high"
    assert "--balance sqrt" in f.fix and "--select-metric balanced_accuracy" in f.fix
    assert f.numbers["imbalance_ratio"] == pytest.approx(9.0)
    weighted = facts(h, train_counts={"a": 900, "b": 100}, cfg={"train.balance": "sqrt"})
    f = R.class_imbalance(weighted)
    assert f is not None and "--balance loss" in f.fix
    assert R.class_imbalance(facts()) is None


def test_bn_small_batch_config_rule() -> None:
    f = R.bn_small_batch(facts(cfg={"train.batch_size": 4}))
    assert f is not None and "--bn frozen" in f.fix
    assert R.bn_small_batch(facts(cfg={"train.batch_size": 4, "train.bn": "frozen"})) is None
    assert R.bn_small_batch(facts()) is None


def test_check_json_findings_and_hint() -> None:
    verdict = [
        {
            "severity": "critical",
            "title": "exact copies across splits: 100 val",
            "fix": "delete the copies",
            "key": "exact_cross_split",
        },
        {
            "severity": "warning",
            "title": "12 image(s) may be mislabeled",
            "fix": "review",
            "key": "label_issues",
        },
        {"severity": "info", "title": "train is imbalanced 9:1", "fix": "-", "key": "imbalance"},
    ]
    found = C.check_findings(facts(check={"root": "D", "verdict": verdict}))
    assert [(f.rule, f.severity) for f in found] == [("leakage", "high"), ("label_noise", "medium")]
    assert C.check_missing(facts()) is None
    hint = C.check_missing(facts(check=None))
    assert hint is not None and hint.severity == "low" and "medfit check" in hint.fix


def test_bn_probe_rule() -> None:
    bad = BNProbe(256, 4, "train", acc_eval=0.40, acc_batch_stats=0.80, agreement=0.45)
    f = P.bn_mismatch(bad)
    assert f is not None and f.severity == "high" and "--bn frozen" in f.fix
    assert P.bn_mismatch(replace(bad, policy="frozen")) is None  # trained on running stats
    assert P.bn_mismatch(BNProbe(256, 32, "train", 0.80, 0.81, 0.96)) is None
    # A model near chance flips answers under any perturbation: equal accuracy is no mismatch.
    assert P.bn_mismatch(BNProbe(192, 32, "train", 0.417, 0.385, 0.55)) is None


def test_aug_probe_rule() -> None:
    f = P.aug_destroys_signal(AugProbe(256, "rotate90", acc_clean=0.90, acc_augmented=0.60))
    assert f is not None and f.severity == "high" and "--aug xray" in f.fix
    assert P.aug_destroys_signal(AugProbe(256, "microscopy", 0.90, 0.87)) is None


def test_rank_and_json_schema(tmp_path: Path) -> None:
    low = Finding("a", "low", "t", "e", "f", {"x": float("nan")}, strength=9)
    high_weak = Finding("b", "high", "t", "e", "f", strength=1)
    high_strong = Finding("c", "high", "t", "e", "f", strength=3)
    ranked = rank([low, high_weak, high_strong])
    assert [f.rule for f in ranked] == ["c", "b", "a"]
    path = Diagnosis(tmp_path, ranked, {"bn": None}).write(tmp_path / "diagnosis.json")
    data = json.loads(path.read_text())
    assert set(data) == {"run", "findings", "probes"}
    keys = {"rule", "severity", "title", "evidence", "fix", "numbers"}
    assert all(set(f) == keys for f in data["findings"])
    assert data["findings"][2]["numbers"]["x"] is None  # strict JSON: NaN -> null


# --- end to end on the session's tiny run ------------------------------------------------------


@pytest.fixture
def run_copy(run: Path, tmp_path: Path) -> Path:
    return copy_run(run, tmp_path / "run")


def test_diagnose_run_end_to_end_with_probes(run_copy: Path) -> None:
    lines: list[str] = []
    diagnosis = diagnose_run(run_copy, log=lines.append)
    saved = json.loads((run_copy / "diagnosis.json").read_text())
    assert saved["run"] == str(run_copy)
    assert saved["probes"]["bn"]["images"] > 0 and saved["probes"]["skipped"] is None
    assert saved["probes"]["augmentation"]["preset"] == "xray"
    fit, aug = saved["probes"]["fit"], saved["probes"]["augmentation"]
    assert fit["images"] == aug["images"] == sum(fit["support"]) == sum(fit["predicted"])
    assert fit["acc_clean"] == aug["acc_clean"] == sum(fit["correct"]) / fit["images"]
    assert [f["rule"] for f in saved["findings"]] == [f.rule for f in diagnosis.findings]
    assert any(f["rule"] == "check_missing" for f in saved["findings"])  # no check.json
    assert any("saved" in line for line in lines)


def test_cli_no_probes_json_and_planted_normalization(run_copy: Path, tmp_path: Path) -> None:
    """A run trained on 1/255 inputs (preprocess.json says mean 0, std 1) is flagged, top."""
    pre = json.loads((run_copy / "preprocess.json").read_text())
    (run_copy / "preprocess.json").write_text(
        json.dumps({**pre, "mean": [0.0] * 3, "std": [1.0] * 3})
    )
    parser = argparse.ArgumentParser()
    add_diagnose_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "d.json"
    args = parser.parse_args(["diagnose", str(run_copy), "--no-probes", "--json", str(out)])
    DIAGNOSE_COMMANDS[args.command](args)
    saved = json.loads(out.read_text())
    assert saved["findings"][0]["rule"] == "normalization"
    assert saved["probes"] == {"skipped": "--no-probes"}
    assert not (run_copy / "diagnosis.json").exists()


def test_not_a_run_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(MedfitError, match="not a medfit run directory"):
        diagnose_run(tmp_path, log=lambda _: None)
