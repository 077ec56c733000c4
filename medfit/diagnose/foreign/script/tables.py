"""What the script reader knows about backbones, optimizers, augmentations and data sets.

Every number here is a published default or a threshold from bench/diagnose_wild/KEY_FORMAT.md
("The problem kinds"); the rules cite them, never other constants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class App:
    """A backbone: the input its ImageNet weights expect, its family and timm's twin."""

    mode: str  # caffe | tf | torch | builtin | hub | imagenet (torchvision/timm: mean/std)
    family: str
    timm: str | None
    size: int = 224


# What each `preprocess_input` mode does (keras.applications imagenet_utils): caffe flips RGB to
# BGR and subtracts the ImageNet channel means on 0-255 pixels; tf scales to -1..1; torch scales
# to 0..1 and normalises with the ImageNet mean/std; EfficientNet, EfficientNetV2, ConvNeXt,
# MobileNetV3, RegNet and ResNetRS rescale inside the model and take raw 0-255 pixels. TF-Hub
# image models take 0..1; torchvision and timm weights take 0..1 normalised with their mean/std.
MODES = {
    "caffe": "0-255 pixels as BGR minus the ImageNet channel means (about -124..152)",
    "tf": "pixels scaled to -1..1",
    "torch": "0..1 pixels normalised with the ImageNet mean/std (about -2.1..2.6)",
    "builtin": "raw 0-255 pixels (the model rescales them itself)",
    "hub": "0..1 pixels (TF-Hub image models)",
    "imagenet": "0..1 pixels normalised with the weights' mean/std (transforms.Normalize)",
}

_EFF_SIZES = (224, 240, 260, 300, 380, 456, 528, 600)
APPLICATIONS: dict[str, App] = {
    "ResNet50": App("caffe", "resnet", "resnet50"),
    "ResNet101": App("caffe", "resnet", "resnet101"),
    "ResNet152": App("caffe", "resnet", "resnet152"),
    "VGG16": App("caffe", "vgg", "vgg16"),
    "VGG19": App("caffe", "vgg", "vgg19"),
    "MobileNet": App("tf", "mobilenet", "mobilenetv1_100"),
    "MobileNetV2": App("tf", "mobilenet_v2", "mobilenetv2_100"),
    "InceptionV3": App("tf", "inception", "inception_v3", 299),
    "InceptionResNetV2": App("tf", "inception", "inception_resnet_v2", 299),
    "Xception": App("tf", "xception", "legacy_xception", 299),
    "ResNet50V2": App("tf", "resnet_v2", "resnetv2_50"),
    "ResNet101V2": App("tf", "resnet_v2", "resnetv2_101"),
    "ResNet152V2": App("tf", "resnet_v2", "resnetv2_152"),
    "NASNetLarge": App("tf", "other", "nasnetalarge", 331),
    "NASNetMobile": App("tf", "other", None),
    "DenseNet121": App("torch", "densenet", "densenet121"),
    "DenseNet169": App("torch", "densenet", "densenet169"),
    "DenseNet201": App("torch", "densenet", "densenet201"),
    "MobileNetV3Small": App("builtin", "mobilenet_v3", "mobilenetv3_small_100"),
    "MobileNetV3Large": App("builtin", "mobilenet_v3", "mobilenetv3_large_100"),
    "ConvNeXtTiny": App("builtin", "convnext", "convnext_tiny"),
    "ConvNeXtSmall": App("builtin", "convnext", "convnext_small"),
    "ConvNeXtBase": App("builtin", "convnext", "convnext_base"),
    "ConvNeXtLarge": App("builtin", "convnext", "convnext_large"),
    "EfficientNetV2B0": App("builtin", "efficientnet", "tf_efficientnetv2_b0"),
    "EfficientNetV2B1": App("builtin", "efficientnet", "tf_efficientnetv2_b1", 240),
    "EfficientNetV2B2": App("builtin", "efficientnet", "tf_efficientnetv2_b2", 260),
    "EfficientNetV2B3": App("builtin", "efficientnet", "tf_efficientnetv2_b3", 300),
    "EfficientNetV2S": App("builtin", "efficientnet", "tf_efficientnetv2_s", 384),
    "EfficientNetV2M": App("builtin", "efficientnet", "tf_efficientnetv2_m", 480),
    **{
        f"EfficientNetB{i}": App("builtin", "efficientnet", f"tf_efficientnet_b{i}", s)
        for i, s in enumerate(_EFF_SIZES)
    },
}
# keras.applications module -> preprocess_input mode (`from ...resnet50 import preprocess_input`).
MODULE_MODES = {
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "resnet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "builtin",
    "efficientnet_v2": "builtin",
    "convnext": "builtin",
    "mobilenet_v3": "builtin",
    "regnet": "builtin",
    "resnet_rs": "builtin",
    "imagenet_utils": "caffe",
}

