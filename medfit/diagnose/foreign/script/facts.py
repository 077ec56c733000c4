"""What the script says about the run, as plain facts (ScriptFacts) the log rules, the known-set
rules and the medfit command use: backbone, input size, classes, data folders, device, validation
set, and every training call with its learning rate and the trainable state of the body.
gather.py fills them in from a finished read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FitCall:
    line: int
    epochs: int | None
    initial_epoch: int | None
    lr: float | None
    optimizer: str | None
    body: str  # frozen | partial | all | unknown
    bn_inference: bool | None


@dataclass
class SplitFact:
    """A split of images into training and held-out parts that the script makes itself."""

    line: int
    how: str  # the call, as the script spells it ("train_test_split", "validation_split=0.2 ...")
    # shuffled (a random draw) | sorted_names (a contiguous block of each class folder's sorted
    # file names: Keras ImageDataGenerator) | table_order (a block of a table's rows) |
    # array_tail (the last rows of arrays: fit(validation_split))
    order: str
    grouped: bool  # by patient/group (GroupShuffleSplit, groups=)
    # val (the validation data is one side) | folders (it writes split folders the training
    # reads) | named (its outputs are named train/val/test) | other
    role: str
    source_dir: str | None = None  # the folder the split images were read from


@dataclass
class ScriptFacts:
    backbone: str | None = None
    family: str | None = None
    timm_name: str | None = None
    pretrained: bool | None = None
    img_size: int | None = None
    classes: int | None = None
    data_dirs: dict[str, str] = field(default_factory=dict)
    device: str | None = None
    val_size: int | None = None
    val_source: str | None = None
    fits: list[FitCall] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)
    early_stopping: bool = False
    # beyond the interface: how the training images reach the model, for the lead's input_bound
    # (per_step_decode | cached | in_memory | None)
    pipeline: str | None = None
    # for the known-data-set rules (diagnose/foreign/known_rules.py):
    names: list[tuple[int, str]] = field(default_factory=list)  # string constants, with lines
    metrics: list[str] | None = None  # compiled/logged metrics; None: not readable
    balancing: list[str] = field(default_factory=list)  # what balances the classes, with lines
    splits: list[SplitFact] = field(default_factory=list)
    grouped_split: bool = False  # a patient/group-wise splitter is used somewhere
    held_out: list[str] = field(default_factory=list)  # evaluate()/predict() sets, as written
