"""The public data sets medfit recognises in a foreign run (diagnose/foreign/datasets.py) and the
rules that use them (diagnose/foreign/known_rules.py).

The table is checked against the totals its sources publish; each rule has a small script where
it must fire and one where it must stay silent. Every script is written here, none is copied
from the corpus.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from medfit.diagnose.findings import Finding
from medfit.diagnose.foreign import diagnose_foreign
from medfit.diagnose.foreign.datasets import (
    BY_KEY,
    KNOWN,
    mixes_patients,
    official_split_of,
    recognise,
)
from medfit.diagnose.foreign.known_set import accuracy_misleads
from medfit.diagnose.foreign.read_text import found_totals

# --- the table ---------------------------------------------------------------------------------
# Split totals as the sources state them (dataset pages / papers), independent of the per-class
# numbers in the table: a typo in one class shows here.
PUBLISHED_TOTALS = {
    ("kermany_cxr", "train"): 5216,
    ("kermany_cxr", "val"): 16,
    ("kermany_cxr", "test"): 624,
    ("brain_nickparvar", "train"): 5712,
    ("brain_nickparvar", "test"): 1311,
    ("brain_bhuvaji", "train"): 2870,
    ("brain_bhuvaji", "test"): 394,
    ("brain_bhuvaji", "all"): 3264,
    ("brain_nickparvar", "all"): 7023,
    ("covid_radiography", "all"): 21165,
    ("brain_figshare", "all"): 3064,
    ("brain_br35h", "all"): 3000,
    ("brain_navoneel", "all"): 253,
    ("alzheimer_4class", "all"): 6400,
    ("ham10000", "all"): 10015,
    ("isic2019", "all"): 25331,
    ("isic2020", "all"): 33126,
    ("malaria_nih", "all"): 27558,
    ("pbc_blood", "all"): 17092,
    ("kaggle_hcd", "all"): 220025,
    ("idc_breast", "all"): 277524,
    ("breakhis", "all"): 7909,
    ("busi", "all"): 780,
    ("knee_oa_chen", "train"): 5778,
    ("knee_oa_chen", "val"): 826,
    ("knee_oa_chen", "test"): 1656,
    ("knee_oa_chen", "all"): 8260,
    ("aptos2019", "all"): 3662,
    ("eyepacs", "all"): 35126,
    ("cnmc_leukemia", "train"): 10661,
    ("all_aria", "all"): 3256,
    ("lc25000", "all"): 25000,
    ("kidney_ct", "all"): 12446,
    ("strip_ai", "train"): 754,
    ("pneumoniamnist", "train"): 4708,
    ("pneumoniamnist", "val"): 524,
    ("pneumoniamnist", "test"): 624,
}


@pytest.mark.parametrize(("key", "split"), sorted(PUBLISHED_TOTALS))
def test_class_counts_add_up_to_the_published_totals(key: str, split: str) -> None:
    counts = BY_KEY[key].split_counts(split)
    assert counts is not None and sum(counts.values()) == PUBLISHED_TOTALS[key, split]


def test_every_set_says_where_its_numbers_come_from() -> None:
    assert len({k.key for k in KNOWN}) == len(KNOWN)
    for k in KNOWN:
        assert k.source and k.name and k.modality
        assert k.markers or k.signatures or k.class_match, k.key  # some way to recognise it
        for split, counts in k.counts.items():
            assert split in ("train", "val", "test", "all")
            assert set(counts) <= {s[0] for s in k.classes} or not k.classes, k.key
        assert k.official_split in ("patient-disjoint", "unknown", "none")


def test_ratios_and_small_val_folders() -> None:
    kermany = BY_KEY["kermany_cxr"]
    assert round(kermany.ratio("train") or 0, 2) == 2.89
    assert kermany.ratio("val") == 1.0 and kermany.small_val() == 16
    assert BY_KEY["kermany_oct"].small_val() == 32
    assert BY_KEY["knee_oa_chen"].small_val() is None  # 826 images
    assert round(BY_KEY["alzheimer_4class"].ratio("all") or 0) == 50


# --- recognising a set -------------------------------------------------------------------------
def test_recognised_by_folder_and_split_names() -> None:
    m = recognise(["D:\\ML Projects\\chest_xray\\train", "D:\\ML Projects\\chest_xray\\val"])
    assert m is not None and m.known.key == "kermany_cxr"
    assert recognise(["/data/chest_xray/some_notes.txt"]) is None  # the folder alone is not it


def test_recognised_by_slug_or_class_folders() -> None:
    m = recognise(["https://www.kaggle.com/datasets/iarunava/cell-images-for-detecting-malaria"])
    assert m is not None and m.known.key == "malaria_nih"
    m = recognise(["./Train/glioma_tumor/1.jpg", "meningioma_tumor", "no_tumor", "pituitary_tumor"])
    assert m is not None and m.known.key == "brain_bhuvaji"
    m = recognise(["glioma", "meningioma", "notumor", "pituitary"])
    assert m is not None and m.known.key == "brain_nickparvar"
    m = recognise(["Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"])
    assert m is not None and m.known.key == "alzheimer_4class" and m.classes_agree is None


@pytest.mark.parametrize(
    "strings",
    [
        ["data/train", "data/test", "data/val"],  # split folders alone
        ["Training", "Testing"],
        ["dataset/train/yes", "dataset/train/no"],
        ["/content/Leukemia_Classification/train"],  # a project name, not the Kaggle slug
        ["dataset/Covid", "dataset/Normal", "dataset/Viral Pneumonia"],  # another 3-class set
        ["images/benign", "images/malignant"],
        ["0", "1", "2", "3", "4"],
    ],
)
def test_generic_folder_names_recognise_no_set(strings: list[str]) -> None:
    assert recognise(strings) is None


def test_recognised_by_kaggle_slug_parts() -> None:
    m = recognise(["https://www.kaggle.com/datasets/andrewmvd/leukemia-classification"])
    assert m is not None and m.known.key == "cnmc_leukemia"
    m = recognise(["COVID", "Normal", "Lung_Opacity", "Viral Pneumonia"])
    assert m is not None and m.known.key == "covid_radiography"


def test_three_tumour_classes_are_ambiguous_without_a_class_count() -> None:
    # figshare and Nickparvar both have glioma/meningioma/pituitary; the script's head decides
    assert recognise(["glioma", "meningioma", "pituitary"]) is None
    m = recognise(["glioma", "meningioma", "pituitary"], classes=3)
    assert m is not None and m.known.key == "brain_figshare" and m.classes_agree


def test_recognised_from_the_log_totals() -> None:
    log = "Found 5216 images belonging to 2 classes.\nFound 624 images belonging to 2 classes.\n"
    m = recognise(["data/train", "data/test"], found_totals(log))
    assert m is not None and m.known.key == "kermany_cxr"
    assert m.found_split == {5216: "train", 624: "test"}
    three = found_totals("Found 5216 images belonging to 3 classes.")
    assert recognise(["data/train"], three) is None


def test_found_totals_reads_keras_and_ultralytics_lines() -> None:
    text = (
        "\x1b[1mFound 253 files belonging to 2 classes.\x1b[0m\n"
        "Found 900 validated image filenames belonging to 4 classes.\n"
        "train: /data/train... found 44 images in 2 classes \n"
    )
    assert [(n, k) for n, k, _ in found_totals(text)] == [(253, 2), (900, 4), (44, 2)]


def test_which_splits_mix_patients() -> None:
    assert mixes_patients("shuffled", True)
    assert not mixes_patients("sorted_names", True)  # file names start with the patient id
    assert mixes_patients("sorted_names", False)  # hashes: a block is a random sample
    assert not mixes_patients("array_tail", False)
    assert official_split_of(BY_KEY["brain_nickparvar"], "C:/data/Testing") == "test"
    assert official_split_of(BY_KEY["brain_nickparvar"], "data/processed/val") is None


def test_accuracy_misleads_on_a_majority_or_a_tiny_class() -> None:
    assert accuracy_misleads({"a": 3875, "b": 1341}) is not None  # 74% majority
    assert accuracy_misleads({"a": 390, "b": 234}) is None  # 62.5%
    assert accuracy_misleads({"a": 826, "b": 822, "c": 395, "d": 827}) is None
    assert "1.0%" in (accuracy_misleads({"a": 3200, "b": 2240, "c": 896, "d": 64}) or "")


# --- the rules ----------------------------------------------------------------------------------
def diagnose(tmp_path: Path, text: str, log: str | None = None) -> dict[str, Finding]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    logs: list[str | Path] = []
    if log is not None:
        (tmp_path / "fit_log.txt").write_text(log, encoding="utf-8")
        logs = [tmp_path / "fit_log.txt"]
    d = diagnose_foreign(logs, script=script)
    out: dict[str, Finding] = {}
    for f in d.findings:
        if f.severity != "info":
            out.setdefault(f.rule, f)
    return out


KERMANY = """
from tensorflow import keras
from tensorflow.keras.preprocessing.image import ImageDataGenerator
gen = ImageDataGenerator(rescale=1./255)
train = gen.flow_from_directory("chest_xray/train", target_size=(128, 128), class_mode="binary")
val = gen.flow_from_directory("chest_xray/{val}", target_size=(128, 128), class_mode="binary")
model = keras.Sequential([keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy", metrics={metrics})
model.fit(train, validation_data=val, epochs=10{fit})
"""


def kermany(val: str = "test", metrics: str = '["accuracy"]', fit: str = "") -> str:
    return KERMANY.format(val=val, metrics=metrics, fit=fit)


def test_class_imbalance_of_a_recognised_set(tmp_path: Path) -> None:
    f = diagnose(tmp_path, kermany())["class_imbalance"]
    assert f.numbers["dataset"] == "kermany_cxr" and f.numbers["ratio"] == 2.89
    assert "NORMAL 1341, PNEUMONIA 3875" in f.evidence and f.numbers["source"] == "script"
    assert f.evidence.startswith("train.py:9:")


@pytest.mark.parametrize(
    "fit",
    [
        ", class_weight={0: 1.9, 1: 0.7}",
        ", callbacks=[keras.callbacks.ModelCheckpoint('m.h5', monitor='val_auc', mode='max')]",
    ],
)
def test_class_imbalance_silent_when_balanced_or_selected_on_auc(tmp_path: Path, fit: str) -> None:
    assert "class_imbalance" not in diagnose(tmp_path, kermany(fit=fit))


def test_class_imbalance_silent_on_a_balanced_set(tmp_path: Path) -> None:
    text = kermany().replace("chest_xray/train", "cell_images").replace("chest_xray/test", "x")
    text = "labels = ['Parasitized', 'Uninfected']\n" + textwrap.dedent(text)
    assert "class_imbalance" not in diagnose(tmp_path, text)


SPLIT = """
from tensorflow import keras
train = keras.utils.image_dataset_from_directory("{root}", validation_split=0.2,
                                                 subset="training", seed=1)
val = keras.utils.image_dataset_from_directory("{root}", validation_split=0.2,
                                               subset="validation", seed=1)
model = keras.Sequential([keras.layers.Rescaling(1./255), keras.layers.Conv2D(8, 3),
                          keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
model.fit(train, validation_data=val, epochs=5)
"""


def test_metric_mismatch_when_val_is_a_split_of_the_imbalanced_train(tmp_path: Path) -> None:
    found = diagnose(tmp_path, SPLIT.format(root="chest_xray/train"))
    f = found["metric_mismatch"]
    assert "74%" in f.evidence and f.numbers["split"] == "train"
    assert "leakage" in found  # the shuffled split puts one child's X-rays on both sides


@pytest.mark.parametrize(
    ("val", "metrics"),
    [
        ("val", '["accuracy"]'),  # the published val folder is balanced 8/8
        ("test", '["accuracy"]'),  # 390/234: the majority scores 62.5%
        ("test", '["accuracy", keras.metrics.AUC(name="auc")]'),
    ],
)
def test_metric_mismatch_silent(tmp_path: Path, val: str, metrics: str) -> None:
    assert "metric_mismatch" not in diagnose(tmp_path, kermany(val=val, metrics=metrics))


def test_leakage_of_a_shuffled_split_of_a_per_patient_set(tmp_path: Path) -> None:
    text = "labels = ['Parasitized', 'Uninfected']\n" + textwrap.dedent(
        SPLIT.format(root="data/cell_images")
    )
    f = diagnose(tmp_path, text)["leakage"]
    assert f.numbers["dataset"] == "malaria_nih" and "200 patients" in f.evidence


def test_no_leakage_where_sorted_names_keep_patients_together(tmp_path: Path) -> None:
    # ImageDataGenerator's validation_split takes a block of each class folder's sorted files;
    # NIH malaria names start with the slide/patient id
    text = """
    from tensorflow import keras
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    labels = ["Parasitized", "Uninfected"]
    gen = ImageDataGenerator(rescale=1./255, validation_split=0.2)
    train = gen.flow_from_directory("data/cell_images", subset="training")
    val = gen.flow_from_directory("data/cell_images", subset="validation")
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", ["accuracy"])
    model.fit(train, validation_data=val, epochs=5)
    """
    assert "leakage" not in diagnose(tmp_path, text)


def test_no_leakage_for_a_set_without_several_images_per_patient(tmp_path: Path) -> None:
    found = diagnose(tmp_path, SPLIT.format(root="/content/brain_tumor_dataset"))
    assert "leakage" not in found
    assert found["class_imbalance"].numbers["dataset"] == "brain_navoneel"  # 155:98


def test_leakage_of_split_folders_made_by_the_script(tmp_path: Path) -> None:
    text = """
    import splitfolders
    from tensorflow import keras
    splitfolders.ratio("Dataset", output="output", seed=1, ratio=(.8, .1, .1))
    train = keras.utils.image_dataset_from_directory("output/train")
    val = keras.utils.image_dataset_from_directory("output/val")
    classes = ["Mild_Demented", "Moderate_Demented", "Non_Demented", "Very_Mild_Demented"]
    model = keras.Sequential([keras.layers.Rescaling(1./255), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(train, validation_data=val, epochs=5)
    """
    found = diagnose(tmp_path, text)
    assert found["leakage"].numbers["dataset"] == "alzheimer_4class"
    assert "splitfolders.ratio" in found["leakage"].evidence
    assert "Moderate_Demented" in found["metric_mismatch"].evidence  # 1% of the images
    assert found["class_imbalance"].numbers["ratio"] == 50.0


def test_leakage_when_the_script_makes_the_val_folder_by_a_random_split(tmp_path: Path) -> None:
    # validation reads a folder the set does not publish; the script splits the images at random
    text = """
    import glob
    from sklearn.model_selection import train_test_split
    from tensorflow import keras
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    paths = glob.glob("brain-tumor-mri-dataset/*/*/*.jpg")
    tr, va = train_test_split(paths, test_size=0.1)
    train = keras.utils.image_dataset_from_directory("data/processed/train")
    val = keras.utils.image_dataset_from_directory("data/processed/val")
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(train, validation_data=val, epochs=5)
    """
    found = diagnose(tmp_path, text)
    assert found["leakage"].numbers["dataset"] == "brain_nickparvar"
    assert "class_imbalance" not in found  # 1595:1321 is balanced enough


def test_a_set_whose_own_split_leaks(tmp_path: Path) -> None:
    text = kermany().replace("chest_xray/train", "dataset2-master/images/TRAIN")
    text = text.replace("chest_xray/test", "dataset2-master/images/TEST")
    f = diagnose(tmp_path, text)["leakage"]
    assert f.numbers["dataset"] == "blood_cells_kaggle" and "410 original" in f.evidence


def test_small_val_of_a_known_tiny_val_folder(tmp_path: Path) -> None:
    text = kermany().replace("chest_xray/", "OCT2017/")
    f = diagnose(tmp_path, text.replace("OCT2017/test", "OCT2017/val"))["small_val"]
    assert f.numbers["val_size"] == 32
    assert "small_val" not in diagnose(tmp_path, text)  # the test folder: 968 images


def test_the_log_recognises_what_the_script_does_not_name(tmp_path: Path) -> None:
    text = kermany().replace("chest_xray/", "data/")
    assert "class_imbalance" not in diagnose(tmp_path, text)
    epoch = "Epoch {k}/2\n163/163 - 40s - loss: 0.5 - accuracy: 0.8 - val_loss: 0.6"
    epoch += " - val_accuracy: 0.7\n"
    log = "Found 5216 images belonging to 2 classes.\nFound 624 images belonging to 2 classes.\n"
    log += epoch.format(k=1) + epoch.format(k=2)
    f = diagnose(tmp_path, text, log)["class_imbalance"]
    assert "Found 5216" in f.evidence


def test_nothing_without_a_recognised_set(tmp_path: Path) -> None:
    found = diagnose(tmp_path, kermany().replace("chest_xray/", "my_images/"))
    assert not {"class_imbalance", "metric_mismatch", "leakage"} & set(found)


def test_log_totals_of_another_set_keep_the_counts_out(tmp_path: Path) -> None:
    # a differently sized set unpacked into a folder called chest_xray: the published counts
    # do not describe it
    epoch = "Epoch {k}/2\n10/10 - 4s - loss: 0.5 - accuracy: 0.8 - val_loss: 0.6"
    epoch += " - val_accuracy: 0.7\n"
    log = "Found 1200 images belonging to 2 classes.\nFound 300 images belonging to 2 classes.\n"
    log += epoch.format(k=1) + epoch.format(k=2)
    assert "class_imbalance" not in diagnose(tmp_path, kermany(), log)
