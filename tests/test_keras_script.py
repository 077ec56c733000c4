"""`medfit diagnose --script`: a Keras script read with `ast`, never run."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfit.diagnose.keras_script import APPLICATIONS, medfit_command, read_script

FIXTURE = Path(__file__).parents[2] / "shared" / "fixtures" / "keras_plateau"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason="../shared/fixtures/keras_plateau is not present"
)

# The fixture's run done right: the backbone's preprocess_input, BN kept in inference mode, a
# head-only stage, then Adam 1e-5 on the whole base, mild augmentation, val unshuffled.
CORRECTED = """
from tensorflow import keras
from tensorflow.keras.applications import ResNet50
from tensorflow.keras.applications.resnet50 import preprocess_input
from tensorflow.keras.preprocessing.image import ImageDataGenerator

IMG_SIZE = (224, 224)
train_datagen = ImageDataGenerator(
    rotation_range=10,
    horizontal_flip=True,
    preprocessing_function=preprocess_input,
)
validation_datagen = ImageDataGenerator(preprocessing_function=preprocess_input)
train_generator = train_datagen.flow_from_directory(
    "data/train", target_size=IMG_SIZE, batch_size=32, class_mode="categorical", shuffle=True
)
validation_generator = validation_datagen.flow_from_directory(
    "data/val", target_size=IMG_SIZE, batch_size=32, class_mode="categorical", shuffle=False
)
base = ResNet50(input_shape=(224, 224, 3), include_top=False, weights="imagenet")
base.trainable = False
inputs = keras.Input((224, 224, 3))
x = base(inputs, training=False)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(4, activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy",
              metrics=["accuracy", keras.metrics.AUC(name="auc")])
model.fit(train_generator, epochs=5, validation_data=validation_generator)
base.trainable = True
model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-5),
              loss="categorical_crossentropy", metrics=["accuracy", keras.metrics.AUC(name="auc")])
