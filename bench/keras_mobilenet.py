"""Where the Keras `MobileNet(alpha=0.25)` ImageNet weights live, and the timm name they load under.

The original .h5 is what the Keras methods load; its timm conversion is what fastai, timm and
medfit load through the model that bench/peers_models.py registers (../shared/weights/README.md).
This module imports neither torch nor TensorFlow: the Keras methods of bench/peers_methods.py and
bench/tta_methods.py run in processes that must never load torch (torch and TensorFlow in one
process crash on import), while bench/peers_models.py imports timm. Each of them imports the
names from here, so no two bench modules import each other.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights" / "keras_mobilenet_v1_025"
KERAS_H5 = WEIGHTS_DIR / "mobilenet_v1_0.25_224.h5"
TIMM_FILE = WEIGHTS_DIR / "keras_mobilenet_v1_025.timm.safetensors"
MOBILENET = "mobilenetv1_025_keras"  # its timm name, registered by peers_models.py
