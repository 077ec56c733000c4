"""Group-id patterns of common public sets, for `--group-pattern PRESET` (no imports: the CLI
builds its help from these without loading numpy)."""

from __future__ import annotations

PRESETS: dict[str, tuple[str, str]] = {
    "kermany": (
        r"(?:^|/)[A-Za-z]+-(?P<group>\d+)-\d+\.\w+$",
        "Kermany retinal OCT: CLASS-PATIENT-N.jpeg (e.g. CNV-6294785-1.jpeg)",
    ),
    "kermany-cxr": (
        r"(?:^|/)(?:NORMAL\d*-)?(?P<group>IM-\d+|person\d+)[-_]",
        "Kermany pediatric chest X-ray: person12_bacteria_3.jpeg, NORMAL2-IM-1427-0001.jpeg",
    ),
    "nih-cxr14": (
        r"(?:^|/)(?P<group>\d{8})_\d{3}\.png$",
        "NIH ChestX-ray14: PATIENT_FOLLOWUP.png (e.g. 00000013_005.png)",
    ),
    "chexpert": (r"(?:^|/)patient(?P<group>\d+)/", "CheXpert: .../patient00001/study1/..."),
    "mimic-cxr": (r"(?:^|/)p(?P<group>\d{8})/", "MIMIC-CXR-JPG: .../p10000032/s50414267/..."),
}
