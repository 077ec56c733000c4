"""`medfit diagnose LOG --script train.py`: the static script reader (never runs the script).

Each rule has a small script where it must fire and one where it must stay silent. The scripts
are written here (none is copied from the corpus); the reading tests cover what made the old
Keras reader fail on published runs: notebook magics, self-referencing assignments, Windows
paths, helper functions, configs in YAML cells, display code, `subset='training'` flows.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign.script import ScriptReport, medfit_command
from medfit.diagnose.foreign.script_rules import read_script
from medfit.errors import MedfitError

KINDS = {
    "input_scaling", "bn_training_mode", "finetune_lr_high", "aug_label_destroying",
    "val_augmented", "small_val", "val_is_test", "leakage", "class_imbalance", "input_bound",
    "metric_mismatch",
}  # fmt: skip


def read(tmp_path: Path, text: str, name: str = "train.py", **kw: object) -> ScriptReport:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    report = read_script(path, **kw)  # type: ignore[arg-type]
    assert not [n for n in report.notes if "reader failed" in n], report.notes
    for f in report.findings:
        _check_schema(f, path)
    return report


def _check_schema(f: Finding, path: Path) -> None:
    assert f.rule in KINDS | {"question", "script_read"}, f.rule
    assert f.evidence.startswith(f"{path.name}:{f.numbers['line']}:"), f.evidence
    assert f.numbers["source"] == "script" and f.numbers["file"] == str(path)
    if f.rule == "question":
        assert f.severity == "info" and f.numbers["about"] in KINDS and f.fix
    elif f.rule == "script_read":
        assert f.severity == "info"
    else:
        assert f.severity in ("high", "medium", "low")
        assert f.numbers["why"] and f.numbers["medfit"] and f.fix
        assert "keras_fix" in f.numbers or "framework_fix" in f.numbers


def found(report: ScriptReport) -> dict[str, Finding]:
    """rule -> the first finding of that kind (questions and info left out)."""
    out: dict[str, Finding] = {}
    for f in report.findings:
        if f.rule in KINDS:
            out.setdefault(f.rule, f)
    return out


def asked(report: ScriptReport) -> set[str]:
    return {f.numbers["about"] for f in report.findings if f.rule == "question"}


# A two-phase Keras recipe done right: preprocess_input, base frozen then conv5_ unfrozen with
# the base called with training=False, head stage at 1e-3 then 1e-5, separate val generator.
GOOD_KERAS = """
import tensorflow as tf
from tensorflow import keras
from tensorflow.keras.applications import ResNet50
from tensorflow.keras.applications.resnet50 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator

train_gen = ImageDataGenerator(preprocessing_function=preprocess_input, rotation_range=10,
                               horizontal_flip=True)
val_gen = ImageDataGenerator(preprocessing_function=preprocess_input)
train = train_gen.flow_from_directory("data/brain_mri/train", target_size=(224, 224))
val = val_gen.flow_from_directory("data/brain_mri/val", target_size=(224, 224), shuffle=False)

base = ResNet50(weights="imagenet", include_top=False, input_shape=(224, 224, 3))
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(4, activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
              metrics=["accuracy"])
model.fit(train, validation_data=val, epochs=5)
base.trainable = True
for layer in base.layers:
    layer.trainable = layer.name.startswith("conv5_")
model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-5),
              loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(train, validation_data=val, epochs=10)
"""


def test_a_correct_two_phase_recipe_has_no_findings(tmp_path: Path) -> None:
    report = read(tmp_path, GOOD_KERAS)
    assert found(report) == {}
    assert asked(report) == set()
    facts = report.facts
    assert report.framework == "keras"
    assert (facts.backbone, facts.family, facts.timm_name, facts.pretrained) == (
        "ResNet50",
        "resnet",
        "resnet50",
        True,
    )
    assert facts.img_size == 224 and facts.classes == 4
    assert facts.data_dirs == {"train": "data/brain_mri/train", "val": "data/brain_mri/val"}
    assert [(f.line, f.lr, f.body, f.bn_inference) for f in facts.fits] == [
        (22, 1e-3, "frozen", True),
        (28, 1e-5, "partial", True),
    ]
    assert facts.val_source == "val"


# --- 1. notebook exports ------------------------------------------------------------------------
NOTEBOOK = """
# %% cell 1
!pip install -q tensorflow==2.15
%cd /content/project
import yaml, os
import tensorflow as tf
from tensorflow.keras.applications import ResNet50
from tensorflow.keras.applications.resnet50 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator
# %% cell 2
%%writefile config.yaml
data:
  train: data/brain_mri/train
  val: data/brain_mri/val
train:
  learning_rate: 0.001
  epochs: 12
# %% cell 3
%%bash
ls data | head
# %% cell 4
this cell ( does not parse
# %% cell 5
cfg = yaml.safe_load(open("config.yaml"))
gen = ImageDataGenerator(preprocessing_function=preprocess_input)
train = gen.flow_from_directory(cfg["data"]["train"], target_size=(224, 224))
val = gen.flow_from_directory(cfg["data"]["val"], target_size=(224, 224))
# %% cell 6
base = ResNet50(weights="imagenet", include_top=False, pooling="avg")
out = tf.keras.layers.Dense(4, activation="softmax")(base.output)
model = tf.keras.Model(base.input, out)
model.compile(optimizer=tf.keras.optimizers.Adam(cfg["train"]["learning_rate"]),
              loss="categorical_crossentropy", metrics=["accuracy"])
history = model.fit(train, validation_data=val, epochs=cfg["train"]["epochs"])
"""


def test_notebook_magics_cells_and_a_yaml_writefile(tmp_path: Path) -> None:
    report = read(tmp_path, NOTEBOOK)
    facts = report.facts
    # the YAML cell is not Python but its values are what the script reads
    assert facts.data_dirs == {"train": "data/brain_mri/train", "val": "data/brain_mri/val"}
    assert [(f.line, f.epochs, f.lr, f.body) for f in facts.fits] == [(33, 12, 1e-3, "all")]
    assert any("%%writefile config.yaml" in n for n in report.notes)
    assert any("%%bash" in n for n in report.notes)
    assert any("line 21 skipped" in n for n in report.notes)
    lr = found(report)["finetune_lr_high"]
    assert lr.severity == "high" and lr.numbers["line"] == 31
    assert "config.yaml" in lr.evidence  # where the value came from
    assert found(report)["bn_training_mode"].numbers["line"] == 28  # trainable by default


def test_run_cell_magic_writefile_and_plain_concatenation(tmp_path: Path) -> None:
    # nbconvert's form of a %%writefile cell, a JSON config, and no cell markers at all
    text = """
    import json, tensorflow as tf
    get_ipython().run_cell_magic('writefile', 'cfg.json', '{"lr": 0.01, "bs": 8}\\n')
    get_ipython().system('nvidia-smi')
    cfg = json.load(open("cfg.json"))
    base = tf.keras.applications.MobileNetV2(weights="imagenet", include_top=False, pooling="avg")
    model = tf.keras.Sequential([base, tf.keras.layers.Dense(3, activation="softmax")])
    model.compile(tf.keras.optimizers.SGD(cfg["lr"], momentum=0.9), "categorical_crossentropy")
    model.fit(train_ds, epochs=3)
    """
    report = read(tmp_path, text)
    assert [(f.lr, f.optimizer, f.body) for f in report.facts.fits] == [(0.01, "sgd", "all")]
    assert found(report)["finetune_lr_high"].numbers["lr"] == 0.01


def test_unmarked_yaml_cell_ends_where_python_starts(tmp_path: Path) -> None:
    text = """
    %%writefile config.yaml
    lr: 0.0001
    model: resnet50
    import yaml
    from tensorflow import keras
    cfg = yaml.safe_load(open("config.yaml"))
    base = keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
    model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(cfg["lr"]), "categorical_crossentropy", ["accuracy"])
    model.fit(train_ds, epochs=2)
    """
    report = read(tmp_path, text)
    assert [f.lr for f in report.facts.fits] == [1e-4]
    assert report.facts.backbone == "ResNet50"


def test_commented_out_writefile_cell_is_read_as_the_file(tmp_path: Path) -> None:
    text = """
    # %%writefile config.yaml
    # train:
    #   learning_rate: 0.003
    import yaml
    from tensorflow import keras
    cfg = yaml.safe_load(open("config.yaml"))
    base = keras.applications.DenseNet121(weights="imagenet", include_top=False, pooling="avg")
    model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(cfg["train"]["learning_rate"]), "categorical_crossentropy")
    model.fit(train_ds, epochs=2)
    """
    assert [f.lr for f in read(tmp_path, text).facts.fits] == [3e-3]


def test_a_script_that_is_not_python_at_all_gives_notes_not_an_error(tmp_path: Path) -> None:
    report = read(tmp_path, "data:\n  img_size: 224\n  - [broken\n")
    assert report.findings[0].rule == "script_read" and found(report) == {}
    assert any("skipped" in n for n in report.notes)
    report = read(tmp_path, "\x01\x02 garbage ( [ {\n" * 3 + "\u00e9t\u00e9 = 1\nimport os\n")
    assert report.facts.fits == []
    with pytest.raises(MedfitError):  # binary data is a bad file, not a script to read
        read(tmp_path, "\x00\x01\x00 binary\n")


def test_unreadable_file_is_a_medfit_error(tmp_path: Path) -> None:
    with pytest.raises(MedfitError):
        read_script(tmp_path / "missing.py")
    with pytest.raises(MedfitError):
        read_script(tmp_path)


# --- 2. no recursion the input controls -----------------------------------------------------------
def test_self_reference_and_deep_nesting_do_not_recurse(tmp_path: Path) -> None:
    chain = "\n".join("x_train = (x_train - m) / s" for _ in range(300))
    deep = "y = " + "+".join(["1"] * 5000)
    parens = "z = " + "(" * 150 + "1" + ")" * 150
    text = f"""
import numpy as np
from tensorflow.keras.applications import MobileNetV2
from tensorflow.keras.preprocessing.image import ImageDataGenerator
x_train = np.load("x.npy")
m, s = x_train.mean(), x_train.std()
{chain}
{deep}
{parens}
def f(n):
    return g(n)
def g(n):
    return f(n)
