"""Public medical image-classification data sets that tutorials and notebooks train on, as data.

    from medfit.diagnose.foreign.datasets import recognise_run
    match = recognise_run(report.facts, [log_text])
    if match: print(match.known.name, match.known.ratio("train"), match.why)

Each entry says how a reader recognises the set in a script or a log (folder names, Kaggle
slugs, class-folder names as they appear in paths, the totals Keras prints as "Found N images
belonging to K classes."), its images per class in each published split, whether several images
come from one patient/slide/lesion (so an image-level random split leaks) and what is known to be
wrong with it. Every number cites its source in a comment: the data set's own page or paper,
never a run that used it. Nothing here reads files or imports a framework.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medfit.diagnose.foreign.script.facts import ScriptFacts

# A class is imbalanced for class_imbalance at this max/min ratio (bench KEY_FORMAT.md).
IMBALANCE_RATIO = 1.5
# Accuracy alone says little about a set whose majority class is two thirds of it (a model that
# answers the majority scores 67%), or where a class is under a tenth of it (all of that class
# wrong moves accuracy by less than 0.1).
MAJORITY_SHARE = 2 / 3
MINORITY_SHARE = 0.10
SMALL_VAL = 100  # KEY_FORMAT.md small_val: under ~100 images


@dataclass(frozen=True, eq=False)
class KnownSet:
    key: str
    name: str
    source: str  # where the numbers below come from
    modality: str
    # Each class: its spellings as folder names/labels (compared lower-case, letters and digits
    # only: "Mild_Demented" == "MildDemented"); the first is shown.
    classes: tuple[tuple[str, ...], ...]
    # Images per class in each published split: train | val | test | all (no official split).
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # Folder names of the published splits ("Training", "Testing").
    folders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    markers: tuple[str, ...] = ()  # a folder/slug/file name that alone identifies the set
    signatures: tuple[tuple[str, ...], ...] = ()  # names that together identify it
    class_match: int = 0  # class names enough to recognise it (0: never by class names alone)
    extra_totals: tuple[int, ...] = ()  # other published versions' split totals
    per_patient: str | None = None  # why several images share a patient/slide/lesion
    names_group_patients: bool | None = None  # sorted file names keep a patient's images together
    official_split: str = "unknown"  # patient-disjoint | unknown | none
    split_leaks: str | None = None  # the set's own images/splits known to leak
    flaws: tuple[str, ...] = ()
    multilabel: bool = False

    def split_counts(self, split: str | None) -> dict[str, int] | None:
        """Images per class of one split; `all` (or None) is the whole set."""
        if split in self.counts:
            return self.counts[split]
        if split in (None, "all"):
            whole: dict[str, int] = {}
            for counts in self.counts.values():
                for k, v in counts.items():
                    whole[k] = whole.get(k, 0) + v
            return whole or None
        return None

    def ratio(self, split: str | None) -> float | None:
        c = self.split_counts(split)
        if not c or min(c.values()) <= 0:
            return None
        return max(c.values()) / min(c.values())

    def totals(self) -> dict[int, str]:
        out = {sum(c.values()): split for split, c in self.counts.items() if c}
        if len(self.counts) > 1:
            whole = self.split_counts("all")
            out.setdefault(sum(whole.values()) if whole else 0, "all")
        for t in self.extra_totals:
            out.setdefault(t, "a published version")
        return out

    def small_val(self) -> int | None:
        val = self.counts.get("val")
        n = sum(val.values()) if val else None
        return n if n is not None and n < SMALL_VAL else None


def composition(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return ", ".join(f"{k} {v}" for k, v in counts.items()) + f" ({total} images)"


def accuracy_misleads(counts: dict[str, int]) -> str | None:
    """Why accuracy alone says little on a set of this composition, or None."""
    total = sum(counts.values())
    if total <= 0 or len(counts) < 2:
        return None
    top = max(counts, key=lambda k: counts[k])
    low = min(counts, key=lambda k: counts[k])
    if counts[top] / total >= MAJORITY_SHARE:
        return f"answering {top} for every image already scores {counts[top] / total:.0%}"
    if counts[low] / total < MINORITY_SHARE:
        return (
            f"{low} is {counts[low] / total:.1%} of the images: the model can miss all of them "
            f"and lose {counts[low] / total:.3f} accuracy"
        )
    return None


# --- the table -----------------------------------------------------------------------------------
KNOWN: tuple[KnownSet, ...] = (
    KnownSet(
        "kermany_cxr",
        "Chest X-Ray Images (Pneumonia), Kermany et al. (Kaggle paultimothymooney/"
        "chest-xray-pneumonia)",
        # Kaggle page and its HF mirror (hf-vision/chest-xray-pneumonia: train 5216, validation
        # 16, test 624, 5,863 files in all); per-class folder counts of the Kaggle download:
        # train NORMAL 1341 / PNEUMONIA 3875, val 8 / 8, test 234 / 390. Kermany et al., Cell
        # 172(5):1122, 2018 (Mendeley rscbjbr9sj v2: 5,232 training images, 3,883 pneumonia and
        # 1,349 normal; test 234 normal + 390 pneumonia).
        "Kaggle paultimothymooney/chest-xray-pneumonia; Kermany et al., Cell 2018; Mendeley "
        "rscbjbr9sj v2",
        "chest X-ray",
        (("NORMAL",), ("PNEUMONIA",)),
        {
            "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
            "val": {"NORMAL": 8, "PNEUMONIA": 8},
            "test": {"NORMAL": 234, "PNEUMONIA": 390},
        },
        {"train": ("train",), "val": ("val",), "test": ("test",)},
        markers=("chestxraypneumonia",),
        signatures=(("chestxray", "train"), ("chestxray", "test"), ("chestxray", "val")),
        class_match=2,
        extra_totals=(5232,),  # Mendeley v2 train (Cell 2018)
        # Kaggle file names person<N>_bacteria_<M>.jpeg / person<N>_virus_<M>.jpeg: several
        # X-rays per child; NORMAL files IM-<patient>-<n>.jpeg / NORMAL2-IM-<patient>-<n>.
        per_patient="several X-rays per child (file names person<N>_bacteria/virus_<M>)",
        names_group_patients=True,
        official_split="unknown",
        flaws=(
            "the Kaggle val folder holds 16 images (8 per class), too few to select on",
            "train is 2.9:1 PNEUMONIA:NORMAL, test 1.67:1",
        ),
    ),
    KnownSet(
        "kermany_oct",
        "Retinal OCT Images (OCT2017), Kermany et al. (Kaggle paultimothymooney/kermany2018)",
        # Kaggle kermany2018 OCT2017/: train CNV 37205, DME 11348, DRUSEN 8616, NORMAL 26315;
        # test 242 per class; val 8 per class. Kermany et al., Cell 2018 (Mendeley rscbjbr9sj).
        "Kaggle paultimothymooney/kermany2018 (OCT2017 folder); Kermany et al., Cell 2018",
        "retinal OCT",
        (("CNV",), ("DME",), ("DRUSEN",), ("NORMAL",)),
        {
            "train": {"CNV": 37205, "DME": 11348, "DRUSEN": 8616, "NORMAL": 26315},
            "val": {"CNV": 8, "DME": 8, "DRUSEN": 8, "NORMAL": 8},
            "test": {"CNV": 242, "DME": 242, "DRUSEN": 242, "NORMAL": 242},
        },
        {"train": ("train",), "val": ("val",), "test": ("test",)},
        markers=("oct2017", "kermany2018"),
        class_match=4,
        # file names CNV-<patient>-<n>.jpeg: several B-scans per patient (Kaggle page)
        per_patient="several B-scans per patient (file names <CLASS>-<patient id>-<n>)",
        names_group_patients=False,  # sorted names group by class prefix, then patient
        flaws=("the Kaggle val folder holds 32 images (8 per class)",),
    ),
    KnownSet(
        "covid_radiography",
        "COVID-19 Radiography Database (Kaggle tawsifurrahman/covid19-radiography-database)",
        # Kaggle page (v4): COVID 3616, Normal 10192, Lung Opacity 6012, Viral Pneumonia 1345;
        # Chowdhury et al., IEEE Access 8:132665, 2020; Rahman et al., Comput Biol Med 132, 2021.
        "Kaggle tawsifurrahman/covid19-radiography-database; Chowdhury et al. 2020; Rahman et "
        "al. 2021",
        "chest X-ray",
        (("COVID",), ("Normal",), ("Lung_Opacity",), ("Viral Pneumonia",)),
        {"all": {"COVID": 3616, "Normal": 10192, "Lung_Opacity": 6012, "Viral Pneumonia": 1345}},
        markers=("covid19radiographydataset", "covid19radiographydatabase"),
        class_match=3,
        official_split="none",
        flaws=("images pooled from several public collections; no patient ids are published",),
    ),
    KnownSet(
        "nih_chestxray14",
        "NIH ChestX-ray14 (Wang et al., CVPR 2017)",
        # Wang et al. 2017 and the NIH release README: 112,120 frontal images of 30,805 patients,
        # 14 findings (multi-label) + No Finding; official train_val_list.txt (86,524) /
        # test_list.txt (25,596), split by patient.
        "Wang et al., ChestX-ray8, CVPR 2017; NIH Clinical Center release README",
        "chest X-ray",
        (),
        markers=("dataentry2017", "chestxray14", "nihchestxrays", "trainvallist", "bboxlist2017"),
        per_patient="112,120 images of 30,805 patients (Patient ID in Data_Entry_2017.csv)",
        official_split="patient-disjoint",
        multilabel=True,
        flaws=("labels mined from reports by NLP (estimated >90% accurate, Wang et al.)",),
    ),
    KnownSet(
        "brain_nickparvar",
        "Brain Tumor MRI Dataset (Kaggle masoudnickparvar/brain-tumor-mri-dataset)",
        # Kaggle page: 7,023 images combining figshare, SARTAJ and Br35H; Training glioma 1321,
        # meningioma 1339, notumor 1595, pituitary 1457; Testing 300, 306, 405, 300. The
        # figshare part is 3,064 T1-CE slices of 233 patients (Cheng et al. 2017).
        "Kaggle masoudnickparvar/brain-tumor-mri-dataset; Cheng et al., PLoS ONE 2015 / figshare",
        "brain MRI",
        (("glioma",), ("meningioma",), ("notumor", "no_tumor"), ("pituitary",)),
        {
            "train": {"glioma": 1321, "meningioma": 1339, "notumor": 1595, "pituitary": 1457},
            "test": {"glioma": 300, "meningioma": 306, "notumor": 405, "pituitary": 300},
        },
        {"train": ("Training",), "test": ("Testing",)},
        markers=("braintumormridataset",),
        class_match=3,
        per_patient="several MRI slices per patient (its figshare part: 3,064 slices of 233 "
        "patients) and no patient ids in the file names",
        names_group_patients=False,
        flaws=(
            "near-duplicate images within and across Training/Testing (Saifullah et al., ICTAI "
            "2025, de-duplicating public brain-tumour sets by perceptual hash)",
        ),
    ),
    KnownSet(
        "brain_bhuvaji",
        "Brain Tumor Classification (MRI) (Kaggle sartajbhuvaji/brain-tumor-classification-mri)",
        # Kaggle page / folder counts: Training glioma_tumor 826, meningioma_tumor 822,
        # no_tumor 395, pituitary_tumor 827 (2,870); Testing 100, 115, 105, 74 (394).
        # Nickparvar's page reports its glioma images as wrongly categorised.
        "Kaggle sartajbhuvaji/brain-tumor-classification-mri; masoudnickparvar page (SARTAJ "
        "glioma labels)",
        "brain MRI",
        (("glioma_tumor",), ("meningioma_tumor",), ("no_tumor",), ("pituitary_tumor",)),
        {
            "train": {
                "glioma_tumor": 826,
                "meningioma_tumor": 822,
                "no_tumor": 395,
                "pituitary_tumor": 827,
            },
            "test": {
                "glioma_tumor": 100,
                "meningioma_tumor": 115,
                "no_tumor": 105,
                "pituitary_tumor": 74,
            },
        },
        {"train": ("Training",), "test": ("Testing",)},
        markers=("braintumorclassificationmri",),
        class_match=3,
        per_patient="several MRI slices per patient scan (axial/coronal/sagittal) and no patient "
        "ids",
        names_group_patients=False,
        flaws=(
            "glioma images reported wrongly categorised (masoudnickparvar dataset page)",
            "duplicate and near-duplicate files within and across Training/Testing (Saifullah et "
            "al., ICTAI 2025)",
        ),
    ),
    KnownSet(
        "brain_figshare",
        "figshare brain tumour dataset (Cheng et al.)",
        # Cheng et al., PLoS ONE 10(10):e0140381, 2015; figshare 1512427: 3,064 T1-weighted
        # contrast-enhanced slices of 233 patients: meningioma 708, glioma 1426, pituitary 930.
        "Cheng et al., PLoS ONE 2015; figshare dataset 1512427 (README)",
        "brain MRI",
        (("meningioma",), ("glioma",), ("pituitary",)),
        {"all": {"meningioma": 708, "glioma": 1426, "pituitary": 930}},
        markers=("braintumordataset1512427", "cjdata"),
        class_match=3,
        per_patient="3,064 slices of 233 patients (PID field in each .mat file)",
        official_split="none",
    ),
    KnownSet(
        "brain_br35h",
        "Br35H brain tumour detection (Kaggle ahmedhamada0/brain-tumor-detection)",
        # Kaggle page: 3,000 images, yes 1500 / no 1500 (+ an unlabelled pred folder).
        "Kaggle ahmedhamada0/brain-tumor-detection (Br35H 2020)",
        "brain MRI",
        (("yes",), ("no",)),
        {"all": {"yes": 1500, "no": 1500}},
        markers=("br35h",),
        official_split="none",
    ),
    KnownSet(
        "brain_navoneel",
        "Brain MRI Images for Brain Tumor Detection (Kaggle navoneel)",
        # Kaggle page navoneel/brain-mri-images-for-brain-tumor-detection: 253 images,
        # yes 155 / no 98, folder brain_tumor_dataset/{yes,no}.
        "Kaggle navoneel/brain-mri-images-for-brain-tumor-detection",
        "brain MRI",
        (("yes",), ("no",)),
        {"all": {"yes": 155, "no": 98}},
        # the Kaggle archive's folder: brain_tumor_dataset/{yes,no}
        markers=("brainmriimagesforbraintumordetection", "braintumordataset"),
        official_split="none",
    ),
    KnownSet(
        "alzheimer_4class",
        "Alzheimer MRI 4 classes (Kaggle; OASIS-derived axial slices)",
        # Kaggle "Alzheimer MRI Preprocessed Dataset (128 x 128)": 6,400 images, Mild Demented 896,
        # Moderate Demented 64, Non Demented 3200, Very Mild Demented 2240; the tourist55
        # "Alzheimer's Dataset (4 class of Images)" holds the same 6,400 in train 5121 / test 1279.
        # Slices of whole-brain MRI volumes: several per subject, no subject ids published; slice-
        # level splits inflate accuracy (Yagis et al., Sci Rep 11:22544, 2021).
        "Kaggle sachinkumar413/alzheimer-mri-dataset and tourist55/alzheimers-dataset-4-class-"
        "of-images (dataset pages); Yagis et al., Sci Rep 2021",
        "brain MRI",
        (
            ("Mild_Demented", "MildDemented"),
            ("Moderate_Demented", "ModerateDemented"),
            ("Non_Demented", "NonDemented"),
            ("Very_Mild_Demented", "VeryMildDemented"),
        ),
        {
            "all": {
                "Mild_Demented": 896,
                "Moderate_Demented": 64,
                "Non_Demented": 3200,
                "Very_Mild_Demented": 2240,
            }
        },
        markers=("alzheimersdataset4classofimages", "alzheimermridataset"),
        class_match=3,
        extra_totals=(5121, 1279),
        per_patient="many axial slices of each subject's MRI volume, with no subject ids",
        names_group_patients=False,
        official_split="none",
        flaws=("Moderate Demented is 1% of the images (64 of 6,400)",),
    ),
    KnownSet(
        "ham10000",
        "HAM10000 dermatoscopic images (Tschandl et al.)",
        # Tschandl et al., Sci Data 5:180161, 2018: 10,015 images, akiec 327, bcc 514, bkl 1099,
        # df 115, mel 1113, nv 6705, vasc 142; lesion_id in HAM10000_metadata: several images of
        # one lesion.
        "Tschandl et al., Sci Data 2018 (HAM10000, Harvard Dataverse)",
        "dermoscopy",
        (("akiec",), ("bcc",), ("bkl",), ("df",), ("mel",), ("nv",), ("vasc",)),
        {
            "all": {
                "akiec": 327,
                "bcc": 514,
                "bkl": 1099,
                "df": 115,
                "mel": 1113,
                "nv": 6705,
                "vasc": 142,
            }
        },
        markers=("ham10000", "ham10000metadata", "skincancermnistham10000"),
        class_match=5,
        per_patient="several images of one lesion (lesion_id in HAM10000_metadata.csv)",
        names_group_patients=False,
        official_split="none",
        flaws=("nv is 67% of the images",),
    ),
    KnownSet(
        "isic2019",
        "ISIC 2019 challenge training set",
        # ISIC 2019 ground truth: 25,331 images, MEL 4522, NV 12875, BCC 3323, AK 867, BKL 2624,
        # DF 239, VASC 253, SCC 628 (challenge page / ISIC_2019_Training_GroundTruth.csv).
        "ISIC 2019 challenge (ISIC_2019_Training_GroundTruth.csv)",
        "dermoscopy",
        (("MEL",), ("NV",), ("BCC",), ("AK",), ("BKL",), ("DF",), ("VASC",), ("SCC",)),
        {
            "all": {
                "MEL": 4522,
                "NV": 12875,
                "BCC": 3323,
                "AK": 867,
                "BKL": 2624,
                "DF": 239,
                "VASC": 253,
                "SCC": 628,
            }
        },
        markers=("isic2019traininggroundtruth", "isic2019traininginput", "isic2019"),
        class_match=7,
        per_patient="several images per lesion (lesion_id in ISIC_2019_Training_Metadata.csv; "
        "it includes HAM10000)",
        official_split="none",
    ),
    KnownSet(
        "isic2020",
        "SIIM-ISIC Melanoma Classification (ISIC 2020)",
        # Rotemberg et al., Sci Data 8:34, 2021: 33,126 images of 2,056 patients, 584 melanoma.
        "Rotemberg et al., Sci Data 2021 (ISIC 2020 / Kaggle siim-isic-melanoma-classification)",
        "dermoscopy",
        (("benign",), ("malignant",)),
        {"all": {"benign": 32542, "malignant": 584}},
        markers=("siimisicmelanomaclassification", "isic2020", "isic2020traininggroundtruth"),
        per_patient="33,126 images of 2,056 patients (patient_id column)",
        official_split="none",
        flaws=("melanoma is 1.8% of the images",),
    ),
    KnownSet(
        "malaria_nih",
        "Malaria cell images (NIH / LHNCBC, Rajaraman et al.)",
        # Rajaraman et al., PeerJ 6:e4568, 2018 and the LHNCBC page: 27,558 cell crops from thin
        # smears of 150 P. falciparum-infected and 50 healthy patients, Parasitized 13,779 /
        # Uninfected 13,779; file names C<slide>P<patient>..._cell_<n>.png.
        "Rajaraman et al., PeerJ 2018; NIH LHNCBC malaria page; Kaggle iarunava/cell-images-for-"
        "detecting-malaria",
        "blood smear microscopy",
        (("Parasitized",), ("Uninfected",)),
        {"all": {"Parasitized": 13779, "Uninfected": 13779}},
        markers=("cellimagesfordetectingmalaria",),
        signatures=(("cellimages", "parasitized"), ("cellimages", "malaria")),
        class_match=2,
        per_patient="27,558 cells cut from the smears of 200 patients (file names C<slide>P<id>)",
        names_group_patients=True,
        official_split="none",
    ),
    KnownSet(
        "blood_cells_kaggle",
        "Blood Cell Images (Kaggle paultimothymooney/blood-cells, from BCCD)",
        # Kaggle page: ~12,500 augmented images of 4 cell types made from 410 original BCCD
        # images; dataset2-master/images TRAIN: EOSINOPHIL 2497, LYMPHOCYTE 2483, MONOCYTE 2478,
        # NEUTROPHIL 2499; TEST: 623, 620, 620, 624; TEST_SIMPLE 71 images.
        "Kaggle paultimothymooney/blood-cells (dataset page); BCCD (Shenggan/BCCD_Dataset)",
        "blood smear microscopy",
        (("EOSINOPHIL",), ("LYMPHOCYTE",), ("MONOCYTE",), ("NEUTROPHIL",)),
        {
            "train": {"EOSINOPHIL": 2497, "LYMPHOCYTE": 2483, "MONOCYTE": 2478, "NEUTROPHIL": 2499},
            "test": {"EOSINOPHIL": 623, "LYMPHOCYTE": 620, "MONOCYTE": 620, "NEUTROPHIL": 624},
        },
        {"train": ("TRAIN",), "test": ("TEST",)},
        markers=("dataset2master",),
        class_match=4,
        per_patient="augmented copies of 410 original smear images",
        official_split="none",
        split_leaks="its TRAIN and TEST folders hold augmented copies of the same 410 original "
        "images (dataset page), so test images have near-copies in train",
    ),
    KnownSet(
        "pbc_blood",
        "PBC peripheral blood cell images (Acevedo et al.)",
        # Acevedo et al., Data in Brief 30:105474, 2020: 17,092 images, neutrophil 3329,
        # eosinophil 3117, basophil 1218, lymphocyte 1214, monocyte 1420, ig 2895,
        # erythroblast 1551, platelet 2348.
        "Acevedo et al., Data in Brief 2020 (Mendeley snkd93bnjr)",
        "blood smear microscopy",
        (
            ("neutrophil",),
            ("eosinophil",),
            ("basophil",),
            ("lymphocyte",),
            ("monocyte",),
            ("ig",),
            ("erythroblast",),
            ("platelet",),
        ),
        {
            "all": {
                "neutrophil": 3329,
                "eosinophil": 3117,
                "basophil": 1218,
                "lymphocyte": 1214,
                "monocyte": 1420,
                "ig": 2895,
                "erythroblast": 1551,
                "platelet": 2348,
            }
        },
        markers=("pbcdatasetnormaldib",),
        class_match=6,
        official_split="none",
    ),
    KnownSet(
        "kaggle_hcd",
        "Histopathologic Cancer Detection (Kaggle; from PCam)",
        # Kaggle competition data page: 220,025 labelled 96x96 .tif patches in train/ with
        # train_labels.csv (label 0: 130,908, label 1: 89,117), 57,458 in test/; PCam patches
        # with duplicates removed and no slide id.
        "Kaggle histopathologic-cancer-detection (data page); Veeling et al., MICCAI 2018",
        "histopathology",
        (("0",), ("1",)),
        {"all": {"0": 130908, "1": 89117}},
        markers=("histopathologiccancerdetection",),
        signatures=(("trainlabelscsv", "tif"), ("trainlabels", "tif")),
        per_patient="patches cut from about 400 whole-slide images (Camelyon16), with no slide "
        "id; file names are hashes",
        names_group_patients=False,
        official_split="none",
    ),
    KnownSet(
        "pcam",
        "PatchCamelyon (PCam, Veeling et al.)",
        # PCam README (basveeling/pcam): 327,680 patches, train 262,144 / valid 32,768 / test
        # 32,768, 50/50 positive:negative in every split, no WSI shared between splits.
        "Veeling et al., MICCAI 2018; github.com/basveeling/pcam README",
        "histopathology",
        (),
        markers=("pcam", "patchcamelyon", "patchcamelyon"),
        per_patient="patches of 400 whole-slide images",
        official_split="patient-disjoint",
    ),
    KnownSet(
        "idc_breast",
        "Breast Histopathology Images, IDC (Kaggle paultimothymooney/breast-histopathology-images)",
        # Kaggle page: 277,524 50x50 patches from 162 whole-mount slides (IDC negative 198,738,
        # positive 78,786), one folder per patient id, file names <id>_idx5_x.._y.._class<0|1>;
        # Janowczyk & Madabhushi, J Pathol Inform 7:29, 2016; Cruz-Roa et al., SPIE 2014.
        "Kaggle paultimothymooney/breast-histopathology-images; Janowczyk & Madabhushi 2016",
        "histopathology",
        (("0",), ("1",)),
        {"all": {"0": 198738, "1": 78786}},
        markers=("breasthistopathologyimages", "idcregularps50idx5", "idx5"),
        per_patient="hundreds of patches per patient (patient id folders and file-name prefix)",
        names_group_patients=True,
        official_split="none",
    ),
    KnownSet(
        "breakhis",
        "BreakHis breast histopathology (Spanhol et al.)",
        # Spanhol et al., IEEE TBME 63(7), 2016: 7,909 images of 82 patients, benign 2,480,
        # malignant 5,429, at 40x/100x/200x/400x; the paper's protocol splits by patient.
        "Spanhol et al., IEEE TBME 2016 (BreaKHis_v1)",
        "histopathology",
        (("benign",), ("malignant",)),
        {"all": {"benign": 2480, "malignant": 5429}},
        markers=("breakhisv1", "breakhis"),
        per_patient="7,909 images of 82 patients (patient id in the file names, e.g. "
        "SOB_B_A_14-22549AB)",
        names_group_patients=True,
        official_split="none",
    ),
    KnownSet(
        "busi",
        "Breast Ultrasound Images (BUSI, Al-Dhabyani et al.)",
        # Al-Dhabyani et al., Data in Brief 28:104863, 2020: 780 images of 600 women, normal 133,
        # benign 437, malignant 210; each image's segmentation mask sits beside it (_mask.png).
        "Al-Dhabyani et al., Data in Brief 2020 (Dataset_BUSI_with_GT)",
        "breast ultrasound",
        (("normal",), ("benign",), ("malignant",)),
        {"all": {"normal": 133, "benign": 437, "malignant": 210}},
        markers=("datasetbusiwithgt", "busi"),
        per_patient="780 images of 600 women",
        official_split="none",
        flaws=("the ground-truth masks (*_mask.png) lie in the class folders beside the images",),
    ),
    KnownSet(
        "knee_oa_chen",
        "Knee Osteoarthritis Severity Grading (Chen, Mendeley 56rmx5bjcr; OAI)",
        # Chen P., Mendeley Data 56rmx5bjcr v1, 2018 (Kaggle shashwatwork/knee-osteoarthritis-
        # dataset-with-severity): KL 0-4, train 2286/1046/1516/757/173, val 328/153/212/106/27,
        # test 639/296/447/223/51; both knees of OAI participants.
        "Chen, Mendeley Data 56rmx5bjcr (2018); Kaggle shashwatwork/knee-osteoarthritis-"
        "dataset-with-severity",
        "knee X-ray",
        (("0",), ("1",), ("2",), ("3",), ("4",)),
        {
            "train": {"0": 2286, "1": 1046, "2": 1516, "3": 757, "4": 173},
            "val": {"0": 328, "1": 153, "2": 212, "3": 106, "4": 27},
            "test": {"0": 639, "1": 296, "2": 447, "3": 223, "4": 51},
        },
        {"train": ("train",), "val": ("val",), "test": ("test",)},
        markers=("kneeosteoarthritisdatasetwithseverity", "kneexraydata", "kneekl224"),
        per_patient="both knees of OAI participants",
    ),
    KnownSet(
        "aptos2019",
        "APTOS 2019 Blindness Detection (Kaggle)",
        # Kaggle aptos2019-blindness-detection train.csv: 3,662 fundus photos, diagnosis 0: 1805,
        # 1: 370, 2: 999, 3: 193, 4: 295.
        "Kaggle aptos2019-blindness-detection (train.csv)",
        "fundus photography",
        (("0",), ("1",), ("2",), ("3",), ("4",)),
        {"all": {"0": 1805, "1": 370, "2": 999, "3": 193, "4": 295}},
        markers=("aptos2019blindnessdetection", "aptos2019"),
        official_split="none",
    ),
    KnownSet(
        "eyepacs",
        "Diabetic Retinopathy Detection (Kaggle 2015, EyePACS)",
        # Kaggle diabetic-retinopathy-detection trainLabels.csv: 35,126 images, level 0: 25810,
        # 1: 2443, 2: 5292, 3: 873, 4: 708; both eyes of each patient (<id>_left/_right.jpeg).
        "Kaggle diabetic-retinopathy-detection (trainLabels.csv)",
        "fundus photography",
        (("0",), ("1",), ("2",), ("3",), ("4",)),
        {"all": {"0": 25810, "1": 2443, "2": 5292, "3": 873, "4": 708}},
        markers=("diabeticretinopathydetection",),
        signatures=(("trainlabels", "jpeg"),),
        per_patient="both eyes of every patient (<id>_left / <id>_right)",
        names_group_patients=True,
        official_split="none",
    ),
    KnownSet(
        "cnmc_leukemia",
        "C-NMC 2019 leukaemia cells (Kaggle andrewmvd/leukemia-classification)",
        # C-NMC 2019 (Gupta & Gupta, ISBI 2019 challenge; Kaggle andrewmvd/leukemia-
        # classification): training folds fold_0..fold_2, ALL 7,272 / HEM 3,389 cell images,
        # many cells per subject.
        "C-NMC 2019 challenge (TCIA); Kaggle andrewmvd/leukemia-classification",
        "blood smear microscopy",
        (("all",), ("hem",)),
        {"train": {"all": 7272, "hem": 3389}},
        markers=("cnmc", "cnmc2019", "leukemiaclassification"),
        per_patient="many cells per subject",
        official_split="unknown",
    ),
    KnownSet(
        "all_aria",
        "Acute Lymphoblastic Leukemia images (Aria et al., Kaggle mehradaria/leukemia)",
        # Aria et al., Data in Brief 2021 / Kaggle: 3,256 images of 89 patients, Benign 504,
        # Early 985, Pre 963, Pro 804.
        "Aria et al. 2021; Kaggle mehradaria/leukemia",
        "blood smear microscopy",
        (("Benign",), ("Early",), ("Pre",), ("Pro",)),
        {"all": {"Benign": 504, "Early": 985, "Pre": 963, "Pro": 804}},
        markers=("bloodcellcancerall",),
        class_match=4,
        per_patient="3,256 images of 89 patients",
        official_split="none",
    ),
    KnownSet(
        "lc25000",
        "LC25000 lung and colon histopathology (Borkowski et al.)",
        # Borkowski et al., arXiv:1912.12142, 2019: 25,000 images, 5,000 per class, augmented
        # from 750 lung and 500 colon originals.
        "Borkowski et al., arXiv:1912.12142 (2019)",
        "histopathology",
        (("lung_aca",), ("lung_n",), ("lung_scc",), ("colon_aca",), ("colon_n",)),
        {
            "all": {
                "lung_aca": 5000,
                "lung_n": 5000,
                "lung_scc": 5000,
                "colon_aca": 5000,
                "colon_n": 5000,
            }
        },
        markers=("lungcolonimageset", "lc25000"),
        class_match=3,
        per_patient="augmented copies of 1,250 original images",
        official_split="none",
        split_leaks="its 25,000 images are augmented copies of 1,250 originals (Borkowski et al."
        "), so any split puts copies of one original on both sides",
    ),
    KnownSet(
        "kidney_ct",
        "CT Kidney: Normal-Cyst-Tumor-Stone (Islam et al.)",
        # Islam et al., Sci Rep 12:11440, 2022 (Kaggle nazmul0087/ct-kidney-dataset-normal-cyst-
        # tumor-and-stone): 12,446 CT slices, cyst 3,709, normal 5,077, stone 1,377, tumor 2,283.
        "Islam et al., Sci Rep 2022; Kaggle nazmul0087/ct-kidney-dataset-normal-cyst-tumor-and-"
        "stone",
        "CT",
        (("Cyst",), ("Normal",), ("Stone",), ("Tumor",)),
        {"all": {"Cyst": 3709, "Normal": 5077, "Stone": 1377, "Tumor": 2283}},
        markers=("ctkidneydatasetnormalcysttumorstone", "ctkidneydatasetnormalcysttumorandstone"),
        class_match=4,
        per_patient="many CT slices per patient",
        names_group_patients=False,
        official_split="none",
    ),
    KnownSet(
        "strip_ai",
        "Mayo Clinic STRIP AI (Kaggle competition)",
        # Kaggle mayo-clinic-strip-ai train.csv: 754 whole-slide images, CE 547 / LAA 207, with
        # patient_id and image_num columns (several slides per patient).
        "Kaggle mayo-clinic-strip-ai (data page, train.csv)",
        "histopathology",
        (("CE",), ("LAA",)),
        {"train": {"CE": 547, "LAA": 207}},
        markers=("mayoclinicstripai",),
        per_patient="several slides per patient (patient_id, image_num in train.csv)",
        official_split="none",
    ),
    KnownSet(
        "pneumoniamnist",
        "PneumoniaMNIST (MedMNIST v2)",
        # Yang et al., Sci Data 10:41, 2023: from Kermany's chest X-rays, train 4,708 (normal
        # 1214, pneumonia 3494), val 524 (135 / 389), test 624 (234 / 390).
        "Yang et al., MedMNIST v2, Sci Data 2023",
        "chest X-ray",
        (),
        {
            "train": {"normal": 1214, "pneumonia": 3494},
            "val": {"normal": 135, "pneumonia": 389},
            "test": {"normal": 234, "pneumonia": 390},
        },
        markers=("pneumoniamnist",),
        per_patient="several X-rays per child (as its source, Kermany et al.)",
    ),
    KnownSet(
        "dermamnist",
        "DermaMNIST (MedMNIST v2)",
        # Yang et al. 2023: HAM10000 resized, train 7,007 / val 1,003 / test 2,005.
        "Yang et al., MedMNIST v2, Sci Data 2023",
        "dermoscopy",
        (),
        markers=("dermamnist",),
        extra_totals=(7007, 1003, 2005),
        per_patient="several images of one lesion (as its source, HAM10000)",
    ),
)

BY_KEY = {k.key: k for k in KNOWN}


# --- recognising a set ---------------------------------------------------------------------------
def norm(text: str) -> str:
    """Lower-case letters and digits only: `Mild_Demented` and `MildDemented` are one name."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def tokens(strings: Iterable[str]) -> set[str]:
    """Every path component of `strings` (with and without its extension), and every string,
    as normalised names."""
    out: set[str] = set()
    for s in strings:
        if len(s) > 300:
            continue
        for part in re.split(r"[/\\]+", s):
            part = part.strip()
            if not part:
                continue
            out.add(norm(part))
            stem, dot, ext = part.rpartition(".")
            if dot and stem and 1 <= len(ext) <= 5:
                out.add(norm(stem))
                out.add(norm(ext))
    out.discard("")
    return out


