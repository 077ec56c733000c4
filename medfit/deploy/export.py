"""Export a run's model to ONNX or TorchScript, with its preprocessing, verified before it lands.

The exported graph takes the normalised float input (N, 3, img_size, img_size) and returns
`logits` and `probabilities` (softmax of the logits). Everything needed to use it without medfit
travels with it: `FILE.json` beside the file (classes, size, mean/std, interpolation, input layout,
the preprocessing steps and a self-contained numpy/Pillow implementation of them), and the same
JSON embedded in the file (ONNX `metadata_props`, TorchScript extra file `medfit.json`).

An export is written to a temporary file first and verified on the run's own validation images
(RUN/split.csv), or seeded random inputs when those files are gone: the exported runtime
(onnxruntime / torch.jit) and eager PyTorch must agree on every probability within `tolerance`
(1e-4 absolute by default). Only then is it moved into place; otherwise nothing is left behind.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfit.data.cache import cache_size_for
from medfit.data.decode import DecodeError
from medfit.data.moved import listed_files_missing
from medfit.errors import MedfitError
from medfit.inference import Predictor
from medfit.rundir import RunDir
from medfit.version import __version__

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
DEFAULT_TOLERANCE = 1e-4  # max |p_exported - p_eager| over all probabilities checked
VERIFY_IMAGES = 8
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probabilities")
TORCHSCRIPT_EXTRA = "medfit.json"


class ExportError(MedfitError):
    """The export could not be written or does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class Verification:
    inputs: str  # what the check ran on, e.g. "8 val images from split.csv"
    batch_sizes: tuple[int, ...]
    max_abs_diff_probabilities: float
    max_abs_diff_logits: float
    tolerance: float


@dataclass(frozen=True)
class ExportReport:
    path: Path
    metadata_path: Path
    format: str
    verification: Verification


class _WithProbabilities(nn.Module):
    """Logits for calibration / custom thresholds, probabilities for everyone else."""

    def __init__(self, model: nn.Module, multilabel: bool = False) -> None:
        super().__init__()
        self.model = model
        self.multilabel = multilabel  # sigmoid per label instead of a softmax over classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        if self.multilabel:
            return logits, torch.sigmoid(logits)
        return logits, torch.softmax(logits, dim=1)


def default_output(run_dir: Path, fmt: str) -> Path:
    return run_dir / "export" / f"model{SUFFIXES[fmt]}"


