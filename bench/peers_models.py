"""The Keras `MobileNet(alpha=0.25)` backbone as a named timm model, for fastai and medfit.

Keras Applications' MobileNet v1 at width 0.25 has no timm model name, but timm's own MobileNet v1
generator builds it exactly (`channel_multiplier=0.25`, TF "same" padding, Keras' BatchNorm eps
1e-3; see ../shared/weights/README.md). Registering it under one name lets fastai's
`vision_learner("mobilenetv1_025_keras", pretrained=True)` and `medfit.train(model=...)` build the
very backbone Keras trains, from the very same ImageNet weights (converted to safetensors).

Import this module in every process that builds or loads the model (the registry is per process).
"""

from __future__ import annotations

from typing import Any

from keras_mobilenet import MOBILENET as NAME
from keras_mobilenet import TIMM_FILE
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet, _gen_mobilenet_v1

# The weights' own preprocessing: TF-slim MobileNets take [-1, 1] inputs (mean = std = 0.5) at
# 224 px, bilinear, as in the Keras `preprocess_input` for MobileNet.
_CFG = {
    "url": "",
    "file": str(TIMM_FILE),  # timm's pretrained=True reads this local file: no hub, no network
    "num_classes": 1000,
    "input_size": (3, 224, 224),
    "pool_size": (7, 7),
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    "mean": IMAGENET_INCEPTION_MEAN,
    "std": IMAGENET_INCEPTION_STD,
    "first_conv": "conv_stem",
    "classifier": "classifier",
    "license": "apache-2.0",
}

default_cfgs = generate_default_cfgs({f"{NAME}.keras_in1k": _CFG})


@register_model  # type: ignore[untyped-decorator,unused-ignore]
def mobilenetv1_025_keras(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """Keras Applications MobileNet v1, alpha 0.25 (0.47 M parameters with the 1000-way head)."""
    kwargs.setdefault("pad_type", "same")
    kwargs.setdefault("bn_eps", 1e-3)
    return _gen_mobilenet_v1(NAME, 0.25, pretrained=pretrained, **kwargs)