@dataclass
class Match:
    known: KnownSet
    why: list[str]  # what recognised it, as a reader can check it
    score: int
    found_split: dict[int, str] = field(default_factory=dict)  # images -> split, from the log
    # the script's class count is the set's (None: either unknown); when not, the script uses
    # a subset or a relabelling and the published counts do not describe its data
    classes_agree: bool | None = None


def _class_hits(known: KnownSet, names: set[str]) -> list[str]:
    hits = []
    for spellings in known.classes:
        if any(norm(s) in names for s in spellings):
            hits.append(spellings[0])
    return hits


def recognise(
    strings: Iterable[str],
    found: Iterable[tuple[int, int, str]] = (),
    classes: int | None = None,
) -> Match | None:
    """The known set a script's strings (paths, slugs, class names) and a log's `Found N images
    belonging to K classes` lines point to; None when none, or two equally well."""
    strings = list(strings)
    names = tokens(strings)
    found = list(found)
    best: list[Match] = []
    for known in KNOWN:
        why: list[str] = []
        score = 0
        marker = next((m for m in known.markers if m in names), None)
        if marker:
            shown = _shown(strings, marker)
            why.append(f"'{shown}' names it")
            score += 100
        sig = next((s for s in known.signatures if all(t in names for t in s)), None)
        if sig and not marker:
            why.append("the names " + " and ".join(f"'{_shown(strings, t)}'" for t in sig))
            score += 60
        hits = _class_hits(known, names)
        if known.class_match and len(hits) >= known.class_match:
            why.append(f"class folders {', '.join(hits)}")
            score += 10 * len(hits)
        elif hits and score:
            score += 2 * len(hits)
        seen: dict[int, str] = {}
        totals = known.totals()
        for n, k, _text in found:
            if n in totals and (not known.classes or k == len(known.classes)):
                seen[n] = totals[n]
        if seen:
            shown = "; ".join(f"'Found {n} ...' = its {s} split" for n, s in seen.items())
            why.append(f"the log: {shown}")
            score += 30 * len(seen)
        if not why:
            continue
        agree = None if classes is None or not known.classes else len(known.classes) == classes
        score += 5 if agree else 0
        best.append(Match(known, why, score, seen, agree))
    if not best:
        return None
    best.sort(key=lambda m: -m.score)
    if len(best) > 1 and best[1].score == best[0].score:
        return None
    return best[0]