def export_model(
    run_dir: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    dynamic_batch: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportReport:
    """Write, verify and publish the export; an ExportError (and no file) when it differs."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    predictor = Predictor(run_dir, device="cpu")  # export and compare on CPU, in float32
    path = Path(out).expanduser() if out else default_output(predictor.info.path, fmt)
    meta = export_metadata(predictor, fmt, dynamic_batch)
    module = _WithProbabilities(predictor.model, predictor.multilabel).eval()
    with _staging_file(path) as tmp:
        run = (
            _write_onnx(module, tmp, meta)
            if fmt == "onnx"
            else _write_torchscript(module, tmp, meta)
        )
        verification = verify(predictor, module, run, dynamic_batch, tolerance)
        os.replace(tmp, path)
    meta_path = path.with_name(path.name + ".json")
    meta_path.write_text(json.dumps({**meta, "verification": asdict(verification)}, indent=2))
    return ExportReport(path, meta_path, fmt, verification)


# --- metadata ----------------------------------------------------------------------------------


def export_metadata(predictor: Predictor, fmt: str, dynamic_batch: bool) -> dict[str, Any]:
    """What a consumer without medfit needs: classes, preprocessing, input/output contract."""
    pre = predictor.preprocess
    size = pre.img_size
    return {
        "format": fmt,
        "medfit_version": __version__,
        "model_name": predictor.info.model_name,
        "classes": predictor.classes,
        "fold_members": [p.name for p in predictor.members],  # [] unless a k-fold ensemble
        "img_size": size,
        "cache_size": cache_size_for(size),
        "mean": list(pre.mean),
        "std": list(pre.std),
        "interpolation": pre.interpolation,
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "shape": ["batch" if dynamic_batch else 1, 3, size, size],
            "channels": "RGB (grayscale replicated to 3 channels)",
            "values": "normalised: (pixel / 255 - mean) / std",
        },
        "outputs": {
            "logits": "float32 (batch, num_classes); of a fold ensemble, the log of the "
            "members' mean probability (one graph runs every member)",
            "probabilities": "softmax(logits), in the order of 'classes'",
        },
        "temperature": predictor.info.temperature,
        "calibrated_probabilities": "softmax(logits / temperature) when temperature is set",
        **(_multilabel_metadata(predictor) if predictor.multilabel else {}),
        "tta_flips": list(predictor.info.tta_views[1:]),
        "preprocess_steps": preprocess_steps(pre.interpolation, size),
        "preprocess_python": inspect.getsource(preprocess_numpy),
    }


def _multilabel_metadata(predictor: Predictor) -> dict[str, Any]:
    """A multi-label run's output contract: a sigmoid per label, and each label's threshold."""
    return {
        "task": "multilabel",
        "outputs": {
            "logits": "float32 (batch, num_labels): one independent logit per label",
            "probabilities": "sigmoid(logits) per label, in the order of 'classes' (they do not "
            "sum to 1: an image may have any number of labels)",
        },
        "calibrated_probabilities": "sigmoid(logits / temperature), temperature per label when set",
        "thresholds": predictor.thresholds,
        "thresholds_note": "a label is called when its probability >= its threshold (chosen "
        "per label on val by medfit eval; 0.5 before the run was evaluated)",
    }


def preprocess_steps(interpolation: str, size: int) -> list[str]:
    return [
        "decode to uint8 pixels, (H, W) gray or (H, W, 3) RGB; 16-bit images and DICOM are "
        "windowed to 8 bit as medfit.data.decode does (DICOM window, else 0.5-99.5 percentiles); "
        f"a JPEG at least twice cache_size ({cache_size_for(size)}) on both sides is decoded at "
        "1/2, 1/4 or 1/8 scale, the smallest that keeps both sides >= cache_size (Pillow "
        f"Image.draft(mode, ({cache_size_for(size)}, {cache_size_for(size)})) before load)",
        f"squash (no crop, aspect ratio not kept) to cache_size x cache_size "
        f"({cache_size_for(size)}) with Pillow {interpolation}, reducing_gap=3.0, as uint8",
        "convert to float32 / 255; replicate gray to 3 channels",
        f"resize each channel to {size} x {size}, bilinear with antialiasing (Pillow 'F' mode "
        "BILINEAR = torch interpolate(bilinear, antialias=True))",
        "normalise (x - mean) / std per channel; layout NCHW, batch first",
    ]


def preprocess_numpy(pixels: Any, meta: dict[str, Any]) -> Any:
    """uint8 (H, W[, C]) -> float32 (1, 3, img_size, img_size), exactly as medfit preprocesses.

    Self-contained (numpy + Pillow only): this source ships in the export's JSON.
    """
    import numpy as np
    from PIL import Image

    resample = {
        "bicubic": Image.Resampling.BICUBIC,
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
    }[meta["interpolation"]]
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    side, size = meta["cache_size"], meta["img_size"]
    square = Image.fromarray(pixels).resize((side, side), resample, reducing_gap=3.0)
    x = np.asarray(square, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = np.repeat(x[:, :, None], 3, axis=2)
    bilinear = Image.Resampling.BILINEAR
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(x[:, :, c])).resize((size, size), bilinear))
        for c in range(3)
    ]
    mean = np.asarray(meta["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(meta["std"], dtype=np.float32)[:, None, None]
    return ((np.stack(channels) - mean) / std)[None].astype(np.float32)


# --- writing -----------------------------------------------------------------------------------

Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@contextlib.contextmanager
def _staging_file(path: Path) -> Iterator[Path]:
    """A temp file beside `path`, removed unless the caller moved it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _example(meta: dict[str, Any], batch: int) -> torch.Tensor:
    size = meta["img_size"]
    return torch.zeros(batch, 3, size, size)


def _write_onnx(module: nn.Module, path: Path, meta: dict[str, Any]) -> Runner:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            'ONNX export needs onnx and onnxruntime: pip install "medfit[export]"'
        ) from None
    dynamic = meta["input"]["shape"][0] == "batch"
    # torch.export assumes a dynamic dim is >= 2 while tracing; the graph then serves batch 1 too.
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
    try:
        torch.onnx.export(
            module,
            (_example(meta, 2 if dynamic else 1),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=shapes,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    except Exception as exc:
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {exc})") from None
    proto = onnx.load(str(path))
    for key, value in _embedded(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return np.asarray(logits), np.asarray(probs)

    return run


def _embedded(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props: the whole record under 'medfit', and its top-level fields by name
    (JSON-encoded) so that viewers such as Netron show classes and normalisation directly."""
    return {"medfit": json.dumps(meta), **{k: json.dumps(v) for k, v in meta.items()}}


def _write_torchscript(module: nn.Module, path: Path, meta: dict[str, Any]) -> Runner:
    # torch.jit is deprecated in favour of torch.export but is still what C++/mobile users load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            # check_trace off: verify() below compares with eager on real inputs anyway.
            traced = torch.jit.trace(module, _example(meta, 1), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
            loaded = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ExportError(f"TorchScript export failed ({type(exc).__name__}: {exc})") from None

    @torch.no_grad()
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            logits, probs = loaded(torch.from_numpy(x))
        return logits.numpy(), probs.numpy()

    return run


# --- verification ------------------------------------------------------------------------------


def verify(
    predictor: Predictor, module: nn.Module, run: Runner, dynamic_batch: bool, tolerance: float
) -> Verification:
    """Compare the exported runtime with eager PyTorch; ExportError beyond `tolerance`."""
    x, source = verification_inputs(predictor)
    with torch.no_grad():
        ref_logits, ref_probs = (t.numpy() for t in module(x))
    # A dynamic-batch export is checked on the whole batch and on batch 1; a fixed one image-wise.
    n = len(x)
    spans = [(0, n), (0, 1)] if dynamic_batch and n > 1 else [(i, i + 1) for i in range(n)]
    diff_p = diff_l = 0.0
    for start, stop in spans:
        logits, probs = run(x[start:stop].numpy())
        diff_p = max(diff_p, float(np.abs(probs - ref_probs[start:stop]).max()))
        diff_l = max(diff_l, float(np.abs(logits - ref_logits[start:stop]).max()))
    sizes = tuple(sorted({stop - start for start, stop in spans}, reverse=True))
    result = Verification(source, sizes, diff_p, diff_l, tolerance)
    if not diff_p <= tolerance:
        raise ExportError(
            f"the export does not reproduce the PyTorch model: max |p_export - p_torch| = "
            f"{diff_p:.2e} > tolerance {tolerance:.0e} on {source} (logits differ by up to "
            f"{diff_l:.2e}); nothing was written"
        )
    return result


def verification_inputs(predictor: Predictor, n: int = VERIFY_IMAGES) -> tuple[torch.Tensor, str]:
    """Up to n of the run's val images, preprocessed by medfit; seeded noise if none decode."""
    squares = []
    # A fold ensemble has no split.csv of its own: its first member's val images will do.
    split_csv = (predictor.members[0] if predictor.members else predictor.info.path) / "split.csv"
    paths = _val_paths(split_csv, n)
    for path in paths:
        with contextlib.suppress(DecodeError):
            squares.append(predictor.load_square(path))
    if squares:
        return predictor.model_input(np.stack(squares)), f"{len(squares)} val images from split.csv"
    size = predictor.preprocess.img_size
    noise = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    moved = listed_files_missing(
        split_csv, "val", paths, "put the data back there to check on real images"
    )
    why = f"NOT real images: {moved}" if moved else "the run's val images are not readable"
    return noise, f"{n} random normal inputs ({why})"


def _val_paths(split_csv: Path, n: int) -> list[str]:
    """n val files spread over the split (it is sorted by class, so this spans the classes)."""
    try:
        rows = [
            r.path for r in RunDir(split_csv.parent).read_split_rows() if r.split == "val" and r.ok
        ]
    except MedfitError:
        return []
    step = max(1, len(rows) // n)
    return rows[::step][:n]