k = f(3)
datagen = ImageDataGenerator(horizontal_flip=True)
model = MobileNetV2(weights="imagenet", include_top=False, pooling="avg")
model.fit(datagen.flow(x_train, y_train, batch_size=32), epochs=5)
"""
    t0 = time.perf_counter()
    report = read(tmp_path, text)
    assert time.perf_counter() - t0 < 2.0
    assert [f.line for f in report.facts.fits] == [315]
    assert any("line 306 skipped" in n for n in report.notes)  # too deep for ast
    assert report.facts.pipeline == "in_memory"
    assert "input_scaling" not in found(report)  # standardised arrays are not raw pixels


# --- 3. Windows paths ---------------------------------------------------------------------------
def test_windows_paths_keep_train_and_val_and_their_root(tmp_path: Path) -> None:
    text = r"""
    import os
    from pathlib import Path
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    ROOT = r"C:\Users\me\Downloads\chest_xray"
    train_dir = os.path.join(ROOT, "train")
    val_dir = Path(ROOT) / "val"
    test_dir = "C:\\Users\\me\\Downloads\\chest_xray\\test"
    gen = ImageDataGenerator(rescale=1./255)
    train = gen.flow_from_directory(train_dir, target_size=(150, 150))
    val = gen.flow_from_directory(val_dir, target_size=(150, 150))
    test = gen.flow_from_directory(test_dir, target_size=(150, 150))
    model.fit(train, validation_data=val, epochs=3)
    """
    report = read(tmp_path, text)
    assert report.facts.data_dirs == {
        "train": r"C:\Users\me\Downloads\chest_xray\train",
        "val": r"C:\Users\me\Downloads\chest_xray\val",
        "test": r"C:\Users\me\Downloads\chest_xray\test",
    }
    command, note = medfit_command(report)
    assert command.split()[2] == r"'C:\Users\me\Downloads\chest_xray'"
    assert "not found from here" in note
    assert report.facts.val_size == 16  # the Kaggle pneumonia val folder


# --- 4. following the code: helpers, configs, argparse, scopes ------------------------------------
HELPERS = """
import tensorflow as tf
from tensorflow.keras.applications import DenseNet121
from tensorflow.keras.applications.densenet import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator

CFG = {"lr": 1e-3, "ft_lr": 1e-3, "epochs": [3, 8], "block": "conv5"}
gen = ImageDataGenerator(preprocessing_function=preprocess_input)
train = gen.flow_from_directory("data/train", target_size=(224, 224), batch_size=8)
val = gen.flow_from_directory("data/val", target_size=(224, 224), shuffle=False)

def build(n_classes):
    base = DenseNet121(weights="imagenet", include_top=False, pooling="avg")
    for layer in base.layers:
        layer.trainable = False
    out = tf.keras.layers.Dense(n_classes, activation="softmax")(base.output)
    return tf.keras.Model(base.input, out)

def compile_with_lr(model, lr):
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=float(lr)),
                  loss="categorical_crossentropy", metrics=["accuracy"])

def unfreeze_top(model, block):
    for layer in model.layers:
        if layer.name.startswith(block):
            layer.trainable = True

model = build(3)
compile_with_lr(model, CFG["lr"])
model.fit(train, validation_data=val, epochs=CFG["epochs"][0])
unfreeze_top(model, CFG["block"])
compile_with_lr(model, CFG["ft_lr"])
model.fit(train, validation_data=val, epochs=CFG["epochs"][1])
"""


def test_helper_functions_and_a_config_dict_are_followed(tmp_path: Path) -> None:
    report = read(tmp_path, HELPERS)
    assert [(f.line, f.epochs, f.lr, f.body, f.bn_inference) for f in report.facts.fits] == [
        (29, 3, 1e-3, "frozen", True),
        (32, 8, 1e-3, "partial", False),
    ]
    bn = found(report)["bn_training_mode"]
    assert bn.numbers["line"] == 25  # `layer.trainable = True` inside unfreeze_top, not a freeze
    assert "called at line 30" in bn.evidence and "batch 8" in bn.evidence
    assert "conv5_block" in bn.fix  # DenseNet's stage names, not ResNet's
    lr = found(report)["finetune_lr_high"]
    assert lr.severity == "medium"  # a head-only stage came first
    assert lr.numbers["line"] == 19 and lr.numbers["head_stage"] is True


def test_the_same_recipe_at_1e_5_is_silent(tmp_path: Path) -> None:
    report = read(tmp_path, HELPERS.replace('"ft_lr": 1e-3', '"ft_lr": 1e-5'))
    assert "finetune_lr_high" not in found(report)
    assert [f.lr for f in report.facts.fits] == [1e-3, 1e-5]


ARGPARSE = """
import argparse
import torch, timm
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=3e-4)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--data", default="data/skin")
args = parser.parse_args()
tf = transforms.Compose([transforms.Resize(224), transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
train_ds = datasets.ImageFolder(f"{args.data}/train", transform=tf)
loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True)
model = timm.create_model("resnet50", pretrained=True, num_classes=7).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
for epoch in range(20):
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def test_argparse_defaults_and_f_strings_resolve(tmp_path: Path) -> None:
    report = read(tmp_path, ARGPARSE)
    facts = report.facts
    assert report.framework == "timm"
    assert (facts.backbone, facts.timm_name, facts.classes, facts.device) == (
        "resnet50",
        "resnet50",
        7,
        "gpu",
    )
    assert facts.data_dirs == {"train": "data/skin/train"}
    assert [(f.line, f.epochs, f.lr, f.optimizer, f.body) for f in facts.fits] == [
        (17, 20, 3e-4, "adamw", "all")
    ]
    lr = found(report)["finetune_lr_high"]
    assert "argparse default of --lr" in lr.evidence and lr.severity == "high"
    assert "bn_training_mode" not in found(report)  # batch 32: BN statistics are fine


def test_an_unresolvable_lr_is_unknown_and_asked_never_a_default(tmp_path: Path) -> None:
    text = """
    import os
    from tensorflow import keras
    lr = float(os.environ["LR"])
    name = f"{os.environ['RUN']}_model"
    base = keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
    model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="binary_crossentropy")
    model.fit(train_ds, epochs=3)
    """
    report = read(tmp_path, text)
    assert [f.lr for f in report.facts.fits] == [None]
    assert "finetune_lr_high" not in found(report)
    assert "finetune_lr_high" in asked(report)
    assert any("f-string" in n and "line 4" in n for n in report.notes)


def test_latest_assignment_per_scope(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    lr = 1e-2
    base = keras.applications.VGG16(weights="imagenet", include_top=False, pooling="avg")
    model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])

    def train_phase(model, epochs):
        lr = 1e-6
        model.compile(keras.optimizers.SGD(learning_rate=lr), "categorical_crossentropy")
        model.fit(train_ds, epochs=epochs)

    model.compile(keras.optimizers.SGD(learning_rate=lr, momentum=0.9), "categorical_crossentropy")
    lr = 5.0
    model.fit(train_ds, epochs=2)
    train_phase(model, 4)
    """
    fits = read(tmp_path, text).facts.fits
    assert [(f.line, f.epochs, f.lr) for f in fits] == [(13, 2, 1e-2), (9, 4, 1e-6)]


# --- 5. input_scaling ---------------------------------------------------------------------------
SCALING = """
from tensorflow import keras
from tensorflow.keras.preprocessing.image import ImageDataGenerator
{imports}
gen = ImageDataGenerator({gen})
train = gen.flow_from_directory("data/train", target_size=(224, 224))
base = keras.applications.{backbone}(weights="imagenet", include_top=False)
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = {pre}
x = base(x, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", ["accuracy"])
model.fit(train, epochs=5)
"""
RESNET_PRE = "from tensorflow.keras.applications.resnet50 import preprocess_input"
MOBILE_PRE = "from tensorflow.keras.applications.mobilenet_v2 import preprocess_input"


@pytest.mark.parametrize(
    ("backbone", "gen", "imports", "pre", "expected", "line"),
    [
        ("ResNet50", "rescale=1./255", "", "inputs", "high", 4),
        ("ResNet50", "preprocessing_function=preprocess_input", RESNET_PRE, "inputs", None, 0),
        ("ResNet50", "preprocessing_function=preprocess_input", MOBILE_PRE, "inputs", "high", 4),
        ("ResNet50", "", "", "inputs", "high", 5),  # raw RGB: wrong in order and mean
        (
            "ResNet50",
            "preprocessing_function=preprocess_input, rescale=1/255.",
            RESNET_PRE,
            "inputs",
            "high",
            4,
        ),
        (
            "ResNet50",
            "preprocessing_function=preprocess_input",
            RESNET_PRE,
            "keras.applications.resnet50.preprocess_input(inputs)",
            "high",
            4,
        ),  # twice
        ("MobileNetV2", "", "", "keras.layers.Rescaling(1/127.5, offset=-1)(inputs)", None, 0),
        ("MobileNet", "", "", "keras.layers.Rescaling(1./255)(inputs)", "high", 9),
        ("EfficientNetB0", "rescale=1./255", "", "inputs", "high", 4),  # a black image
        ("EfficientNetB0", "", "", "inputs", None, 0),
        ("ConvNeXtTiny", "", "", "keras.layers.Rescaling(1./255)(inputs)", "high", 9),
        ("DenseNet121", "rescale=1./255", "", "inputs", "high", 4),
        ("Xception", "", "", "keras.applications.xception.preprocess_input(inputs)", None, 0),
    ],
)
def test_input_scaling_by_backbone(
    tmp_path: Path, backbone: str, gen: str, imports: str, pre: str, expected: str | None, line: int
) -> None:
    text = SCALING.format(backbone=backbone, gen=gen, imports=imports, pre=pre)
    f = found(read(tmp_path, text)).get("input_scaling")
    assert (f.severity if f else None) == expected
    if f:
        assert f.numbers["line"] == line


def test_display_code_is_not_preprocessing(tmp_path: Path) -> None:
    text = """
    import cv2
    import matplotlib.pyplot as plt
    from tensorflow import keras
    train_ds = keras.utils.image_dataset_from_directory("data", validation_split=0.2,
                                                        subset="training", seed=1)
    for images, labels in train_ds.take(1):
        plt.imshow(images[0] / 255.)
        cv2.imshow("x", images[1].numpy() / 255.0)
    base = keras.applications.MobileNetV2(weights="imagenet", include_top=False)
    base.trainable = False
    inputs = keras.Input((256, 256, 3))
    x = keras.layers.Rescaling(1/127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=False))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_ds, epochs=5)
    """
    assert found(read(tmp_path, text)) == {}


ARRAYS = """
import cv2, glob
import numpy as np
from sklearn.model_selection import train_test_split
from tensorflow import keras
images, labels = [], []
for path in glob.glob("data/cells/*/*.png"):
    img = cv2.imread(path)
    {convert}
    images.append(cv2.resize(img, (224, 224)))
    labels.append(0)