model.fit(train_generator, epochs=20, validation_data=validation_generator)
"""


def _rules(tmp_path: Path, text: str, name: str = "train.py") -> dict[str, int]:
    path = tmp_path / name
    path.write_text(text)
    return {f.rule: f.line for f in read_script(path).findings}


@needs_fixture
def test_fixture_findings_and_lines() -> None:
    report = read_script(FIXTURE / "train.py", step_s={1: 0.495, 5: 0.182})
    lines = {f.rule: f.line for f in report.findings}
    assert lines["input_scaling"] == 13  # rescale=1./255
    assert lines["bn_training_mode"] == 41  # layers[30:] trainable
    assert lines["freeze_by_index"] == 38  # layers[:30]
    assert lines["finetune_lr"] == 58  # SGD(learning_rate=0.01, momentum=0.9)
    assert lines["aug_orientation"] == 10  # rotation_range=90
    assert lines["class_weight_accuracy"] == 61
    assert lines["input_bound"] == 9
    assert "val_augmented" not in lines and "val_shuffled" not in lines  # val is fine
    scaling = next(f for f in report.findings if f.rule == "input_scaling")
    assert scaling.numbers["expected_mode"] == "caffe" and scaling.numbers["div255_lines"] == [
        13,
        16,
    ]
    assert report.img_size == 224 and report.classes == 4
    assert report.undefined == ["class_weights", "checkpoint", "earlyStopping"]
    command, _ = medfit_command(report)
    assert command.startswith("medfit train data/data --model resnet50 --img-size 224")


def test_corrected_script_has_no_high_findings(tmp_path: Path) -> None:
    report = read_script(_write(tmp_path, CORRECTED))
    assert [f.rule for f in report.findings if f.severity == "high"] == []
    assert {f.rule for f in report.findings} <= {"input_bound"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text(text)
    return path


BAD = CORRECTED.replace(
    "    preprocessing_function=preprocess_input,\n)", "    rescale=1./255,\n)"
).replace("(preprocessing_function=preprocess_input)", "(rescale=1./255)")


def _variant(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


HEAD_STAGE = (
    "model.fit(train_generator, epochs=5, validation_data=validation_generator)\n"
    "base.trainable = True\n"
)
VARIANTS = {
    # one change each, and the findings it must add (relative to CORRECTED)
    "1/255 instead of preprocess_input": (BAD, {"input_scaling"}),
    "training=False dropped": (
        _variant(CORRECTED, "base(inputs, training=False)", "base(inputs)"),
        {"bn_training_mode"},
    ),
    "no head-only stage, SGD 0.01 momentum": (
        _variant(
            _variant(CORRECTED, HEAD_STAGE, "base.trainable = True\n"),
            "keras.optimizers.Adam(learning_rate=1e-5)",
            "keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)",
        ),
        {"finetune_lr"},
    ),
    "Adam 1e-3 after the head stage": (
        _variant(CORRECTED, "Adam(learning_rate=1e-5)", "Adam(learning_rate=1e-3)"),
        {"finetune_lr"},
    ),
    "rotation 90 and vertical flips": (
        _variant(CORRECTED, "rotation_range=10,", "rotation_range=90, vertical_flip=True,"),
        {"aug_orientation"},
    ),
    "class weights, accuracy only": (
        _variant(
            _variant(
                CORRECTED,
                'metrics=["accuracy", keras.metrics.AUC(name="auc")])\n'
                "model.fit(train_generator, epochs=20, validation_data=validation_generator)",
                'metrics=["accuracy"])\nmodel.fit(train_generator, epochs=20, '
                "validation_data=validation_generator, class_weight={0: 1.0, 1: 3.0})",
            ),
            'metrics=["accuracy", keras.metrics.AUC(name="auc")])',
            'metrics=["accuracy"])',
        ),
        {"class_weight_accuracy"},
    ),
    "augmented val generator": (
        _variant(
            CORRECTED,
            "ImageDataGenerator(preprocessing_function=preprocess_input)",
            "ImageDataGenerator(preprocessing_function=preprocess_input, zoom_range=0.2)",
        ),
        {"val_augmented"},
    ),
    "validation_steps fixed": (
        _variant(
            CORRECTED,
            "epochs=20, validation_data=validation_generator)",
            "epochs=20, validation_data=validation_generator, validation_steps=10)",
        ),
        {"steps_skip_data"},
    ),
    "freeze by index": (
        _variant(
            CORRECTED,
            "base.trainable = True\n",
            "for layer in base.layers[100:]:\n    layer.trainable = True\n",
        ),
        {"freeze_by_index"},
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_one_change_adds_exactly_its_finding(tmp_path: Path, name: str) -> None:
    text, expected = VARIANTS[name]
    baseline = set(_rules(tmp_path, CORRECTED, "ok.py"))
    assert set(_rules(tmp_path, text)) - baseline == expected


@pytest.mark.parametrize(
    ("backbone", "mode", "flagged"),
    [
        ("ResNet50", "caffe", True),
        ("VGG16", "caffe", True),
        ("MobileNetV2", "tf", True),
        ("Xception", "tf", True),
        ("DenseNet121", "torch", True),
        ("EfficientNetB0", "builtin", True),
        ("ConvNeXtTiny", "builtin", True),
    ],
)
def test_scaling_table_with_1_over_255(
    tmp_path: Path, backbone: str, mode: str, flagged: bool
) -> None:
    report = read_script(_write(tmp_path, BAD.replace("ResNet50", backbone)))
    scaling = [f for f in report.findings if f.rule == "input_scaling"]
    assert bool(scaling) == flagged
    assert scaling[0].numbers["expected_mode"] == mode
    assert scaling[0].severity == "high"


def test_efficientnet_raw_pixels_are_right_and_resnet_raw_is_not(tmp_path: Path) -> None:
    raw = BAD.replace("rescale=1./255", "horizontal_flip=False")
    assert "input_scaling" not in _rules(tmp_path, raw.replace("ResNet50", "EfficientNetB0"))
    finding = next(
        f for f in read_script(_write(tmp_path, raw)).findings if f.rule == "input_scaling"
    )
    assert "raw 0-255" in finding.evidence


def test_preprocess_input_of_another_family_is_flagged(tmp_path: Path) -> None:
    text = CORRECTED.replace("applications.resnet50 import", "applications.mobilenet_v2 import")
    report = read_script(_write(tmp_path, text))
    scaling = next(f for f in report.findings if f.rule == "input_scaling")
    assert "tf-mode preprocess_input" in scaling.evidence


def test_every_backbone_maps_to_a_timm_model() -> None:
    import timm

    assert [name for name, app in APPLICATIONS.items() if not timm.is_model(app.timm)] == []


EVIL = """
import os
os.system("touch {marker}")

