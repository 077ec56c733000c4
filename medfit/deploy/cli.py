"""The `predict`, `export` and `serve` subcommands, wired into `medfit.cli` by

    add_deploy_commands(sub)        # in build_parser(), after the other sub.add_parser calls
    COMMANDS.update(DEPLOY_COMMANDS)

    medfit predict RUN IMAGES_OR_DIRS_OR_CSV ... [--out preds.csv] [--tta] [--temperature-scaled]
    medfit export RUN --format onnx|torchscript [--dynamic-batch] [--out FILE]
    medfit serve RUN [--host 127.0.0.1] [--port 8000]

Heavy imports (torch, onnx, fastapi) happen inside the handlers so `medfit --help` stays instant.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, TextIO

from medfit.errors import ConfigError, DataError, MedfitError
from medfit.rundir import existing_run_dir

if TYPE_CHECKING:
    from medfit.inference import PredictionTable

Handler = Callable[[argparse.Namespace], None]


def add_deploy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register predict, export and serve on the `medfit` subcommand parser."""
    p = sub.add_parser("predict", help="class probabilities for images with a trained run")
    p.add_argument("run")
    p.add_argument(
        "inputs", nargs="+", help="image files, folders, or CSV/TSV manifests with a 'path' column"
    )
    p.add_argument("--out", help="write the CSV here (default: print it)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--tta", action="store_true", help="average over the flips the run's augmentation used"
    )
    p.add_argument(
        "--temperature-scaled",
        action="store_true",
        help="calibrated probabilities with the run's calibration.json temperature",
    )
    _add_model_options(p)

    p = sub.add_parser("export", help="write the model as ONNX or TorchScript, verified")
    p.add_argument("run")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default 1)")
    p.add_argument("--out", help="output file (default RUN/export/model.onnx|.torchscript.pt)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="max |probability difference| vs PyTorch allowed (default 1e-4)",
    )

    p = sub.add_parser("serve", help="HTTP service: POST /predict, GET /health, GET /model")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (no authentication!)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument("--max-concurrent", type=int, default=2, help="inferences at once")
    p.add_argument("--max-waiting", type=int, default=8, help="queued beyond those; more get 503")
    _add_model_options(p)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def cmd_predict(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    existing_run_dir(args.run)  # before torch loads: a wrong path is refused at once
    from medfit.deploy.predict import (
        check_output_file,
        collect_inputs,
        save_csv,
        write_csv,
    )
    from medfit.inference import Predictor

    out_file = check_output_file(args.out) if args.out else None
    predictor = Predictor(args.run, device=args.device, checkpoint=args.checkpoint)
    paths = collect_inputs(args.inputs)
    if args.tta and len(predictor.views(True)) == 1:
        print(
            f"medfit: --tta: the run's augmentation preset {predictor.info.aug_preset!r} used no "
            "flips, so there is no view to add; predictions are the plain ones",
            file=sys.stderr,
        )
    table = predictor.predict_files(
        paths, args.batch_size, args.tta, args.temperature_scaled, progress=True
    )
    if out_file is not None:
        save_csv(table, out_file)
    else:
        write_csv(table, _stdout_text())
    _report(table, args.out, sys.stdout if args.out else sys.stderr)


def _stdout_text() -> TextIO:
    """stdout, writing file names that are not valid UTF-8 as their original bytes."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="surrogateescape")
    return sys.stdout


def _report(table: PredictionTable, out: str | None, stream: IO[str]) -> None:
    from medfit.deploy.predict import skipped_lines

    done = len(table.paths) - len(table.skipped)
    extras = [f"TTA over {'+'.join(table.views)}"] if len(table.views) > 1 else []
    if isinstance(table.temperature, tuple):
        extras += ["a temperature per label"]
    elif table.temperature:
        extras += [f"temperature {table.temperature:g}"]
    if table.thresholds is not None:
        extras += ["labels called at their thresholds.json thresholds"]
    where = f" to {out}" if out else ""
    note = f" ({'; '.join(extras)})" if extras else ""
    print(f"wrote {done} prediction(s){where}{note}", file=stream)
    for line in skipped_lines(table):
        print(line, file=stream)
    if done == 0:
        raise DataError(f"none of the {len(table.paths)} input file(s) could be read")


def cmd_export(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ConfigError(f"--tolerance must be a number > 0, got {args.tolerance}")
    existing_run_dir(args.run)
    from medfit.deploy.export import export_model

    report = export_model(args.run, args.format, args.out, args.dynamic_batch, args.tolerance)
    v = report.verification
    print(
        f"exported {report.format} to {report.path} (metadata: {report.metadata_path})\n"
        f"verified on {v.inputs}, batch size(s) {', '.join(map(str, v.batch_sizes))}: "
        f"max |p_export - p_torch| = {v.max_abs_diff_probabilities:.2e} <= tolerance "
        f"{v.tolerance:.0e} (logits: {v.max_abs_diff_logits:.2e})"
    )


def cmd_serve(args: argparse.Namespace) -> None:
    _check_serve_options(args)
    existing_run_dir(args.run)
    try:
        from medfit.deploy.serve import Limits, serve
    except ImportError:
        raise MedfitError('serving needs: pip install "medfit[serve]"') from None

    limits = Limits(int(args.max_upload_mb * 1024 * 1024), args.max_concurrent, args.max_waiting)
    serve(args.run, args.host, args.port, limits, args.device, args.checkpoint)


# An upload is held in memory whole (and decoded beside it), so its cap must be a real number.
MAX_UPLOAD_MB = 1024


def _check_serve_options(args: argparse.Namespace) -> None:
    """serve's numbers, refused in one line before the model is loaded or a port is bound."""
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [1, 65535], got {args.port}")
    if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= MAX_UPLOAD_MB):
        raise ConfigError(
            f"--max-upload-mb must be in (0, {MAX_UPLOAD_MB}], got {args.max_upload_mb} (an "
            "upload is held in memory whole)"
        )
    if args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.max_waiting < 0:
        raise ConfigError(f"--max-waiting must be >= 0, got {args.max_waiting}")


DEPLOY_COMMANDS: dict[str, Handler] = {
    "predict": cmd_predict,
    "export": cmd_export,
    "serve": cmd_serve,
}