# Where the last stage starts, by family: the names to unfreeze by instead of a layer index.
KERAS_STAGES = {
    "resnet": "conv5_",
    "resnet_v2": "conv5_ (and post_bn/post_relu)",
    "vgg": "block5_",
    "densenet": "conv5_block (and the final bn)",
    "mobilenet": "conv_dw_13/conv_pw_13",
    "mobilenet_v2": "block_16 and Conv_1",
    "inception": "mixed9/mixed10 (InceptionV3) or block8_/conv_7b (InceptionResNetV2)",
    "xception": "block14",
    "efficientnet": "block7 and top_",
    "convnext": "stage_3",
}
TORCH_STAGES = {
    "resnet": "layer4",
    "densenet": "features.denseblock4 and features.norm5",
    "vgg": "features[24:]",
    "efficientnet": "features.7 (torchvision) / blocks.6 (timm)",
    "mobilenet_v2": "features.17-18",
    "mobilenet_v3": "the last blocks of features",
    "convnext": "features.7 (torchvision) / stages.3 (timm)",
    "vit": "the last encoder blocks",
    "inception": "Mixed_7b/Mixed_7c",
}

# torchvision model function -> (family, timm twin).
TORCHVISION: dict[str, tuple[str, str | None]] = {
    **{f"resnet{n}": ("resnet", f"resnet{n}") for n in (18, 34, 50, 101, 152)},
    "resnext50_32x4d": ("resnet", "resnext50_32x4d"),
    "resnext101_32x8d": ("resnet", "resnext101_32x8d"),
    "wide_resnet50_2": ("resnet", "wide_resnet50_2"),
    **{f"densenet{n}": ("densenet", f"densenet{n}") for n in (121, 161, 169, 201)},
    **{f"vgg{n}": ("vgg", f"vgg{n}") for n in (11, 13, 16, 19)},
    **{f"vgg{n}_bn": ("vgg", f"vgg{n}_bn") for n in (11, 13, 16, 19)},
    "mobilenet_v2": ("mobilenet_v2", "mobilenetv2_100"),
    "mobilenet_v3_large": ("mobilenet_v3", "mobilenetv3_large_100"),
    "mobilenet_v3_small": ("mobilenet_v3", "mobilenetv3_small_100"),
    **{f"efficientnet_b{i}": ("efficientnet", f"efficientnet_b{i}") for i in range(8)},
    "efficientnet_v2_s": ("efficientnet", "tf_efficientnetv2_s"),
    "efficientnet_v2_m": ("efficientnet", "tf_efficientnetv2_m"),
    "convnext_tiny": ("convnext", "convnext_tiny"),
    "convnext_small": ("convnext", "convnext_small"),
    "convnext_base": ("convnext", "convnext_base"),
    "vit_b_16": ("vit", "vit_base_patch16_224"),
    "vit_b_32": ("vit", "vit_base_patch32_224"),
    "vit_l_16": ("vit", "vit_large_patch16_224"),
    "inception_v3": ("inception", "inception_v3"),
    "googlenet": ("inception", None),
    "alexnet": ("other", None),
    "squeezenet1_0": ("other", None),
    "squeezenet1_1": ("other", None),
    "shufflenet_v2_x1_0": ("other", None),
    "regnet_y_400mf": ("other", None),
    "swin_t": ("vit", "swin_tiny_patch4_window7_224"),
}
# Modules whose first parameter layer names the body in torchvision models (`model.features`).
TORCH_BODY_ATTRS = {"features", "backbone", "encoder", "base", "base_model", "body", "stem"}
TORCH_HEAD_ATTRS = {"fc", "classifier", "head", "heads", "last_linear", "_fc", "out"}

_FAMILY_PATTERNS = (
    (r"resnetv2|resnet_v2|resnet50v2|bit", "resnet_v2"),
    (r"res(net|next)|wide_resnet", "resnet"),
    (r"vgg", "vgg"),
    (r"mobilenet_?v?3|mobilenetv3", "mobilenet_v3"),
    (r"mobilenet_?v?2|mobilenetv2", "mobilenet_v2"),
    (r"mobilenet", "mobilenet"),
    (r"inception", "inception"),
    (r"xception", "xception"),
    (r"densenet", "densenet"),
    (r"efficientnet", "efficientnet"),
    (r"convnext", "convnext"),
    (r"vit|deit|swin|beit|dino", "vit"),
    (r"yolo", "yolo"),
)


def family_of(name: str) -> str:
    """The family of a model name in any spelling (timm, HF hub, TF-Hub URL, fastai arch)."""
    low = name.lower().replace("-", "_")
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, low):
            return family
    return "other"