X = np.array(images)
{scale}
X_train, X_val, y_train, y_val = train_test_split(X, np.array(labels), test_size=0.2)
base = keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
model.fit(X_train, y_train, validation_data=(X_val, y_val), epochs=5)
"""


@pytest.mark.parametrize(
    ("convert", "scale", "expected", "words"),
    [
        ("", "X = X / 255.0", "high", "0..1"),
        ("", "X = (X - X.mean()) / X.std()", None, ""),  # standardised, not raw
        ("", "", "medium", "channel order happens to match"),  # cv2 BGR, no mean subtraction
        ("img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)", "", "high", "channel order"),
        (
            "img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)",
            "X = keras.applications.resnet50.preprocess_input(X)",
            None,
            "",
        ),
        ("", "X = keras.applications.resnet50.preprocess_input(X)", "medium", "swapped"),
    ],
)
def test_input_scaling_of_arrays(
    tmp_path: Path, convert: str, scale: str, expected: str | None, words: str
) -> None:
    report = read(tmp_path, ARRAYS.format(convert=convert, scale=scale))
    f = found(report).get("input_scaling")
    assert (f.severity if f else None) == expected
    if f:
        assert words in f.evidence
    assert report.facts.pipeline == "in_memory"


def test_the_backbone_is_followed_when_wrapped(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    train = ImageDataGenerator(rescale=1./255).flow_from_directory("data/train")
    full = keras.applications.ResNet50(weights="imagenet", include_top=False)
    trunk = keras.Model(full.input, full.get_layer("conv4_block6_out").output)
    trunk.trainable = False
    model = keras.Sequential([trunk, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    model.fit(train, epochs=3)
    """
    f = found(read(tmp_path, text))["input_scaling"]
    assert f.numbers["line"] == 3 and "ResNet50" in f.title


def test_tf_hub_layers_expect_0_1(tmp_path: Path) -> None:
    text = """
    import tensorflow as tf
    import tensorflow_hub as hub
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    train = ImageDataGenerator({gen}).flow_from_directory("data/train", target_size=(224, 224))
    url = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5"
    model = tf.keras.Sequential([hub.KerasLayer(url, input_shape=(224, 224, 3)),
                                 tf.keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    model.fit(train, epochs=5)
    """
    assert found(read(tmp_path, text.format(gen="rescale=1./255"))) == {}
    f = found(read(tmp_path, text.format(gen="")))["input_scaling"]
    assert "0..1" in f.evidence
    assert read(tmp_path, text.format(gen="")).facts.family == "mobilenet_v2"


TORCH_TF = """
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms
tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor(){norm}])
train = DataLoader(datasets.ImageFolder("data/blood_cells/train", tf), batch_size=32, shuffle=True)
model = models.resnet18(weights={weights})
model.fc = torch.nn.Linear(model.fc.in_features, 8)
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
for epoch in range(10):
    for x, y in train:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
"""


def test_torchvision_totensor_without_normalize(tmp_path: Path) -> None:
    report = read(tmp_path, TORCH_TF.format(norm="", weights='"IMAGENET1K_V1"'))
    f = found(report)["input_scaling"]
    assert f.severity == "medium" and "Normalize" in f.fix and f.numbers["line"] == 4
    assert "framework_fix" in f.numbers and report.framework == "pytorch"
    assert report.facts.classes == 8 and report.facts.pretrained is True
    norm = ", transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])"
    assert "input_scaling" not in found(
        read(tmp_path, TORCH_TF.format(norm=norm, weights='"DEFAULT"'))
    )
    scratch = read(tmp_path, TORCH_TF.format(norm="", weights="None"))
    assert "input_scaling" not in found(scratch) and scratch.facts.pretrained is False


def test_from_scratch_models_have_no_input_scaling(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    from tensorflow.keras import layers
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    train = ImageDataGenerator(rescale=1./255).flow_from_directory("data/train")
    model = keras.Sequential([
        layers.Conv2D(32, 3, activation="relu", input_shape=(150, 150, 3)),
        layers.MaxPooling2D(), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    model.fit(train, epochs=10)
    """
    report = read(tmp_path, text)
    assert found(report) == {} and report.facts.pretrained is False
    assert report.facts.fits[0].body == "all" and report.facts.backbone is None
    command, note = medfit_command(report)
    assert "--model" not in command and "from scratch" in note


# --- 6. bn_training_mode ------------------------------------------------------------------------
BN = """
from tensorflow import keras
from tensorflow.keras.applications.mobilenet_v2 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator
gen = ImageDataGenerator(preprocessing_function=preprocess_input)
train = gen.flow_from_directory("data/train", target_size=(224, 224), batch_size={batch})
base = keras.applications.MobileNetV2(weights="imagenet", include_top=False, pooling="avg")
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(3, activation="softmax")])
model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", ["accuracy"])
model.fit(train, epochs=3)
{unfreeze}
model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy", ["accuracy"])
model.fit(train, epochs=10)
"""
SET_TRAINABLE = """base.trainable = True
set_trainable = False
for layer in base.layers:
    if layer.name == "block_16_expand":
        set_trainable = True
    if set_trainable:
        layer.trainable = True
    else:
        layer.trainable = False"""


@pytest.mark.parametrize(
    ("unfreeze", "line", "body"),
    [
        ("base.trainable = True", 11, "all"),
        ("model.layers[0].trainable = True", 11, "all"),
        (
            "base.trainable = True\nfor layer in base.layers[:-50]:\n    layer.trainable = False",
            11,
            "partial",
        ),
        (SET_TRAINABLE, 17, "partial"),
        ("def unfreeze(m):\n    m.layers[0].trainable = True\nunfreeze(model)", 12, "all"),
    ],
)
def test_bn_training_mode_fires_where_the_base_is_made_trainable(
    tmp_path: Path, unfreeze: str, line: int, body: str
) -> None:
    report = read(tmp_path, BN.format(batch=32, unfreeze=unfreeze))
    f = found(report)["bn_training_mode"]
    assert f.numbers["line"] == line and f.severity == "high"
    assert "block_16" in f.fix  # MobileNetV2's stage names
    assert "Sequential" in f.evidence and "batch" not in f.evidence
    assert [fc.body for fc in report.facts.fits] == ["frozen", body]
    assert report.facts.fits[1].bn_inference is False


@pytest.mark.parametrize(
    "unfreeze",
    [
        "pass",  # the base stays frozen
        "base.trainable = True\nfor layer in base.layers:\n"
        "    if isinstance(layer, keras.layers.BatchNormalization):\n"
        "        layer.trainable = False",
    ],
)
def test_bn_training_mode_silent_when_bn_stays_in_inference(tmp_path: Path, unfreeze: str) -> None:
    report = read(tmp_path, BN.format(batch=32, unfreeze=unfreeze))
    assert "bn_training_mode" not in found(report)


def test_unfreezing_under_a_frozen_container_is_noted(tmp_path: Path) -> None:
    unfreeze = "for layer in base.layers[-20:]:\n    layer.trainable = True"
    report = read(tmp_path, BN.format(batch=32, unfreeze=unfreeze))
    assert [f.body for f in report.facts.fits] == ["frozen", "frozen"]
    assert any("Keras keeps them frozen" in n for n in report.notes)
    # ... but a BatchNormalization layer takes its mode from its own `trainable` flag: the
    # flagged BN layers normalise with batch statistics during the second fit
    f = found(report)["bn_training_mode"]
    assert f.numbers["trainable"] == "bn_only" and f.numbers["fit_line"] == 14
    assert "own flag" in f.evidence and "base.layers[-20:]" in f.evidence


def test_small_batch_makes_bn_worse_and_says_so(tmp_path: Path) -> None:
    f = found(read(tmp_path, BN.format(batch=8, unfreeze="base.trainable = True")))
    assert "batch 8" in f["bn_training_mode"].evidence


def test_training_without_recompiling_keeps_the_compiled_state(tmp_path: Path) -> None:
    # Keras builds the train function at the first fit after compile(): trainable changes
    # after that take effect only with a new compile()
    text = BN.format(batch=32, unfreeze="base.trainable = True").replace(
        'model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy", ["accuracy"])\n', ""
    )
    report = read(tmp_path, text)
    assert [f.body for f in report.facts.fits] == ["frozen", "frozen"]
    assert "bn_training_mode" not in found(report)
    assert any("since the last compile()" in n for n in report.notes)


TORCH_BN = """
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms
tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
loader = DataLoader(datasets.ImageFolder("data/oct/train", transform=tf), batch_size={batch})
model = models.densenet121(pretrained=True)
for p in model.features.parameters():
    p.requires_grad = False
for p in model.features.denseblock4.parameters():
    p.requires_grad = True
model.classifier = torch.nn.Linear(1024, 4)
opt = torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-5)
def train_one_epoch(model, loader, opt):
    model.train()
    {bn}
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
for epoch in range(15):
    train_one_epoch(model, loader, opt)
