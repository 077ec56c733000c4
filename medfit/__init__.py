"""medfit: fine-tune pretrained image classifiers on folders of medical images, past the plateau."""

from __future__ import annotations

from typing import Any

from medfit.errors import MedfitError
from medfit.version import __version__

__all__ = ["Classifier", "MedfitError", "Predictions", "__version__", "load", "resume", "train"]


def __getattr__(name: str) -> Any:
    # torch and timm load only when the API is used: `import medfit.config` stays instant.
    if name in ("Classifier", "Predictions", "load", "resume", "train"):
        from medfit import api  # load is medfit.inference.load: it never imports training

        return getattr(api, name)
    raise AttributeError(f"module 'medfit' has no attribute {name!r}")