def timm_twin(name: str) -> str | None:
    """timm's name for a model named the HF/timm way ("microsoft/resnet-50" -> resnet50)."""
    low = name.lower().rsplit("/", 1)[-1]
    m = re.fullmatch(r"vit-(base|large|small|tiny)-patch(\d+)-(\d+)(-in21k)?", low)
    if m:
        return f"vit_{m[1]}_patch{m[2]}_{m[3]}"
    m = re.fullmatch(r"resnet-(\d+)", low)
    if m:
        return f"resnet{m[1]}"
    m = re.fullmatch(r"convnext-(tiny|small|base|large)-(224|384)(-22k)?", low)
    if m:
        return f"convnext_{m[1]}"
    m = re.fullmatch(r"efficientnet-b(\d)", low)
    if m:
        return f"efficientnet_b{m[1]}"
    return None


# --- optimizers ---------------------------------------------------------------------------------
ADAPTIVE = ("adam", "adamw", "nadam", "rmsprop", "adamax", "adagrad", "lion", "radam", "lamb")
# Framework defaults, used only when the optimizer is named by a string (compile("adam")) or
# constructed with no learning rate at all (the documented default is then certain).
KERAS_DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "nadam": 1e-3}
KERAS_DEFAULT_LR |= {"adamax": 1e-3, "adagrad": 1e-3}
TORCH_DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2, "adagrad": 1e-2, "nadam": 2e-3}
TORCH_DEFAULT_LR |= {"radam": 1e-3, "adamax": 2e-3}
HF_DEFAULT_LR = 5e-5  # TrainingArguments.learning_rate (AdamW)
ULTRA_DEFAULT_LR0 = 0.01
# KEY_FORMAT.md finetune_lr_high: Adam/AdamW/RMSprop >= 1e-3 (>= 1e-4 with no head-only stage
# first), SGD >= 1e-2 (or >= 1e-3 with momentum and no head stage).
ADAM_HIGH, ADAM_HIGH_NO_HEAD = 1e-3, 1e-4
SGD_HIGH, SGD_HIGH_MOMENTUM_NO_HEAD = 1e-2, 1e-3

# --- metrics ------------------------------------------------------------------------------------
ACCURACY_METRICS = {"accuracy", "acc", "categorical_accuracy", "sparse_categorical_accuracy"}
ACCURACY_METRICS |= {"binary_accuracy", "Accuracy", "CategoricalAccuracy", "BinaryAccuracy"}
ACCURACY_METRICS |= {"SparseCategoricalAccuracy"}
BINARY_ACCURACY = {"binary_accuracy", "BinaryAccuracy"}

# --- batch size below which BatchNorm statistics are noise (KEY_FORMAT.md bn_training_mode) ------
BN_MIN_BATCH = 16
SMALL_VAL = 100  # KEY_FORMAT.md small_val: under ~100 images
IMBALANCE_RATIO = 1.5  # class_imbalance
STRONG_IMBALANCE = 3.0  # metric_mismatch: accuracy alone says little past 3:1
ORIENTED_MAX_DEGREES = 30.0

# --- modality words (paths, class names, comments) -----------------------------------------------
ORIENTED_WORDS = {
    "chest", "xray", "xrays", "cxr", "pneumonia", "mri", "brain", "ct", "fundus", "retina",
    "retinal", "oct", "mammo", "mammogram", "mammography", "covid", "covid19", "lung", "lungs",
    "tuberculosis", "radiograph", "radiography", "glaucoma", "tumor", "tumour", "glioma",
    "meningioma", "pituitary",
}  # fmt: skip
CHEST_WORDS = {"chest", "cxr", "pneumonia", "covid", "covid19", "lung", "lungs", "tuberculosis"}
XRAY_WORDS = {"xray", "xrays", "radiograph", "radiography"}
UNORIENTED_WORDS = {
    "blood", "cell", "cells", "malaria", "histo", "histology", "histopathology", "patch",
    "patches", "skin", "derm", "dermoscopy", "dermatology", "melanoma", "lesion", "lesions",
    "leuk", "leukemia", "leukaemia", "microscopy", "pcam", "isic", "ham10000", "nevus", "wbc",
}  # fmt: skip
_PREFIXES = {"mammo": "mammo", "histo": "histo", "derm": "derm", "leuk": "leuk"}
# words that share a prefix but say nothing about the images (Keras' `history`, `histogram`)
NOT_PREFIXED = ("histor", "histogram")


def modality_words(text: str) -> set[str]:
    """Lower-case words of `text` that say what the images are (x-ray -> xray)."""
    low = text.lower().replace("x-ray", "xray").replace("x_ray", "xray")
    out = set()
    for w in re.findall(r"[a-z]+[0-9]*", low):
        if w in ORIENTED_WORDS or w in UNORIENTED_WORDS:
            out.add(w)
        for prefix, word in _PREFIXES.items():
            if w.startswith(prefix) and not w.startswith(NOT_PREFIXED):
                out.add(word)
    return out


# Data sets known to hold several images per patient: medfit/diagnose/foreign/datasets.py.
# The Kaggle pneumonia set's val folder holds 16 images (8 NORMAL, 8 PNEUMONIA).
KAGGLE_PNEUMONIA_VAL = 16

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
