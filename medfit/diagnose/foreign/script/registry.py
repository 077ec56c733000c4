"""Calls as the library handlers see them, and the tables the handlers register in.

A handler takes a `Call` (the evaluated arguments, the node for its line and text) and returns
the value of the call, or None to let the next handler (or the generic rule) answer. `FUNCS` is
keyed by the called name's last part (`ResNet50`, `flow_from_directory` as a function), METHODS
by the method name, whatever the receiver; a handler checks the receiver and the dotted name.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medfit.diagnose.foreign.script.values import Val

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.reader import Reader

MAX_EXPR_DEPTH = 40
MAX_CALL_DEPTH = 10
LIBRARIES = {
    "tensorflow", "keras", "tf_keras", "torch", "torchvision", "timm", "numpy", "pandas",
    "sklearn", "cv2", "PIL", "matplotlib", "seaborn", "albumentations", "ultralytics",
    "transformers", "datasets", "fastai", "lightning", "pytorch_lightning", "os", "sys",
    "pathlib", "glob", "shutil", "random", "math", "yaml", "json", "argparse", "tensorflow_hub",
    "imblearn", "skimage", "scipy", "tqdm", "efficientnet", "efficientnet_pytorch", "collections",
    "itertools", "functools", "typing", "dataclasses", "time", "datetime", "warnings", "logging",
    "zipfile", "google", "kaggle", "IPython", "omegaconf", "hydra", "wandb", "mlflow",
    "torchmetrics", "imageio", "pydicom", "SimpleITK", "nibabel", "re", "copy", "pickle",
    "joblib", "io", "csv", "tensorboard", "segmentation_models_pytorch", "keras_cv", "gc",
    "subprocess", "types", "easydict", "ml_collections", "monai", "tensorflow_addons", "builtins",
}  # fmt: skip


class Budget(Exception):
    """The step budget is spent: the rest of the script is not read."""


@dataclass
class Call:
    """A call as the handlers see it: evaluated arguments, and the node for lines and text."""

    it: Reader
    node: ast.Call
    name: str
    dotted: str
    recv: Val | None
    args: list[Val]
    kwargs: dict[str, Val]
    open_: bool  # *args or **kwargs: the arguments are not all visible

    def arg(self, i: int, name: str | None = None) -> Val | None:
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        return self.args[i] if 0 <= i < len(self.args) else None

    @property
    def line(self) -> int:
        return self.node.lineno

    @property
    def text(self) -> str:
        return self.it.src.segment(self.node)

    def kwline(self, name: str) -> int:
        return next((k.value.lineno for k in self.node.keywords if k.arg == name), self.line)

    def kwtext(self, name: str) -> str:
        k = next((k for k in self.node.keywords if k.arg == name), None)
        return f"{name}={self.it.src.segment(k.value, 40)}" if k else name

    def argtext(self, i: int, name: str | None = None) -> str:
        if name is not None and any(k.arg == name for k in self.node.keywords):
            return self.kwtext(name)
        return self.it.src.segment(self.node.args[i], 40) if i < len(self.node.args) else ""


Handler = Callable[[Call], "Val | None"]
AttrHandler = Callable[["Reader", Val, str, ast.AST], "Val | None"]
SetHandler = Callable[["Reader", Val, str, Val, ast.AST], bool]
FUNCS: dict[str, list[Handler]] = {}
METHODS: dict[str, list[Handler]] = {}
CALLABLE: list[Handler] = []  # calling a value: a layer on a tensor, a transform on an image
ATTRS: list[AttrHandler] = []
SETATTRS: list[SetHandler] = []


def func(*names: str) -> Callable[[Handler], Handler]:
    def register(h: Handler) -> Handler:
        for n in names:
            FUNCS.setdefault(n, []).append(h)
        return h

    return register


def method(*names: str) -> Callable[[Handler], Handler]:
    def register(h: Handler) -> Handler:
        for n in names:
            METHODS.setdefault(n, []).append(h)
        return h

    return register
