"""The four training methods of bench/peers.py, each run in its own process by `peers.py --worker`.

Every method gets the same folder (`root/train/<class>/`, `root/val/<class>/`, optionally
`root/test/<class>/`), image size, batch size, number of epochs and seed, and returns the same
record: a per-epoch history (`val_acc`, `val_balanced_accuracy`, `stage`) and, when the folder has a
test split, test accuracy and ROC-AUC of the positive (second, alphabetical) class.
Imports of TensorFlow / fastai / medfit stay inside each method so one process loads one stack.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from keras_mobilenet import KERAS_H5, MOBILENET, TIMM_FILE
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

# The Keras user's "first layers frozen": everything up to the end of the third depthwise-separable
# block (stride 4), the same depth bench/train_blood.py freezes in EfficientNet-Lite0.
KERAS_FROZEN_UNTIL = "conv_pw_3_relu"


@dataclass
class Setup:
    """What every method is given: the data folder and the shared training budget."""

    root: Path
    img_size: int
    epochs: int
    batch_size: int
    seed: int
    work: Path  # scratch folder of this process (medfit run dir, caches)


@dataclass
class MethodResult:
    history: list[dict[str, Any]]
    test: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def val_row(epoch: int, stage: str, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """One history row from val labels and class probabilities (same metric code for all)."""
    pred = probs.argmax(1)
    return {
        "epoch": epoch,
        "stage": stage,
        "val_acc": float((pred == y).mean()),
        "val_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
    }


def test_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Test accuracy and ROC-AUC (binary: of class 1; else one-vs-rest macro)."""
    auc = (
        roc_auc_score(y, probs[:, 1])
        if probs.shape[1] == 2
        else roc_auc_score(y, probs, multi_class="ovr")
    )
    return {"test_acc": float((probs.argmax(1) == y).mean()), "test_auc": float(auc)}


# --- 1. Keras, as our user wrote it ----------------------------------------------------------