def train():
    os.system("touch {marker}")

class Model:
    def fit(self):
        os.system("touch {marker}")

def lr_schedule(epoch, lr):
    os.system("touch {marker}")
    return lr

base = ResNet50(weights="imagenet", include_top=False)
gen = ImageDataGenerator(
    rescale=1./255, preprocessing_function=lambda x: os.system("touch {marker}")
)
train = gen.flow_from_directory("data/train", target_size=(64, 64))
opt = SGD(learning_rate=__import__("os").system("touch {marker}"))
model.compile(optimizer=opt)
model.fit(train, epochs=eval("os.system('touch {marker}')"))
"""


def test_script_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = _write(tmp_path, EVIL.format(marker=marker))
    report = read_script(path)
    assert not marker.exists()
    assert "input_scaling" in {f.rule for f in report.findings}


def test_syntax_errors_are_skipped_and_reported(tmp_path: Path) -> None:
    text = BAD.replace("IMG_SIZE = (224, 224)", "IMG_SIZE = (224, 224)\n… imports elided …")
    report = read_script(_write(tmp_path, text))
    assert report.skipped_lines and report.skipped_lines[0][0] == 8  # the line after IMG_SIZE
    rules = {f.rule for f in report.findings}
    assert {"input_scaling", "script_elided"} <= rules


def test_command_resolves_kaggle_split_folders(tmp_path: Path) -> None:
    (tmp_path / "data" / "train" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "Validation" / "Validation" / "a").mkdir(parents=True)
    text = BAD.replace('"data/train"', '"data/train/train"').replace(
        '"data/val"', '"data/Validation/Validation"'
    )
    report = read_script(_write(tmp_path, text))
    command, note = medfit_command(report)
    assert command.split()[2] == str(tmp_path / "data")
    assert "not found" not in note


FIXTURE_VARIANTS = {
    # the change, and (findings removed, findings added, expected scaling mode)
    "MobileNetV2 instead of ResNet50": (("ResNet50(", "MobileNetV2("), set(), set(), "tf"),
    "Adam 1e-5 instead of SGD": (
        (
            "keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, )",
            "keras.optimizers.Adam(learning_rate=1e-5)",
        ),
        {"finetune_lr"},
        set(),
        "caffe",
    ),
    "training=False added": (
        (
            "resnet_model = Sequential()\nresnet_model.add(resnet_base)",
            "inputs = keras.Input((224, 224, 3))\nx = resnet_base(inputs, training=False)",
        ),
        {"bn_training_mode"},
        set(),
        "caffe",
    ),
}


@needs_fixture
@pytest.mark.parametrize("name", list(FIXTURE_VARIANTS))
def test_fixture_one_change_variants(tmp_path: Path, name: str) -> None:
    (old, new), removed, added, mode = FIXTURE_VARIANTS[name]
    text = (FIXTURE / "train.py").read_text()
    before = {f.rule: f for f in read_script(FIXTURE / "train.py").findings}
    after = {f.rule: f for f in read_script(_write(tmp_path, _variant(text, old, new))).findings}
    assert set(before) - set(after) == removed
    assert set(after) - set(before) == added
    assert after["input_scaling"].numbers["expected_mode"] == mode