def recognise_run(facts: ScriptFacts | None, log_texts: Iterable[str] = ()) -> Match | None:
    """The known set of a foreign run: the script's strings and folders (ScriptFacts.names,
    data_dirs), its class count, and the log's `Found N images belonging to K classes` lines."""
    from medfit.diagnose.foreign.read_text import found_totals

    strings = [s for _, s in facts.names] + list(facts.data_dirs.values()) if facts else []
    found = [t for text in log_texts for t in found_totals(text)]
    return recognise(strings, found, facts.classes if facts else None)


def _shown(strings: list[str], token: str) -> str:
    """The string of the script a normalised token came from (for the evidence)."""
    for s in strings:
        for part in re.split(r"[/\\]+", s):
            stem = part.rpartition(".")[0] or part
            if norm(part) == token or norm(stem) == token:
                return part
    return token


def mixes_patients(order: str, names_group_patients: bool | None) -> bool:
    """Whether an image-level split of this kind puts images of one patient on both sides:
    a random draw does; a block of each class folder's sorted file names (Keras
    ImageDataGenerator's validation_split) does only where the names do not keep a patient's
    images together; a block of a table's rows unless the table is ordered by patient; the last
    rows of arrays (fit(validation_split)) cannot be told."""
    if order == "shuffled":
        return True
    if order == "sorted_names":
        return names_group_patients is False
    if order == "table_order":
        return names_group_patients is not True
    return False


def official_split_of(known: KnownSet, directory: str | None) -> str | None:
    """train | val | test when `directory` ends in one of the set's published split folders."""
    if not directory:
        return None
    parts = [norm(p) for p in re.split(r"[/\\]+", directory.rstrip("/\\")) if p]
    if not parts:
        return None
    leaf = parts[-1]
    for split, names in known.folders.items():
        if leaf in {norm(n) for n in names}:
            return split
    return None
