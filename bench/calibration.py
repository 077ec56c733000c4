"""Whether the calibration rule keeps the temperatures that help and refuses the ones that hurt.

    .venv/bin/python bench/calibration.py --sets breastmnist_28 pbc_blood_cells_72 --seeds 0 1 2

Each (set, seed) is the suite's run (`bench/suite.py`'s subsets: --train-size / --val-size, 64 px,
--epochs full epochs; trained once, then reused from --work). On its val and test logits this
prints what `calibrate()` decided (the T fitted on all of val, the two halves' T, the held-out NLL
gain with its 95% CI, applied or not) and the test NLL and ECE at T = 1, at the fitted T, and at
the T the rule chose: the rule is right when it applied a T that lowers the test NLL, or refused
one that would have raised it. Results are appended to bench/results/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

from suite import medfit_cmd, prepare

from medfit.evaluate.calibration import calibrate, nll_at, probabilities
from medfit.evaluate.metrics import expected_calibration_error

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "calibration.json"


def train(data: Path, run: Path, seed: int, args: argparse.Namespace) -> float:
    if (run / "summary.json").is_file():
        return 0.0
    subprocess.run(["rm", "-rf", str(run)], check=True)
    cmd = [*medfit_cmd(str(REPO)), "train", str(data), "--out", str(run), "--seed", str(seed)]
    cmd += ["--img-size", str(args.img_size), "--epochs", str(args.epochs)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def split_logits(run: Path, data: Path) -> dict[str, tuple]:  # type: ignore[type-arg]
    from medfit.evaluate.runner import _split_csv_items, _split_items, collect_logits
    from medfit.inference import Predictor
    from medfit.rundir import RunDir

    predictor = Predictor(run, device="cpu")
    out = {}
    val_items = _split_csv_items(RunDir(run), "val", predictor.classes)
    test_items, _ = _split_items(RunDir(run), str(data), "test", predictor.classes)
    for split, items in (("val", val_items), ("test", test_items)):
        got = collect_logits(predictor, items, False, 64, (split, lambda _: None))
        out[split] = (got.values, got.labels)
    return out


def one(name: str, seed: int, args: argparse.Namespace) -> dict:
    data = prepare(name, Path(args.work), args.train_size, args.val_size)
    run = Path(args.work) / "runs" / "calibration" / f"{name}-s{seed}"
    train_s = train(data, run, seed, args)
    logits = split_logits(run, data)
    (val_z, val_y), (test_z, test_y) = logits["val"], logits["test"]
    cal = calibrate(val_z, val_y)
    t_fit, t_used = cal["fitted_temperature"], cal["temperature"]

    def on_test(t: float) -> tuple[float, float]:
        return nll_at(test_z, test_y, t), expected_calibration_error(
            test_y, probabilities(test_z, t)
        )

    (nll1, ece1), (nllf, ecef), (nllu, eceu) = on_test(1.0), on_test(t_fit), on_test(t_used)
    helps = nllf < nll1
    return {
        "set": name,
        "seed": seed,
        "n_val": len(val_y),
        "n_test": len(test_y),
        "t_fitted": t_fit,
        "t_halves": cal["half_temperatures"],
        "gain": cal["held_out_nll_gain"],
        "gain_ci": cal["held_out_nll_gain_ci95"],
        "applied": cal["applied"],
        "test_nll": {"T=1": nll1, "fitted": nllf, "rule": nllu},
        "test_ece": {"T=1": ece1, "fitted": ecef, "rule": eceu},
        "fitted_helps_on_test": helps,
        "rule_right": cal["applied"] == helps,
        "train_s": train_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["breastmnist_28", "pbc_blood_cells_72"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train-size", type=int, default=1500)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "medfit-suite"))
    args = ap.parse_args()
    rows = [one(name, seed, args) for name in args.sets for seed in args.seeds]
    print(
        f"{'set':22s} {'seed':>4s} {'n_val':>5s} {'T fit':>6s} {'halves':>11s} "
        f"{'gain (95% CI)':>26s} {'applied':>7s} {'test NLL T=1 / fit / rule':>27s} right"
    )
    for r in rows:
        ci = f"{r['gain']:+.4f} ({r['gain_ci'][0]:+.4f},{r['gain_ci'][1]:+.4f})"
        halves = "/".join(f"{t:.2f}" for t in r["t_halves"])
        nll = r["test_nll"]
        print(
            f"{r['set']:22s} {r['seed']:4d} {r['n_val']:5d} {r['t_fitted']:6.3f} {halves:>11s} "
            f"{ci:>26s} {r['applied']!s:>7s} "
            f"{nll['T=1']:.4f} / {nll['fitted']:.4f} / {nll['rule']:.4f}  {r['rule_right']}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    saved.append({"commit": commit, "cpu": platform.processor(), "args": vars(args), "rows": rows})
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