@dataclass
class KerasRecipe:
    """The user's Keras recipe, built on one data folder: ImageDataGenerator(1/255, rotation 90,
    both flips) flows, MobileNet(alpha=0.25) with its first blocks frozen, SGD 0.01 momentum 0.9
    decayed x0.9 per epoch, balanced class weights. bench/time_to_accuracy.py uses it too."""

    keras: Any
    model: Any
    train: Any
    val: Any
    class_weight: dict[int, float]
    plain: Any  # the un-augmented generator (val, test)
    flow: dict[str, Any]

    @classmethod
    def build(cls, root: Path, img_size: int, batch_size: int, seed: int) -> KerasRecipe:
        import tf_keras as keras
        from sklearn.utils.class_weight import compute_class_weight
        from tf_keras.preprocessing.image import ImageDataGenerator

        keras.utils.set_random_seed(seed)
        size = (img_size, img_size)
        augment = ImageDataGenerator(
            rescale=1.0 / 255, rotation_range=90, horizontal_flip=True, vertical_flip=True
        )
        flow = {"target_size": size, "batch_size": batch_size, "class_mode": "categorical"}
        train = augment.flow_from_directory(str(root / "train"), seed=seed, **flow)
        plain = ImageDataGenerator(rescale=1.0 / 255)
        val = plain.flow_from_directory(str(root / "val"), shuffle=False, **flow)
        model = keras_model(keras, img_size, train.num_classes, KERAS_H5)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        labels = train.classes
        weights = compute_class_weight("balanced", classes=np.unique(labels), y=labels)
        return cls(keras, model, train, val, dict(enumerate(weights)), plain, flow)

    def fit(self, epochs: int, on_epoch_end: Callable[..., None]) -> None:
        """Train; `on_epoch_end(epoch, logs)` after every epoch (it may set
        `self.model.stop_training`)."""
        callbacks = self.keras.callbacks
        self.model.fit(
            self.train,
            epochs=epochs,
            class_weight=self.class_weight,
            callbacks=[
                callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * 0.9**epoch),
                callbacks.LambdaCallback(on_epoch_end=on_epoch_end),
            ],
            verbose=0,
        )

    def predict(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """(labels, class probabilities) of an un-shuffled flow, e.g. `self.val`."""
        return data.classes, self.model.predict(data, verbose=0)

    def predict_folder(self, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        """The same for the un-augmented images of another split folder (test)."""
        return self.predict(self.plain.flow_from_directory(str(folder), shuffle=False, **self.flow))


def run_keras(s: Setup) -> MethodResult:
    """The user's recipe (KerasRecipe) for `s.epochs` epochs."""
    import tensorflow as tf

    recipe = KerasRecipe.build(s.root, s.img_size, s.batch_size, s.seed)
    history: list[dict[str, Any]] = []

    def on_epoch_end(epoch: int, logs: dict[str, float] | None = None) -> None:
        row = val_row(epoch + 1, "full", *recipe.predict(recipe.val))
        row["train_acc"] = float((logs or {}).get("accuracy", float("nan")))
        history.append(row)
        log(f"  keras epoch {epoch + 1}: {row}")

    recipe.fit(s.epochs, on_epoch_end)
    result = MethodResult(history, notes=[f"tensorflow {tf.__version__}, tf_keras"])
    if (s.root / "test").is_dir():
        result.test = test_metrics(*recipe.predict_folder(s.root / "test"))
    return result


def keras_model(keras: Any, img_size: int, num_classes: int, h5: Path) -> Any:
    """MobileNet(alpha=0.25) at img_size with the 224-px ImageNet file's weights, + softmax head.

    The file holds the include_top model; its convolution weights do not depend on the input size,
    so a headless model at img_size loads them by layer name. Every loaded layer is compared with
    the 224-px model built from the same file, so a silent partial load cannot pass.
    """
    base = keras.applications.MobileNet(
        input_shape=(img_size, img_size, 3), alpha=0.25, include_top=False, weights=None
    )
    base.load_weights(str(h5), by_name=True)
    reference = keras.applications.MobileNet(
        input_shape=(224, 224, 3), alpha=0.25, include_top=True, weights=str(h5)
    )
    for layer in (layer for layer in base.layers if layer.weights):
        for mine, theirs in zip(
            layer.get_weights(), reference.get_layer(layer.name).get_weights(), strict=True
        ):
            if not np.array_equal(mine, theirs):
                raise RuntimeError(f"{h5}: layer {layer.name} did not load")
    frozen = [layer.name for layer in base.layers].index(KERAS_FROZEN_UNTIL) + 1
    for layer in base.layers[:frozen]:
        layer.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    out = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(base.input, out)


# --- 2. fastai ---------------------------------------------------------------------------------


def fastai_loaders(root: Path, img_size: int, batch_size: int, seed: int) -> Any:
    """fastai's folder loaders as its docs fine-tune: Resize, then aug_transforms() on batches."""
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, set_seed

    set_seed(seed, reproducible=True)
    return ImageDataLoaders.from_folder(
        root,
        train="train",
        valid="val",
        item_tfms=Resize(img_size),
        batch_tfms=aug_transforms(),
        bs=batch_size,
        seed=seed,
    )


def run_fastai(s: Setup) -> MethodResult:
    """ImageDataLoaders.from_folder + vision_learner(timm backbone).fine_tune(epochs - 1)."""
    import fastai
    import peers_models  # noqa: F401  (registers the MobileNet in timm)
    import torch
    from fastai.vision.all import (
        BalancedAccuracy,
        Callback,
        accuracy,
        get_image_files,
        vision_learner,
    )

    dls = fastai_loaders(s.root, s.img_size, s.batch_size, s.seed)
    history: list[dict[str, Any]] = []

    class EpochLog(Callback):  # type: ignore[misc]
        """Collects val metrics after every epoch of both fine_tune phases (frozen, unfrozen)."""

        order = 60  # after fastai's Recorder (50) has written the epoch's metrics
        fits = 0

        def before_fit(self) -> None:
            EpochLog.fits += 1

        def after_epoch(self) -> None:
            values = dict(zip(self.recorder.metric_names, self.recorder.log, strict=False))
            row = {
                "epoch": len(history) + 1,
                "stage": "head" if EpochLog.fits == 1 else "full",
                "val_acc": float(values["accuracy"]),
                "val_balanced_accuracy": float(values["balanced_accuracy_score"]),
                "train_loss": float(values["train_loss"]),
            }
            history.append(row)
            log(f"  fastai epoch {row['epoch']}: {row}")

    epoch_log = EpochLog()
    learn = vision_learner(
        dls, MOBILENET, pretrained=True, metrics=[accuracy, BalancedAccuracy()], cbs=[epoch_log]
    )
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(s.epochs - 1, freeze_epochs=1)
    learn.remove_cb(epoch_log)  # get_preds also fires after_epoch
    result = MethodResult(
        history, notes=[f"fastai {fastai.__version__}, torch {torch.__version__}"]
    )
    if (s.root / "test").is_dir():
        test_dl = dls.test_dl(get_image_files(s.root / "test"), with_labels=True)
        with learn.no_bar():
            probs, targets = learn.get_preds(dl=test_dl)
        result.test = test_metrics(targets.numpy(), probs.numpy())
    return result


# --- 3./4. medfit ------------------------------------------------------------------------------


def run_medfit(s: Setup, model: str, weights: str) -> MethodResult:
    """medfit.train defaults (1 head + epochs-1 full), then run_eval on test when there is one."""
    import peers_models  # noqa: F401  (registers the MobileNet in timm)

    import medfit
    from medfit.evaluate.runner import run_eval

    run = medfit.train(
        str(s.root),
        out=str(s.work / "run"),
        log=log,
        report=False,  # timed like the peers: training and evaluation only
        model=model,
        weights=weights,
        img_size=s.img_size,
        head_epochs=1,
        epochs=s.epochs - 1,
        batch_size=s.batch_size,
        seed=s.seed,
        patience=0,  # never stop early: every method trains the same number of epochs
        cache_dir=str(s.work / "cache"),  # a fresh cache: medfit pays its own decode time
    )
    history = [
        {
            k: getattr(row, k)
            for k in ("epoch", "stage", "val_acc", "val_balanced_accuracy", "train_acc")
        }
        for row in run.history
    ]
    # medfit evaluates its selected checkpoint (best smoothed val metric), the peers their last.
    best = run.summary.get("best_epoch")
    result = MethodResult(history, notes=[f"medfit selected epoch {best} (its test checkpoint)"])
    if (s.root / "test").is_dir():
        metrics = run_eval(run.dir, split="test", n_boot=0, log=log)["metrics"]
        result.test = {"test_acc": _value(metrics["accuracy"]), "test_auc": _value(metrics["auc"])}
    return result


def _value(metric: Any) -> float:
    """medfit's report gives a number or {"value": ..., "ci": ...}."""
    return float(metric["value"] if isinstance(metric, dict) else metric)


METHODS: dict[str, Callable[[Setup], MethodResult]] = {
    "keras": run_keras,
    "fastai": run_fastai,
    "medfit_mobilenet": lambda s: run_medfit(s, MOBILENET, str(TIMM_FILE)),
    "medfit_lite0": lambda s: run_medfit(s, "tf_efficientnet_lite0", "lite"),
}