"""
BN_EVAL = (
    "for m in model.modules():\n"
    "        if isinstance(m, torch.nn.BatchNorm2d):\n"
    "            m.eval()"
)


@pytest.mark.parametrize(
    ("batch", "bn", "fires"), [(8, "", True), (32, "", False), (8, BN_EVAL, False)]
)
def test_pytorch_bn_only_with_a_small_batch(
    tmp_path: Path, batch: int, bn: str, fires: bool
) -> None:
    report = read(tmp_path, TORCH_BN.format(batch=batch, bn=bn))
    fit_line = 21 + bn.count("\n")
    assert [(f.line, f.epochs, f.body, f.lr) for f in report.facts.fits] == [
        (fit_line, 15, "partial", 1e-5)
    ]
    f = found(report).get("bn_training_mode")
    assert bool(f) == fires
    if f:
        assert f.numbers["line"] == 11 and "denseblock4" in f.fix and "batch 8" in f.evidence
    assert "finetune_lr_high" not in found(report)
    assert report.facts.classes == 4


# --- 7. finetune_lr_high ------------------------------------------------------------------------
LR = """
from tensorflow import keras
from tensorflow.keras.applications.resnet50 import preprocess_input as pre
train = keras.utils.image_dataset_from_directory("data/train").map(lambda x, y: (pre(x), y))
base = keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
inputs = keras.Input((256, 256, 3))
model = keras.Model(inputs, keras.layers.Dense(3)(base(inputs, training=False)))
{phases}
"""
HEAD = (
    "base.trainable = False\n"
    "model.compile(keras.optimizers.Adam(1e-3), 'sparse_categorical_crossentropy')\n"
    "model.fit(train, epochs=3)\n"
    "base.trainable = True\n"
)


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (
            "model.compile('adam', 'sparse_categorical_crossentropy')\nmodel.fit(train, epochs=5)",
            "high",
        ),
        ("model.compile(keras.optimizers.Adam(1e-4), 'mse')\nmodel.fit(train, epochs=5)", "high"),
        ("model.compile(keras.optimizers.Adam(5e-5), 'mse')\nmodel.fit(train, epochs=5)", None),
        ("model.compile(keras.optimizers.SGD(0.01), 'mse')\nmodel.fit(train, epochs=5)", "high"),
        (
            "model.compile(keras.optimizers.SGD(1e-3, momentum=0.9), 'mse')\nmodel.fit(train)",
            "high",
        ),
        ("model.compile(keras.optimizers.SGD(1e-3), 'mse')\nmodel.fit(train, epochs=5)", None),
        (HEAD + "model.compile(keras.optimizers.Adam(1e-3), 'mse')\nmodel.fit(train)", "medium"),
        (HEAD + "model.compile(keras.optimizers.Adam(1e-4), 'mse')\nmodel.fit(train)", None),
        (
            HEAD
            + "model.compile(keras.optimizers.SGD(1e-3, momentum=0.9), 'mse')\nmodel.fit(train)",
            None,
        ),
        (HEAD.replace("base.trainable = True\n", ""), None),  # only the head stage
    ],
)
def test_finetune_lr_thresholds(tmp_path: Path, phases: str, expected: str | None) -> None:
    report = read(tmp_path, LR.format(phases=phases))
    f = found(report).get("finetune_lr_high")
    assert (f.severity if f else None) == expected
    assert "bn_training_mode" not in found(report)  # training=False
    if "'adam'" in phases:
        assert f is not None and "Keras default" in f.evidence


ULTRA = """
from ultralytics import YOLO
model = YOLO("yolov8n-cls.pt")
model.train(data="datasets/chest_xray", epochs=30, imgsz=224{kw})
"""


def test_ultralytics_auto_optimizer_is_asked_not_asserted(tmp_path: Path) -> None:
    report = read(tmp_path, ULTRA.format(kw=", lr0=0.01"))
    assert report.framework == "ultralytics"
    assert "finetune_lr_high" not in found(report) and "finetune_lr_high" in asked(report)
    assert "input_scaling" not in found(report) and "bn_training_mode" not in found(report)
    assert (report.facts.backbone, report.facts.family, report.facts.img_size) == (
        "yolov8n-cls",
        "yolo",
        224,
    )
    sgd = read(tmp_path, ULTRA.format(kw=", optimizer='SGD'"))
    assert found(sgd)["finetune_lr_high"].numbers["lr"] == 0.01  # Ultralytics' default lr0
    assert "finetune_lr_high" not in found(
        read(tmp_path, ULTRA.format(kw=", optimizer='AdamW', lr0=5e-5"))
    )
    command, note = medfit_command(report)
    assert "--model" not in command and "Ultralytics" in note


def test_hf_trainer_lr(tmp_path: Path) -> None:
    text = """
    from transformers import AutoModelForImageClassification, Trainer, TrainingArguments
    name = "google/vit-base-patch16-224-in21k"
    model = AutoModelForImageClassification.from_pretrained(name, num_labels=3)
    args = TrainingArguments("out", {lr}per_device_train_batch_size=4, num_train_epochs=5)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds)
    trainer.train()
    """
    default = read(tmp_path, text.format(lr=""))
    assert default.framework == "hf" and [f.lr for f in default.facts.fits] == [5e-5]
    assert default.facts.timm_name == "vit_base_patch16_224" and default.facts.classes == 3
    assert found(default) == {}  # no BatchNorm in a ViT, HF preprocessing built in
    high = read(tmp_path, text.format(lr="learning_rate=2e-3, "))
    assert found(high)["finetune_lr_high"].severity == "high"


def test_fastai_recipes(tmp_path: Path) -> None:
    text = (
        "from fastai.vision.all import *\n"
        'dls = ImageDataLoaders.from_folder("data/histo", valid_pct=0.2, bs=64,\n'
        "                                   batch_tfms=aug_transforms(flip_vert=True))\n"
        "learn = vision_learner(dls, resnet34, metrics=accuracy)\n"
        "{fit}\n"
    )
    tuned = read(tmp_path, text.format(fit="learn.fine_tune(5)"))
    assert tuned.framework == "fastai" and tuned.facts.timm_name == "resnet34"
    assert found(tuned) == {}  # fastai's fine_tune recipe, histology: flips are fine
    manual = read(
        tmp_path,
        text.format(fit="learn.fit_one_cycle(2)\nlearn.unfreeze()\nlearn.fit_one_cycle(5, 3e-3)"),
    )
    assert [f.body for f in manual.facts.fits] == ["frozen", "all"]
    assert found(manual)["finetune_lr_high"].severity == "medium"


# --- 8. aug_label_destroying ----------------------------------------------------------------------
AUG = """
from tensorflow import keras
from tensorflow.keras.applications.resnet50 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator
train_gen = ImageDataGenerator(preprocessing_function=preprocess_input, {aug})
val_gen = ImageDataGenerator(preprocessing_function=preprocess_input{val_aug})
train = train_gen.flow_from_directory("{root}/train", target_size=(224, 224))
val = val_gen.flow_from_directory("{root}/val", target_size=(224, 224))
base = keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", ["accuracy"])
model.fit(train, validation_data=val, epochs=5)
"""


@pytest.mark.parametrize(
    ("aug", "root", "grayscale", "expected"),
    [
        ("horizontal_flip=True", "data/chest_xray", None, "finding"),  # the heart side
        ("horizontal_flip=True", "data/brain_tumor_mri", None, None),
        ("rotation_range=90", "data/brain_tumor_mri", None, "finding"),
        ("rotation_range=15", "data/chest_xray", None, None),
        ("rotation_range=20, vertical_flip=True", "data/malaria_cells", None, None),
        ("vertical_flip=True", "data/images", None, "question"),
        ("vertical_flip=True", "data/images", True, "finding"),
        ("vertical_flip=True", "data/images", False, None),
        ("horizontal_flip=True", "data/images", True, "question"),  # chest X-rays?
        ("horizontal_flip=True", "data/images", None, None),
    ],
)
def test_aug_label_destroying_by_modality(
    tmp_path: Path, aug: str, root: str, grayscale: bool | None, expected: str | None
) -> None:
    report = read(tmp_path, AUG.format(aug=aug, root=root, val_aug=""), grayscale=grayscale)
    got = "finding" if "aug_label_destroying" in found(report) else None
    got = got or ("question" if "aug_label_destroying" in asked(report) else None)
    assert got == expected
    if got == "finding":
        assert found(report)["aug_label_destroying"].numbers["line"] == 4


def test_notebook_words_in_comments_do_not_make_it_microscopy(tmp_path: Path) -> None:
    text = "# run this cell first, then the next cell\n" + AUG.format(
        aug="horizontal_flip=True", root="data/chest_xray", val_aug=""
    )
    assert "aug_label_destroying" in found(read(tmp_path, text))
    skin = read(tmp_path, text.replace("# run this cell first", "# dermoscopy of skin lesions"))
    assert "aug_label_destroying" not in found(skin)  # chest path and skin words: not sure


def test_only_the_training_pipeline_counts_for_augmentation(tmp_path: Path) -> None:
    text = AUG.format(
        aug="rotation_range=10", root="data/chest_xray", val_aug=", vertical_flip=True"
    )
    report = read(tmp_path, text)
    assert "aug_label_destroying" not in found(report)
    f = found(report)["val_augmented"]
    assert f.numbers["line"] == 5 and f.severity == "high"


LAYERS = """
from tensorflow import keras
from tensorflow.keras import layers
augment = keras.Sequential([{aug}])
train = keras.utils.image_dataset_from_directory("data/{root}/train", image_size=(224, 224))
val = keras.utils.image_dataset_from_directory("data/{root}/val", image_size=(224, 224))
base = keras.applications.EfficientNetB0(weights="imagenet", include_top=False, pooling="avg")
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(augment(inputs), training=False)
model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
model.fit(train, validation_data=val, epochs=5)
"""


@pytest.mark.parametrize(
    ("aug", "root", "fires"),
    [
        ("layers.RandomRotation(0.2)", "covid_xray", True),  # 0.2 of a turn: 72 degrees
        ("layers.RandomRotation(0.05)", "covid_xray", False),  # 18 degrees
        ('layers.RandomFlip("horizontal")', "chest_xray", True),
        ("layers.RandomFlip()", "brain_mri", True),  # default: horizontal and vertical
        ('layers.RandomFlip("horizontal")', "brain_mri", False),
    ],
)
def test_keras_augmentation_layers(tmp_path: Path, aug: str, root: str, fires: bool) -> None:
    report = read(tmp_path, LAYERS.format(aug=aug, root=root))
    assert ("aug_label_destroying" in found(report)) == fires
    assert "val_augmented" not in found(report)  # layers in the model are off at inference
    assert "input_scaling" not in found(report)  # EfficientNet takes raw 0-255


def test_torchvision_and_albumentations_augmentation(tmp_path: Path) -> None:
    text = """
    import torch
    import albumentations as A
    from torchvision import datasets, models, transforms
    tv = transforms.Compose([transforms.RandomVerticalFlip(), transforms.RandomRotation(45),
                             transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    ds = datasets.ImageFolder("data/{root}/train", transform=tv)
    loader = torch.utils.data.DataLoader(ds, batch_size=32)
    model = models.resnet50(pretrained=True)
    opt = torch.optim.Adam(model.fc.parameters(), lr=1e-3)
    for epoch in range(5):
        for x, y in loader:
            opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
    """
    fundus = read(tmp_path, text.format(root="fundus_glaucoma"))
    f = found(fundus)["aug_label_destroying"]
    assert f.numbers["line"] == 4 and "RandomRotation(45)" in f.evidence
    assert "aug_label_destroying" not in found(
        read(tmp_path, text.format(root="isic_skin_lesions"))
    )


ALBU = """
import cv2, torch
import albumentations as A
from albumentations.pytorch import ToTensorV2
import segmentation_models_pytorch
aug = A.Compose([A.RandomRotate90(), A.HorizontalFlip(p=0.5), A.Normalize(), ToTensorV2()])
class Slices(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, i):
        img = cv2.cvtColor(cv2.imread(self.paths[i]), cv2.COLOR_BGR2RGB)
        return self.transform(image=img)["image"], 0
loader = torch.utils.data.DataLoader(Slices(paths, aug), batch_size=16, num_workers=4)
model = timm.create_model("efficientnet_b0", pretrained=True, num_classes=2)
opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
for epoch in range(5):
    for x, y in loader:
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
"""


@pytest.mark.parametrize(
    ("words", "fires"), [("# CT slices of the lung", True), ("# skin lesions", False)]
)
def test_albumentations_in_a_dataset_class(tmp_path: Path, words: str, fires: bool) -> None:
    report = read(tmp_path, words + ALBU)
    assert ("aug_label_destroying" in found(report)) == fires
    assert "input_scaling" not in found(report)  # A.Normalize: ImageNet mean/std on 0-255
    assert [(f.epochs, f.lr, f.body) for f in report.facts.fits] == [(5, 3e-5, "all")]


def test_ultralytics_default_horizontal_flips(tmp_path: Path) -> None:
    f = found(read(tmp_path, ULTRA.format(kw="")))["aug_label_destroying"]
    assert "fliplr=0.5 (Ultralytics' default)" in f.evidence
    assert "aug_label_destroying" not in found(read(tmp_path, ULTRA.format(kw=", fliplr=0.0")))


# --- 9/10. val_augmented, and which flow is which -----------------------------------------------
SHARED = """
from tensorflow import keras
from tensorflow.keras.applications.mobilenet_v2 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator
gen = ImageDataGenerator(preprocessing_function=preprocess_input, validation_split=0.2{aug})
train_flow = gen.flow_from_directory("data/pneumonia", subset="training", target_size=(224, 224))
val_flow = gen.flow_from_directory("data/pneumonia", subset="validation", shuffle=False)
base = keras.applications.MobileNetV2(weights="imagenet", include_top=False, pooling="avg")
base.trainable = False
model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "categorical_crossentropy", ["accuracy"])
model.fit(train_flow, validation_data=val_flow, epochs=5)
"""


def test_subset_training_is_the_training_flow(tmp_path: Path) -> None:
    report = read(tmp_path, SHARED.format(aug=""))
    assert found(report) == {}
    assert report.facts.data_dirs == {"train": "data/pneumonia", "val": "data/pneumonia"}
    assert report.facts.val_source == "train_split"
    assert "leakage" in asked(report)  # image-level split of a folder: patients unknown
    command, _ = medfit_command(report)
    assert command.split()[2] == "data/pneumonia"


def test_a_shared_augmenting_generator_augments_the_validation_subset(tmp_path: Path) -> None:
    report = read(tmp_path, SHARED.format(aug=", rotation_range=40"))
    f = found(report)
    assert f["val_augmented"].numbers["line"] == 4
    assert "same ImageDataGenerator" in f["val_augmented"].evidence
    assert f["aug_label_destroying"].numbers["line"] == 4  # pneumonia: chest X-rays, 40 degrees


def test_validation_arrays_split_in_fit_are_not_augmented(tmp_path: Path) -> None:
    text = """
    import numpy as np
    from tensorflow import keras
    x = np.load("x.npy") / 255.0
    model = keras.Sequential([keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, validation_split=0.1, epochs=5, batch_size=64)
    """
    report = read(tmp_path, text)
    assert found(report) == {} and report.facts.val_source == "train_split"
    assert report.facts.pipeline == "in_memory" and report.facts.pretrained is False


# --- 11. small_val ------------------------------------------------------------------------------
CXR = """
import os
os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
import tensorflow as tf
from tensorflow.keras.applications import DenseNet121
from tensorflow.keras.preprocessing.image import ImageDataGenerator
from tensorflow.keras.callbacks import EarlyStopping, ModelCheckpoint
base_dir = "C:\\\\data\\\\chest_xray"
train_datagen = ImageDataGenerator(rescale=1./255, rotation_range=15, zoom_range=0.1,
                                   horizontal_flip=True)
val_datagen = ImageDataGenerator(rescale=1./255)
train_generator = train_datagen.flow_from_directory(os.path.join(base_dir, "train"),
                                                    target_size=(224, 224), class_mode="binary")
val_generator = val_datagen.flow_from_directory(os.path.join(base_dir, "{val}"),
                                                target_size=(224, 224), class_mode="binary")
test_generator = val_datagen.flow_from_directory(os.path.join(base_dir, "test"),
                                                 target_size=(224, 224), class_mode="binary")
base_model = DenseNet121(weights="imagenet", include_top=False, input_shape=(224, 224, 3))
base_model.trainable = False
model = tf.keras.Sequential([base_model, tf.keras.layers.GlobalAveragePooling2D(),
                             tf.keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="binary_crossentropy",
              metrics=["accuracy"])
callbacks = [EarlyStopping(monitor="val_loss", patience=3),
             ModelCheckpoint("best.h5", monitor="val_accuracy", save_best_only=True)]
model.fit(train_generator, validation_data=val_generator, epochs=5, callbacks=callbacks)
base_model.trainable = True
for layer in base_model.layers[:-50]:
    layer.trainable = False
model.compile(optimizer=tf.keras.optimizers.Adam(1e-5), loss="binary_crossentropy",
              metrics=["accuracy"])
model.fit(train_generator, validation_data=val_generator, epochs=10, initial_epoch=5,
          callbacks=callbacks)
model.evaluate(test_generator)
"""


def test_a_chest_xray_notebook_reads_like_a_senior_would(tmp_path: Path) -> None:
    report = read(tmp_path, CXR.format(val="val"))
    f = found(report)
    assert set(f) == {"input_scaling", "bn_training_mode", "aug_label_destroying", "small_val"}
    assert f["input_scaling"].numbers["line"] == 8
    assert f["input_scaling"].numbers["expected_mode"] == "torch"
    assert f["bn_training_mode"].numbers["line"] == 26  # made trainable, then [:-50] refrozen
    assert f["aug_label_destroying"].numbers["line"] == 9  # horizontal flips of chest X-rays
    assert f["small_val"].severity == "high" and f["small_val"].numbers["val_size"] == 16
    facts = report.facts
    assert facts.device == "cpu" and facts.val_size == 16 and facts.classes == 2
    assert facts.monitors == ["val_loss", "val_accuracy"] and facts.early_stopping
    assert [(x.line, x.epochs, x.initial_epoch, x.lr, x.body) for x in facts.fits] == [
        (25, 5, None, 1e-4, "frozen"),
        (31, 10, 5, 1e-5, "partial"),
    ]
    assert "input_bound" not in f  # CPU-only: compute bound
    command, _ = medfit_command(report)
    assert command.split()[2] == r"'C:\data\chest_xray'" and "--model densenet121" in command


def test_a_real_val_folder_is_not_small(tmp_path: Path) -> None:
    report = read(tmp_path, CXR.format(val="validation"))
    assert "small_val" not in found(report) and report.facts.val_size is None


def test_take_on_a_batched_val_set(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    ds = keras.utils.image_dataset_from_directory("data/train", batch_size=16)
    val = keras.utils.image_dataset_from_directory("data/val", batch_size=16).take(3)
    model = keras.Sequential([keras.layers.Rescaling(1./255), keras.layers.Conv2D(8, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(ds, validation_data=val, epochs=3)
    """
    report = read(tmp_path, text)
    assert found(report)["small_val"].numbers["val_size"] == 48 and report.facts.val_size == 48
    unknown = read(tmp_path, text.replace(".take(3)", ""))
    assert "small_val" not in found(unknown)


# --- 12. val_is_test ----------------------------------------------------------------------------
VAL_TEST = """
import numpy as np
from sklearn.model_selection import train_test_split
from tensorflow import keras
X = np.load("images.npy")
y = np.load("labels.npy")
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y)
model = keras.Sequential([keras.layers.Conv2D(16, 3), keras.layers.Flatten(),
                          keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "categorical_crossentropy", ["accuracy"])
ckpt = keras.callbacks.ModelCheckpoint("best.keras", monitor="val_accuracy", save_best_only=True)
model.fit(X_train, y_train, validation_data=(X_test, y_test), epochs=30, callbacks=[{cbs}])
loss, acc = model.evaluate({eval_on})
print("test accuracy", acc)
"""


@pytest.mark.parametrize(
    ("cbs", "eval_on", "expected"),
    [
        ("ckpt", "X_test, y_test", "high"),
        ("", "X_test, y_test", "medium"),
        ("ckpt", "X_train, y_train", "medium"),
        ("", "X_train, y_train", None),
    ],
)
def test_val_is_test(tmp_path: Path, cbs: str, eval_on: str, expected: str | None) -> None:
    report = read(tmp_path, VAL_TEST.format(cbs=cbs, eval_on=eval_on))
    f = found(report).get("val_is_test")
    assert (f.severity if f else None) == expected
    assert report.facts.val_source == "test"
    assert "leakage" not in found(report)


def test_a_separate_val_split_is_not_val_is_test(tmp_path: Path) -> None:
    text = VAL_TEST.format(cbs="ckpt", eval_on="X_test, y_test").replace(
        "model.fit(X_train, y_train, validation_data=(X_test, y_test)",
        "X_tr, X_val, y_tr, y_val = train_test_split(X_train, y_train, test_size=0.1)\n"
        "model.fit(X_tr, y_tr, validation_data=(X_val, y_val)",
    )
    report = read(tmp_path, text)
    assert "val_is_test" not in found(report) and report.facts.val_source == "train_split"


# --- 13. metric_mismatch --------------------------------------------------------------------------
METRIC = """
from tensorflow import keras
model = keras.Sequential([keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                          keras.layers.Dense({units}, activation="softmax")])
model.compile("adam", "{loss}", metrics={metrics})
model.fit(train_ds, validation_data=val_ds, epochs=5{cw})
"""


@pytest.mark.parametrize(
    ("units", "loss", "metrics", "cw", "expected"),
    [
        (4, "categorical_crossentropy", "['accuracy']", ", class_weight=cw", "medium"),
        (
            4,
            "categorical_crossentropy",
            "['accuracy', keras.metrics.AUC()]",
            ", class_weight=cw",
            None,
        ),
        (4, "categorical_crossentropy", "['binary_accuracy']", "", "high"),
        (4, "binary_crossentropy", "['accuracy']", "", "high"),  # Keras picks binary_accuracy
        (2, "binary_crossentropy", "['accuracy']", "", None),
        (4, "categorical_crossentropy", "['accuracy']", "", None),
    ],
)
def test_metric_mismatch(
    tmp_path: Path, units: int, loss: str, metrics: str, cw: str, expected: str | None
) -> None:
    text = METRIC.format(units=units, loss=loss, metrics=metrics, cw=cw)
    f = found(read(tmp_path, text)).get("metric_mismatch")
    assert (f.severity if f else None) == expected


# --- 16. class_imbalance ------------------------------------------------------------------------
IMBALANCE = """
from tensorflow import keras
# train: 1341 NORMAL / 3875 PNEUMONIA
class_counts = {counts}
model = keras.Sequential([keras.layers.Conv2D(8, 3), keras.layers.Flatten(),
                          keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "categorical_crossentropy", metrics=["accuracy", keras.metrics.AUC()])
model.fit(train_ds, epochs=5{cw})
"""


@pytest.mark.parametrize(
    ("counts", "cw", "fires"),
    [
        ('{"NORMAL": 1341, "PNEUMONIA": 3875}', "", True),
        ('{"NORMAL": 1341, "PNEUMONIA": 3875}', ", class_weight={0: 2.0, 1: 0.7}", False),
        ('{"NORMAL": 1300, "PNEUMONIA": 1500}', "", False),
        ("None", "", False),  # counts only in a comment
        ('{"train": 5216, "val": 16, "test": 624}', "", False),  # split sizes, not classes
        ('{"NORMAL": 1341, "PNEUMONIA": 3875, "COVID": 500}', "", False),  # 3 keys, 2 outputs
    ],
)
def test_class_imbalance(tmp_path: Path, counts: str, cw: str, fires: bool) -> None:
    report = read(tmp_path, IMBALANCE.format(counts=counts, cw=cw))
    f = found(report).get("class_imbalance")
    assert bool(f) == fires
    if f:
        assert f.numbers["line"] == 3 and f.numbers["ratio"] == pytest.approx(2.89, abs=0.01)


# --- 15. leakage --------------------------------------------------------------------------------
LEAK = """
import os, glob
import numpy as np
from sklearn.model_selection import train_test_split
from imblearn.over_sampling import SMOTE
from tensorflow.keras.preprocessing.image import ImageDataGenerator, load_img, img_to_array
images, labels = [], []
for split in ["Training", "Testing"]:
    for path in glob.glob(os.path.join("data/brain_mri", split, "*", "*.jpg")):
        images.append(img_to_array(load_img(path, target_size=(224, 224))))
        labels.append(path.split(os.sep)[-2])
X, y = np.array(images), np.array(labels)
{before}
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2)
model.fit(X_train, y_train, validation_data=(X_val, y_val), epochs=5)
"""


@pytest.mark.parametrize(
    ("before", "line", "words"),
    [
        ("X, y = SMOTE().fit_resample(X.reshape(len(X), -1), y)", 13, "oversampling at line 12"),
        (
            "gen = ImageDataGenerator(rotation_range=20)\n"
            "X = np.concatenate([X, gen.random_transform(X[0])])",
            14,
            "augmented copies",
        ),
        ("", 13, "Training"),  # the published train and test folders pooled
        (
            "copies = []\n"
            "for i, (xb, yb) in enumerate(ImageDataGenerator(vertical_flip=True).flow(X, y)):\n"
            "    copies.append(xb)\n"
            "X = np.concatenate([X, np.concatenate(copies)])",
            16,
            "augmented copies at line 13",
        ),
    ],
)
def test_leakage(tmp_path: Path, before: str, line: int, words: str) -> None:
    f = found(read(tmp_path, LEAK.format(before=before)))["leakage"]
    assert f.numbers["line"] == line and words in f.evidence


def test_pooling_only_the_training_folder_is_not_leakage_but_asks(tmp_path: Path) -> None:
    report = read(
        tmp_path, LEAK.format(before="").replace('["Training", "Testing"]', '["Training"]')
    )
    assert "leakage" not in found(report) and "leakage" in asked(report)


def test_validation_split_of_a_per_patient_data_set(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    train = keras.utils.image_dataset_from_directory("input/chest_xray/train", validation_split=0.2,
                                                     subset="training", seed=42)
    val = keras.utils.image_dataset_from_directory("input/chest_xray/train", validation_split=0.2,
                                                   subset="validation", seed=42)
    model = keras.Sequential([keras.layers.Rescaling(1./255), keras.layers.Conv2D(8, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(train, validation_data=val, epochs=5)
    """
    f = found(read(tmp_path, text))["leakage"]
    assert "several images per patient" in f.evidence
    grouped = text.replace(
        "from tensorflow import keras",
        "from tensorflow import keras\n"
        "from sklearn.model_selection import GroupShuffleSplit\n"
        "splitter = GroupShuffleSplit(test_size=0.2)",
    )
    report = read(tmp_path, textwrap.dedent(grouped))
    assert "leakage" not in found(report) and "leakage" not in asked(report)


# --- 14. input_bound ----------------------------------------------------------------------------
BOUND = """
import tensorflow as tf
from tensorflow.keras.applications.resnet50 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator
{device}
gen = ImageDataGenerator(preprocessing_function=preprocess_input, rotation_range=10)
train = gen.flow_from_directory("data/train", target_size=(224, 224))
x_train = np.load("x.npy")
base = tf.keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
base.trainable = False
model = tf.keras.Sequential([base, tf.keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "categorical_crossentropy", ["accuracy"])
with tf.device("{where}"):
    model.fit({data}, epochs=5)
"""


@pytest.mark.parametrize(
    ("device", "where", "data", "fires"),
    [
        ("", "/GPU:0", "train", True),
        ("", "/CPU:0", "train", False),  # a CPU run is compute bound
        ("tf.config.set_visible_devices([], 'GPU')", "/GPU:0", "train", False),
        ("", "/GPU:0", "x_train, y_train", False),  # arrays in memory; the generator is unused
    ],
)
def test_input_bound_only_for_a_gpu_run_decoding_per_step(
    tmp_path: Path, device: str, where: str, data: str, fires: bool
) -> None:
    report = read(tmp_path, BOUND.format(device=device, where=where, data=data))
    # the pipeline is a suspect, not evidence: the script asks, the log's step times answer
    assert "input_bound" not in found(report)
    q = next((f for f in report.findings if f.numbers.get("about") == "input_bound"), None)
    assert bool(q) == fires
    if q:
        assert q.severity == "info" and q.numbers["line"] == 6
        assert report.facts.device == "gpu" and report.facts.pipeline == "per_step_decode"


def test_no_device_in_the_script_means_no_input_bound(tmp_path: Path) -> None:
    text = BOUND.format(device="", where="/GPU:0", data="train").replace(
        'with tf.device("/GPU:0"):\n    ', ""
    )
    report = read(tmp_path, text)
    assert "input_bound" not in {*found(report), *asked(report)} and report.facts.device is None
    assert report.facts.pipeline == "per_step_decode"  # for the lead, with the log's timings


# --- 17. advice by family and framework -----------------------------------------------------------
@pytest.mark.parametrize(
    ("backbone", "stage"),
    [
        ("ResNet50", "conv5_"),
        ("ResNet50V2", "post_"),
        ("DenseNet121", "conv5_block"),
        ("MobileNet", "conv_pw_13"),
        ("InceptionV3", "mixed9"),
        ("Xception", "block14"),
        ("EfficientNetB3", "block7"),
    ],
)
def test_bn_advice_names_the_family_stages(tmp_path: Path, backbone: str, stage: str) -> None:
    text = BN.format(batch=32, unfreeze="base.trainable = True").replace("MobileNetV2", backbone)
    f = found(read(tmp_path, text))["bn_training_mode"]
    assert stage in f.fix
    if backbone != "ResNet50":
        assert "conv5_)" not in f.fix and "half of a residual block" not in f.fix


def test_no_backbone_advice_for_a_from_scratch_cnn(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    model = keras.Sequential([keras.layers.Conv2D(32, 3, input_shape=(128, 128, 1)),
                              keras.layers.BatchNormalization(), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "categorical_crossentropy", ["accuracy"])
    model.fit(train_ds, epochs=50, batch_size=4)
    """
    report = read(tmp_path, text)
    assert found(report) == {} and report.facts.pretrained is False


# --- 18. the medfit command -----------------------------------------------------------------------
def test_medfit_command_resolves_kaggle_split_folders(tmp_path: Path) -> None:
    (tmp_path / "data" / "train" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "Validation" / "Validation" / "a").mkdir(parents=True)
    text = (
        AUG.format(aug="rotation_range=10", root="data", val_aug="")
        .replace('"data/train"', '"data/train/train"')
        .replace('"data/val"', '"data/Validation/Validation"')
    )
    report = read(tmp_path, text)
    command, note = medfit_command(report)
    assert command.split()[2] == str(tmp_path / "data")
    assert "--model resnet50" in command and "--img-size 224" in command
    assert "not found" not in note
    given, _ = medfit_command(report, "/elsewhere/data")
    assert given.split()[2] == "/elsewhere/data"


def test_every_backbone_maps_to_a_timm_model() -> None:
    timm = pytest.importorskip("timm")
    from medfit.diagnose.foreign.script.tables import APPLICATIONS, TORCHVISION

    twins = [a.timm for a in APPLICATIONS.values()] + [t for _, t in TORCHVISION.values()]
    assert [t for t in twins if t is not None and not timm.is_model(t)] == []


# --- guarantees ---------------------------------------------------------------------------------
EVIL = """
import os
os.system("touch {marker}")
def train():
    os.system("touch {marker}")
class Model:
    def fit(self):
        os.system("touch {marker}")
base = ResNet50(weights="imagenet", include_top=False)
gen = ImageDataGenerator(rescale=1./255,
                         preprocessing_function=lambda x: os.system("touch {marker}"))
train = gen.flow_from_directory("data/train", target_size=(64, 64))
opt = SGD(learning_rate=__import__("os").system("touch {marker}"))
model = Model()
model.compile(optimizer=opt)
model.fit(train, epochs=eval("os.system('touch {marker}')"))
exec(open("{marker}.py").read())
"""


def test_the_script_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    read(tmp_path, EVIL.format(marker=marker))
    assert not marker.exists()


def test_random_text_never_raises(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    pieces = [
        "model.fit(",
        "x = (x - m) / s\n",
        "for l in base.layers[:-",
        "def f(a, *b, **c):\n  return f(",
        "%%writefile a.yaml\n",
        "# %% cell 3\n",
        "lambda: (",
        "yaml.safe_load(open('a.yaml'))\n",
        "[[[[",
        "}}}",
        "class A(keras.Model):\n  def call(self, x):\n    return self(x)\n",
        "base.trainable = ",
        "ImageDataGenerator(**cfg)\n",
        "f'{x!r:>{w}}'\n",
        "'%0999999d' % 1\n",
        "10 ** 10 ** 10\n",
        "'x' * 10 ** 9\n",
        "get_ipython().run_cell_magic('writefile', 'c.yaml', '[' * 999)\n",
    ]
    for i in range(30):
        text = "".join(rng.choice(pieces) for _ in range(40))
        read(tmp_path, text, name=f"fuzz{i}.py")


def test_a_huge_broken_script_is_bounded(tmp_path: Path) -> None:
    text = "x = (\n" * 20000 + "model.fit(train, epochs=3)\n"
    t0 = time.perf_counter()
    report = read(tmp_path, text)
    assert time.perf_counter() - t0 < 3.0
    assert any("skipped" in n for n in report.notes)


def test_percent_formatting_is_not_a_line_magic(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    name = ("%s_%d"
            % ("run", 3))
    lr = 1e-3
    model = keras.Sequential([keras.applications.ResNet50(weights="imagenet", include_top=False,
                                                          pooling="avg"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(lr), "mse")
    model.fit(train_ds, epochs=2)
    """
    report = read(tmp_path, text)
    assert not any("skipped" in n for n in report.notes)
    assert [f.lr for f in report.facts.fits] == [1e-3]


def test_reads_are_fast(tmp_path: Path) -> None:
    big = "\n".join(
        GOOD_KERAS.replace("model", f"model{i}").replace("base", f"base{i}") for i in range(25)
    )
    t0 = time.perf_counter()
    report = read(tmp_path, big)
    assert time.perf_counter() - t0 < 1.5  # ~0.2 s on one core; a hang guard, not a benchmark
    assert len(report.facts.fits) == 50


def test_the_package_imports_no_torch_or_timm() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import medfit.diagnose.foreign.script"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.splitlines()}
    assert not modules & {"torch", "timm", "tensorflow", "keras", "yaml"}


PLATEAU = Path(__file__).parents[2] / "shared" / "fixtures" / "keras_plateau" / "train.py"


@pytest.mark.skipif(not PLATEAU.is_file(), reason="../shared/fixtures/keras_plateau is not present")
def test_the_posted_plateau_script(tmp_path: Path) -> None:
    report = read_script(PLATEAU)
    lines = {f.rule: f.numbers["line"] for f in report.findings if f.rule in KINDS}
    assert lines == {
        "input_scaling": 13,  # rescale=1./255 into ResNet50
        "bn_training_mode": 42,  # layers[30:] set trainable, inside a Sequential
        "finetune_lr_high": 58,  # SGD 0.01 momentum 0.9, no head stage
        "metric_mismatch": 61,  # class_weight with accuracy only
    }
    assert "aug_label_destroying" in asked(report)  # rotation 90 + vertical flips: what images?
    assert any("class_weights" in n for n in report.notes)  # elided in the post


TUTORIAL = """
import os, torch
import torch.nn as nn
import torch.optim as optim
from torch.optim import lr_scheduler
from torchvision import datasets, models, transforms as T

data_transforms = {
    "train": T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                        T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]),
    "val": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]),
}
data_dir = "data/chest_xray"
image_datasets = {x: datasets.ImageFolder(os.path.join(data_dir, x), data_transforms[x])
                  for x in ["train", "val"]}
dataloaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=4, shuffle=True,
                                              num_workers=4) for x in ["train", "val"]}
device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

def train_model(model, criterion, optimizer, scheduler, num_epochs=25):
    for epoch in range(num_epochs):
        for phase in ["train", "val"]:
            if phase == "train":
                model.train()
            else:
                model.eval()
            for inputs, labels in dataloaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    loss = criterion(model(inputs.to(device)), labels.to(device))
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
            if phase == "train":
                scheduler.step()
    return model

model_ft = models.resnet18(pretrained=True)
model_ft.fc = nn.Linear(model_ft.fc.in_features, 2)
model_ft = model_ft.to(device)
optimizer_ft = optim.SGD(model_ft.parameters(), lr=0.001, momentum=0.9)
exp_lr_scheduler = lr_scheduler.StepLR(optimizer_ft, step_size=7, gamma=0.1)
model_ft = train_model(model_ft, nn.CrossEntropyLoss(), optimizer_ft, exp_lr_scheduler, 25)
"""


def test_the_torchvision_fine_tuning_tutorial(tmp_path: Path) -> None:
    report = read(tmp_path, TUTORIAL)
    facts = report.facts
    assert facts.data_dirs == {"train": "data/chest_xray/train", "val": "data/chest_xray/val"}
    assert [(f.line, f.epochs, f.lr, f.optimizer, f.body) for f in facts.fits] == [
        (22, 25, 1e-3, "sgd", "all")
    ]
    assert facts.device is None and facts.classes == 2 and facts.val_size == 16
    f = found(report)
    assert set(f) == {"bn_training_mode", "finetune_lr_high", "aug_label_destroying", "small_val"}
    assert f["bn_training_mode"].numbers["batch"] == 4
    assert f["aug_label_destroying"].numbers["line"] == 8  # horizontal flips of chest X-rays


HEAD_ONLY = """
import torch
from torchvision import datasets, models, transforms
tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406],
                                                                     [0.229, 0.224, 0.225])])
loader = torch.utils.data.DataLoader(datasets.ImageFolder("data/train", tf), batch_size=64)
model = models.resnet34(weights="DEFAULT")
model.fc = torch.nn.Linear(512, 3)
opt = {opt}
for epoch in range(8):
    for x, y in loader:
        opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
"""


@pytest.mark.parametrize(
    ("opt", "body", "lr", "fires"),
    [
        ("torch.optim.Adam(model.fc.parameters(), lr=1e-3)", "frozen", 1e-3, False),
        ("torch.optim.Adam(model.parameters(), lr=1e-3)", "all", 1e-3, True),
        (
            "torch.optim.Adam([{'params': model.fc.parameters(), 'lr': 1e-3},\n"
            "                  {'params': model.layer4.parameters(), 'lr': 1e-5}])",
            "all",
            1e-5,
            False,
        ),
    ],
)
def test_what_the_pytorch_optimizer_trains(
    tmp_path: Path, opt: str, body: str, lr: float, fires: bool
) -> None:
    report = read(tmp_path, HEAD_ONLY.format(opt=opt))
    assert [(f.body, f.lr) for f in report.facts.fits] == [(body, lr)]
    assert ("finetune_lr_high" in found(report)) == fires


def test_qubvel_efficientnet_wants_torch_mode(tmp_path: Path) -> None:
    text = SCALING.format(backbone="ResNet50", gen="", imports="", pre="inputs").replace(
        "keras.applications.ResNet50", "efn.EfficientNetB0"
    )
    text = "import efficientnet.tfkeras as efn\n" + text
    f = found(read(tmp_path, text))["input_scaling"]
    assert f.numbers["expected_mode"] == "torch" and "raw 0-255" in f.evidence


def test_a_layer_of_a_functional_model_by_index(tmp_path: Path) -> None:
    text = GOOD_KERAS.replace(
        "base.trainable = True\nfor layer in base.layers:\n"
        '    layer.trainable = layer.name.startswith("conv5_")\n',
        "model.layers[-1].trainable = True\n",
    )
    report = read(tmp_path, text)
    assert [f.body for f in report.facts.fits] == ["frozen", "frozen"]  # only the head
    base = read(tmp_path, text.replace("model.layers[-1]", "model.layers[1]"))
    assert [f.body for f in base.facts.fits] == ["frozen", "all"]  # Input, then the base
    # with a layer in front of the base, which index is the base is not known
    shifted = text.replace("model.layers[-1]", "model.layers[2]").replace(
        "x = base(inputs, training=False)",
        "x = base(keras.layers.Rescaling(1.0)(inputs), training=False)",
    )
    unknown = read(tmp_path, shifted)
    assert [f.body for f in unknown.facts.fits] == ["frozen", "unknown"]
    assert found(unknown) == {}


MODULES = """
# %% cell 1
!pip install -q pyyaml
# %% cell 2
%%writefile config.yaml
data:
  raw: /content/brain-tumor-mri
  out: /content/split
train:
  learning_rate: 1e-4
  finetune_lr: 1e-5
  unfreeze_block: conv5
# %% cell 3
%%writefile src/utils.py
import yaml
def load_config(path="config.yaml"):
    with open(path) as f:
        return yaml.safe_load(f)
# %% cell 4
%%writefile src/data/generator.py
from tensorflow.keras.preprocessing.image import ImageDataGenerator
def get_generators(root):
    train_gen = ImageDataGenerator(rescale=1./255, rotation_range=15, horizontal_flip=True)
    test_gen = ImageDataGenerator(rescale=1./255)
    train = train_gen.flow_from_directory(root + "/train", target_size=(224, 224))
    val = test_gen.flow_from_directory(root + "/val", target_size=(224, 224))
    return train, val
# %% cell 5
%%writefile src/train.py
import tensorflow as tf
from src.utils import load_config
from src.data.generator import get_generators
def unfreeze(model, block):
    for layer in model.layers:
        if block in layer.name:
            layer.trainable = True
def main():
    cfg = load_config()
    train, val = get_generators(cfg["data"]["out"])
    base = tf.keras.applications.ResNet50(weights="imagenet", include_top=False, pooling="avg")
    base.trainable = False
    model = tf.keras.Model(base.input, tf.keras.layers.Dense(4)(base.output))
    model.compile(tf.keras.optimizers.Adam(cfg["train"]["learning_rate"]), "mse")
    model.fit(train, validation_data=val, epochs=4)
    unfreeze(model, cfg["train"]["unfreeze_block"])
    model.compile(tf.keras.optimizers.Adam(float(cfg["train"]["finetune_lr"])), "mse")
    model.fit(train, validation_data=val, epochs=10)
if __name__ == "__main__":
    main()
# %% cell 6
%%writefile src/data/preprocess.py
import os, shutil
from sklearn.model_selection import train_test_split
from src.utils import load_config
def main():
    cfg = load_config()
    paths, labels = [], []
    for split in ["Training", "Testing"]:
        for cls in os.listdir(os.path.join(cfg["data"]["raw"], split)):
            for name in os.listdir(os.path.join(cfg["data"]["raw"], split, cls)):
                paths.append(os.path.join(cfg["data"]["raw"], split, cls, name))
                labels.append(cls)
    tr, te, ytr, yte = train_test_split(paths, labels, test_size=0.2, stratify=labels)
if __name__ == "__main__":
    main()
# %% cell 7
!python -m src.data.preprocess
!python -m src.train
"""


def test_a_notebook_of_writefile_modules(tmp_path: Path) -> None:
    report = read(tmp_path, MODULES)
    facts = report.facts
    assert facts.data_dirs == {"train": "/content/split/train", "val": "/content/split/val"}
    assert [(f.line, f.lr, f.body, f.bn_inference) for f in facts.fits] == [
        (43, 1e-4, "frozen", True),  # YAML's 1e-4 is a string; the LR is still read
        (46, 1e-5, "partial", False),
    ]
    f = found(report)
    assert set(f) == {"input_scaling", "bn_training_mode", "leakage"}
    assert f["input_scaling"].numbers["line"] == 22
    bn = f["bn_training_mode"]
    assert bn.numbers["line"] == 35 and "called at line 44" in bn.evidence
    assert f["leakage"].numbers["line"] == 62 and "Training" in f["leakage"].evidence
    command, _ = medfit_command(report)
    assert command.split()[2] == "/content/split"


# --- constructs the reader follows (published runs it used to misread) --------------------------
FASTAI_V1 = """
from fastai.vision import *
path = Path("/content/data/chest_xray")
data = ImageDataBunch.from_folder(path, train="train", valid="{valid}", size=224, bs=64){norm}
learn = cnn_learner(data, models.resnet34, metrics=[accuracy])
learn.fit_one_cycle(4)
learn.unfreeze()
learn.fit_one_cycle(2, max_lr=slice({lrs}))
"""


def test_fastai_v1_valid_folder_normalisation_and_discriminative_lrs(tmp_path: Path) -> None:
    report = read(tmp_path, FASTAI_V1.format(valid="test", norm="", lrs="1e-4, 1e-3"))
    found_ = found(report)
    assert report.facts.val_source == "test" and report.facts.metrics == ["accuracy"]
    assert "val_is_test" in found_  # no other held-out set: the test numbers are the val curve
    assert "normalize(imagenet_stats)" in found_["input_scaling"].fix  # v1 does not normalise
    # slice(1e-4, 1e-3) after a head stage: the body groups get 1e-4..3.2e-4, not 1e-3
    assert "finetune_lr_high" not in found_
    assert report.facts.fits[-1].lr == pytest.approx(3.16e-4, rel=0.01)
    ok = read(tmp_path, FASTAI_V1.format(valid="valid", norm=".normalize(imagenet_stats)",
                                         lrs="1e-4, 1e-3"))  # fmt: skip
    assert not {"input_scaling", "val_is_test"} & set(found(ok))


def test_fastai_slice_of_one_lr_gives_the_body_a_tenth(tmp_path: Path) -> None:
    report = read(tmp_path, FASTAI_V1.format(valid="valid", norm="", lrs="1e-2"))
    assert report.facts.fits[-1].lr == pytest.approx(1e-3)


def test_a_reloaded_checkpoint_is_the_model_it_saved(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    from tensorflow.keras.models import load_model
    base = keras.applications.MobileNetV2(weights="imagenet", include_top=False, pooling="avg")
    base.trainable = False
    out = keras.layers.Dense(1, activation="sigmoid")(base.output)
    model = keras.Model(base.input, out)
    model.compile(keras.optimizers.Adam(1e-4), "binary_crossentropy", ["accuracy"])
    ckpt = keras.callbacks.ModelCheckpoint("best.h5", save_best_only=True)
    model.fit(x, epochs=5, callbacks=[ckpt])
    model = load_model("/content/best.h5")
    for layer in model.layers[-20:]:
        layer.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), "binary_crossentropy", ["accuracy"])
    model.fit(x, epochs=5)
    """
    report = read(tmp_path, text)
    assert [f.body for f in report.facts.fits] == ["frozen", "partial"]
    assert found(report)["bn_training_mode"].numbers["fit_line"] == 14


def test_the_except_branch_is_the_fallback_not_the_model(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    try:
        base = keras.applications.EfficientNetB0(weights="imagenet", include_top=False)
    except Exception:
        base = keras.applications.EfficientNetB0(weights=None, include_top=False)
    model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
    """
    report = read(tmp_path, text)
    assert report.facts.backbone == "EfficientNetB0" and report.facts.pretrained is True


def test_argparse_defaults_checked_with_isinstance_resolve(tmp_path: Path) -> None:
    text = """
    import argparse
    from tensorflow import keras
    p = argparse.ArgumentParser()
    p.add_argument("--weights", type=str, default="imagenet")
    args = p.parse_args()
    if isinstance(args.weights, str) and args.weights.lower() == "none":
        weights = None
    else:
        weights = args.weights
    base = keras.applications.ResNet50(weights=weights, include_top=False)
    """
    assert read(tmp_path, text).facts.pretrained is True


TORCH_ZOO = """
import numpy as np
import torch
from pathlib import Path
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

class Slides(Dataset):
    def __init__(self, ids):
        self.ids = ids
    def __len__(self):
        return len(self.ids)
    def __getitem__(self, i):
        path = f"/data/{{self.ids[i]}}.png"
        if Path(path).exists():
            img = np.asarray(transforms.functional.center_crop(Image.open(path), 224), np.uint8)
        else:
            img = np.zeros((224, 224, 3), np.uint8)
        return torch.FloatTensor(img.transpose((2, 0, 1))), 0

loader = DataLoader(Slides(ids), batch_size=32)
model = models.resnet50()
model.load_state_dict(torch.load("/weights/{ckpt}"))
opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
for epoch in range(5):
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
"""


def test_torchvision_zoo_checkpoint_makes_the_model_pretrained(tmp_path: Path) -> None:
    report = read(tmp_path, TORCH_ZOO.format(ckpt="resnet50-0676ba61.pth"))
    assert report.facts.pretrained is True
    # the exists() branch is the one the images flow through: raw 0-255 into ImageNet weights
    assert "raw 0-255" in found(report)["input_scaling"].evidence
    own = read(tmp_path, TORCH_ZOO.format(ckpt="my_run_best.pth"))
    assert own.facts.pretrained is False and "input_scaling" not in found(own)


def test_lightning_datamodule_setup_runs_before_its_loaders(tmp_path: Path) -> None:
    text = """
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import models, transforms
    from torchvision.datasets import ImageFolder

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = models.resnet18(weights="IMAGENET1K_V1")
        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-5)

    class Data(L.LightningDataModule):
        def setup(self, stage=None):
            tf = transforms.Compose([transforms.Resize(224), transforms.ToTensor()])
            self.train = Subset(ImageFolder("data/train", transform=tf), range(100))
        def train_dataloader(self):
            return DataLoader(self.train, batch_size=32)

    L.Trainer(max_epochs=3).fit(Net(), datamodule=Data())
    """
    f = found(read(tmp_path, text))["input_scaling"]
    assert "without transforms.Normalize" in f.evidence


@pytest.mark.parametrize(("monitor", "fires"), [("val_recall", True), ("val_auc", False)])
def test_selecting_on_recall_alone(tmp_path: Path, monitor: str, fires: bool) -> None:
    text = f"""
    from tensorflow import keras
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", ["accuracy", keras.metrics.Recall(name="recall"),
                  keras.metrics.AUC(name="auc")])
    cbs = [keras.callbacks.ModelCheckpoint("m.h5", monitor="{monitor}", mode="max"),
           keras.callbacks.EarlyStopping(monitor="{monitor}", mode="max", patience=5)]
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=30, callbacks=cbs)
    """
    f = found(read(tmp_path, text)).get("metric_mismatch")
    assert bool(f) == fires
    if f:
        assert "val_recall alone" in f.title


def test_class_weights_with_accuracy_when_the_model_comes_from_elsewhere(tmp_path: Path) -> None:
    # the model is built by a module that is not in the script: the compile() before the fit
    # is still the one it trains with
    text = """
    from build_model import CancerNet
    model = CancerNet.build(48, 48, 3, 2)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(train_gen, validation_data=val_gen, class_weight={0: 1.0, 1: 2.5}, epochs=40)
    """
    assert "class weights" in found(read(tmp_path, text))["metric_mismatch"].title


TEST_AS_VAL = """
from tensorflow.keras.preprocessing.image import ImageDataGenerator
from tensorflow import keras
gen = ImageDataGenerator(rescale=1./255)
train = gen.flow_from_directory("data/train")
test_set = gen.flow_from_directory("data/test")
model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "categorical_crossentropy", ["accuracy"])
model.fit(train, validation_data=test_set, epochs=10)
{after}
"""


@pytest.mark.parametrize(
    ("after", "fires"),
    [
        ("", True),  # no other held-out set: what is reported on unseen data is this curve
        ("model.evaluate(test_set)", True),
        ('holdout = gen.flow_from_directory("data/holdout")\nmodel.evaluate(holdout)', False),
    ],
)
def test_val_is_test_without_callbacks(tmp_path: Path, after: str, fires: bool) -> None:
    assert ("val_is_test" in found(read(tmp_path, TEST_AS_VAL.format(after=after)))) == fires


def test_keras_history_is_not_histology(tmp_path: Path) -> None:
    text = """
    from tensorflow import keras
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    gen = ImageDataGenerator(rescale=1./255, horizontal_flip=True)
    train = gen.flow_from_directory("chest_xray/train")
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    history = model.fit(train, epochs=10)
    plt.plot(history.history["loss"])
    """
    assert "aug_label_destroying" in found(read(tmp_path, text))


def test_channel_copies_keep_the_scaling_readable(tmp_path: Path) -> None:
    text = """
    import tensorflow as tf
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    def gray_to_rgb(x):
        return tf.image.grayscale_to_rgb(x)
    gen = ImageDataGenerator(rescale=1./255, preprocessing_function=gray_to_rgb)
    train = gen.flow_from_directory("data/train", color_mode="grayscale")
    base = tf.keras.applications.EfficientNetB0(weights="imagenet", include_top=False)
    model = tf.keras.Sequential([base, tf.keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    model.fit(train, epochs=3)
    """
    assert "0..1" in found(read(tmp_path, text))["input_scaling"].evidence
