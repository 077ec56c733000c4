"""Public medical image-classification data sets that tutorials and notebooks train on, as data.

    from medfit.diagnose.foreign.datasets import recognise_run
    match = recognise_run(report.facts, [log_text])
    if match: print(match.known.name, match.known.ratio("train"), match.why)

Each entry says how a reader recognises the set in a script or a log (folder names, Kaggle
slugs, class-folder names as they appear in paths, the totals Keras prints as "Found N images
belonging to K classes."), its images per class in each published split, whether several images
come from one patient/slide/lesion (so an image-level random split leaks) and what is known to be
wrong with it. Every number cites its source in a comment: the data set's own page or paper, a
public copy of its files (folder listing or label file) or dataset-loading code that hard-codes
it, never a run that used it; a number no public source could be found for is marked
"(unverified: from the dataset page as remembered)". Nothing here reads files or imports a
framework.
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
        # Split totals: the Kaggle page text and its HF mirror's card (train 5216, validation 16,
        # test 624; "5,863 X-Ray images")
        # https://huggingface.co/datasets/hf-vision/chest-xray-pneumonia (README.md). Per class
        # (train NORMAL 1341 / PNEUMONIA 3875, val 8 / 8, test 234 / 390): the class counts of that
        # mirror in
        # https://hugingapi.com/AurevinP/pneumonia-classifier-effnetb0/blob/main/REPORT.md. Mendeley
        # rscbjbr9sj v2 (Kermany et al., Cell 172(5):1122, 2018): 5,232 train / 624 test
        # (original_splits_num_samples of a dataset card in public code); its per-class 3,883
        # pneumonia / 1,349 normal (unverified: from the dataset page as remembered).
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
        # X-rays per child; NORMAL files IM-<patient>-<n>.jpeg / NORMAL2-IM-<patient>-<n>
        # (unverified: from the dataset page as remembered).
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
        # Kaggle kermany2018 OCT2017/: train CNV 37205, DME 11348, DRUSEN 8616, NORMAL 26315; test
        # 242 per class; val 8 per class (unverified: from the dataset page as remembered; they sum
        # to 84,484 where the page text says "84,495 X-Ray images (JPEG)", quoted in
        # https://github.com/Anuttan/Retinal-Defect-Classification README.md). File names
        # (disease)-(randomized patient ID)-(image number by this patient): same README. Kermany et
        # al., Cell 2018 (Mendeley rscbjbr9sj).
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
        flaws=(
            "the Kaggle val folder holds 32 images (8 per class)",
            "the page calls train and test independent patients, but in the Mendeley release "
            "(108,312 train / 1,000 test) scans of some patients are in both (Translational "
            "Vision Science & Technology 2021, https://tvst.arvojournals.org/article.aspx?"
            "articleid=2778252)",
        ),
    ),
    KnownSet(
        "covid_radiography",
        "COVID-19 Radiography Database (Kaggle tawsifurrahman/covid19-radiography-database)",
        # Kaggle page (v4): COVID 3616, Normal 10192, Lung Opacity 6012, Viral Pneumonia 1345;
        # earlier releases had three classes (219 COVID / 1341 normal / 1345 viral pneumonia, then
        # 1200 COVID); Normal holds 8851 RSNA + 1341 Kaggle chest-xray-pneumonia images, Viral
        # Pneumonia all comes from that (pediatric) set. Page text as mirrored in
        # https://github.seenke.com/karimosman89/X_Ray_Project. Chowdhury et al., IEEE Access
        # 8:132665, 2020; Rahman et al., Comput Biol Med 132, 2021.
        "Kaggle tawsifurrahman/covid19-radiography-database; Chowdhury et al. 2020; Rahman et "
        "al. 2021",
        "chest X-ray",
        (("COVID",), ("Normal",), ("Lung_Opacity",), ("Viral Pneumonia",)),
        {"all": {"COVID": 3616, "Normal": 10192, "Lung_Opacity": 6012, "Viral Pneumonia": 1345}},
        markers=("covid19radiographydataset", "covid19radiographydatabase"),
        # all four: COVID / Normal / Viral Pneumonia alone is also this set's earlier 3-class
        # releases (other counts) and other 3-class COVID sets
        class_match=4,
        official_split="none",
        flaws=(
            "images pooled from several public collections; no patient ids are published",
            "Normal includes 1,341 and Viral Pneumonia all 1,345 images of the pediatric Kaggle "
            "chest-xray-pneumonia set (page text), so age and source separate the classes",
        ),
    ),
    KnownSet(
        "nih_chestxray14",
        "NIH ChestX-ray14 (Wang et al., CVPR 2017)",
        # Wang et al. 2017 and the NIH release README: 112,120 frontal images of 30,805 patients, 14
        # findings (multi-label) + No Finding (https://github.com/bmariuszb/NIH-chestX-ray
        # README.md); official train_val_list.txt (86,524) / test_list.txt (25,596)
        # (https://github.com/gregorywmorris/radiology-chest README.md), split by patient. Labels
        # "expected to be >90% accurate" (Kaggle page text in
        # https://github.com/anshuak100/NIH-Chest-X-ray-Dataset README.md).
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
        # Kaggle page: 7,023 images combining figshare, SARTAJ and Br35H, SARTAJ's glioma images
        # replaced by figshare ones (page text in
        # https://github.com/begumarici/BrainTumorDetection-DeepLearning dataset_description.md).
        # Per class, the folder listing of a public copy of the download
        # (https://github.com/KomalChaudhari8/BRAIN_TUMOR_APP at e21cbcb): Training glioma 1321,
        # meningioma 1339, pituitary 1457; Testing 300, 306, 405, 300; its Training/notumor holds
        # 1591 files numbered to Tr-no_1594 with four numbers missing, and 1595 is what the page's
        # 7,023 leaves. The figshare part is 3,064 T1-CE slices of 233 patients (Cheng et al. 2015).
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
            "217 of the 1,311 Testing images have a byte-identical copy in Training (meningioma "
            "107, notumor 105, pituitary 5; same git blob in the public copy cited above); on "
            "near-duplicates in public brain-tumour sets see Saifullah et al., ICTAI 2025 "
            "(https://iris.unitn.it/handle/11572/488191)",
        ),
    ),
    KnownSet(
        "brain_bhuvaji",
        "Brain Tumor Classification (MRI) (Kaggle sartajbhuvaji/brain-tumor-classification-mri)",
        # Folder counts of the author's repository the Kaggle set was published from
        # (https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet at 3ea9f4e): Training
        # glioma_tumor 826, meningioma_tumor 822, no_tumor 395, pituitary_tumor 827 (2,870); Testing
        # 100, 115, 105, 74 (394). Nickparvar's page reports its glioma images as wrongly
        # categorised (page text in https://github.com/omar-adel1/Brain-Tumor-Classification
        # README.md).
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
        # several slices and planes per patient (unverified: from the dataset page as remembered)
        per_patient="several MRI slices per patient scan (axial/coronal/sagittal) and no patient "
        "ids",
        names_group_patients=False,
        flaws=(
            "glioma images reported wrongly categorised (masoudnickparvar dataset page)",
            "byte-identical files within and across Training/Testing: 88 of the 105 Testing "
            "no_tumor images are also in Training (same git blob in the repository cited above)",
        ),
    ),
    KnownSet(
        "brain_figshare",
        "figshare brain tumour dataset (Cheng et al.)",
        # Cheng et al., PLoS ONE 10(10):e0140381, 2015; figshare 1512427: 3,064 T1-weighted
        # contrast-enhanced slices of 233 patients: meningioma 708, glioma 1426, pituitary 930
        # (README text in https://github.com/nanonane/RCS-YOLO dataset-brain-tumor/categorized/
        # README.txt).
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
        # Kaggle page: 3,000 images, yes 1500 / no 1500 ("1,500 healthy + 1,500 tumor images",
        # https://github.com/gfnnnb/MM-NeuroOnco docs/data_sources.md); its other folders (an
        # unlabelled pred folder) unverified: from the dataset page as remembered.
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
        # Kaggle page navoneel/brain-mri-images-for-brain-tumor-detection: 253 images, yes 155 / no
        # 98 (https://github.com/Martina195/Neuronal-Network-for-MRI-Brain-Tumor-Detection
        # README.md), folder brain_tumor_dataset/{yes,no} (155 / 98 files in the copy in
        # https://github.com/kianpaya/Brain-tumor-cnn at f631020).
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
        "Alzheimer MRI 4 classes (Kaggle; axial MRI slices, sources not documented)",
        # Kaggle "Alzheimer MRI Preprocessed Dataset (128 x 128)": 6,400 images, Mild Demented 896,
        # Moderate Demented 64, Non Demented 3200, Very Mild Demented 2240, "collected from several
        # websites/hospitals/public repositories" (page text copied at
        # https://www.scribd.com/document/789307185/About-dataset-dementia); the tourist55
        # "Alzheimer's Dataset (4 class of Images)" holds the same 6,400 in train 5121
        # (717/52/2560/1792) / test 1279 (179/12/640/448)
        # (https://github.com/mMosiur/Magisterium-Informatyka Dataset/README.md). Slices of
        # whole-brain MRI volumes, several per subject with no subject ids (unverified: from the
        # dataset page as remembered); slice-level splits inflate accuracy (Yagis et al., Sci Rep
        # 11:22544, 2021, https://www.nature.com/articles/s41598-021-01681-w).
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
        # Tschandl et al., Sci Data 5:180161, 2018: 10,015 images, akiec 327, bcc 514, bkl 1099, df
        # 115, mel 1113, nv 6705, vasc 142, of 7,470 lesion_ids (dx and lesion_id columns of
        # HAM10000_metadata.csv as copied in
        # https://github.com/patink/Skin-cancer-classification-using-CNN): several images of one
        # lesion.
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
        per_patient="10,015 images of 7,470 lesions (lesion_id in HAM10000_metadata.csv)",
        names_group_patients=False,
        official_split="none",
        flaws=("nv is 67% of the images",),
    ),
    KnownSet(
        "isic2019",
        "ISIC 2019 challenge training set",
        # ISIC 2019 ground truth: 25,331 images, MEL 4522, NV 12875, BCC 3323, AK 867, BKL 2624, DF
        # 239, VASC 253, SCC 628 (ISIC_2019_Training_GroundTruth.csv as copied in
        # https://github.com/ToreGore/AI-Health; its metadata copy leaves lesion_id blank for 2,084
        # images).
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
        # Rotemberg et al., Sci Data 8:34, 2021: 33,126 images of 2,056 patients, 584 melanoma
        # (https://pmc.ncbi.nlm.nih.gov/articles/PMC7843971).
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
        # Rajaraman et al., PeerJ 6:e4568, 2018: 27,558 cell images "with equal instances of
        # parasitized and uninfected cells" (https://www.tensorflow.org/datasets/catalog/malaria),
        # i.e. 13,779 / 13,779; from thin smears of "150 P. falciparum-infected and 50 healthy
        # patients" (NIH page ceb.nlm.nih.gov/repositories/malaria-datasets, as quoted in public
        # READMEs); file names C<slide>P<patient>..._cell_<n>.png (unverified: from the dataset page
        # as remembered).
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
        # Kaggle page: 12,500 augmented images, about 3,000 per cell type, made from 410 original
        # BCCD images (page text in
        # https://github.com/Georgeliu1128/Blood-Cell-identification-by-TensorFlow README.md). Per
        # class, dataset2-master/images TRAIN: EOSINOPHIL 2497, LYMPHOCYTE 2483, MONOCYTE 2478,
        # NEUTROPHIL 2499; TEST: 623, 620, 620, 624; TEST_SIMPLE 71 images (unverified: from the
        # dataset page as remembered).
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
        # Acevedo et al., Data in Brief 30:105474, 2020: 17,092 images in eight groups
        # (https://pmc.ncbi.nlm.nih.gov/articles/PMC7182702); per class neutrophil 3329, eosinophil
        # 3117, basophil 1218, lymphocyte 1214, monocyte 1420, ig 2895, erythroblast 1551, platelet
        # 2348 (unverified: from the dataset page as remembered).
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
        # train_labels.csv (label 0: 130,908, label 1: 89,117), 57,458 in test/ (counts of the
        # download in https://geeksrepos.com/friedunit/CNN-Cancer-Detection); PCam patches with its
        # duplicates removed (page text in
        # https://www.github.com/Axel-Bravo/19_kaggle_Histopathologic-Cancer-Detection); no slide id
        # in the files.
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
        # PCam README (https://github.com/basveeling/pcam README.md): 327,680 patches, train 262,144
        # / valid 32,768 / test 32,768, 50/50 positive:negative in every split, no WSI shared
        # between splits, from the 400 WSIs of Camelyon16.
        "Veeling et al., MICCAI 2018; github.com/basveeling/pcam README",
        "histopathology",
        (),
        markers=("pcam", "patchcamelyon"),
        per_patient="patches of 400 whole-slide images",
        official_split="patient-disjoint",
    ),
    KnownSet(
        "idc_breast",
        "Breast Histopathology Images, IDC (Kaggle paultimothymooney/breast-histopathology-images)",
        # Kaggle page: 277,524 50x50 patches from 162 whole-mount slides (IDC negative 198,738,
        # positive 78,786), file names <id>_idx5_x.._y.._class<0|1>, <id> the patient (page text
        # in https://github.com/Tokoka2024/INFO8665_IDC-Detection-Project README.md); 279 patient-id
        # folders (https://github.com/xzong0619/Breast-Cancer-Detection README.md); Janowczyk &
        # Madabhushi, J Pathol Inform 7:29, 2016; Cruz-Roa et al., SPIE 2014.
        "Kaggle paultimothymooney/breast-histopathology-images; Janowczyk & Madabhushi 2016",
        "histopathology",
        (("0",), ("1",)),
        {"all": {"0": 198738, "1": 78786}},
        markers=("breasthistopathologyimages", "idcregularps50idx5"),
        per_patient="277,524 patches of 279 patient ids (patient id folders and file-name prefix)",
        names_group_patients=True,
        official_split="none",
    ),
    KnownSet(
        "breakhis",
        "BreakHis breast histopathology (Spanhol et al.)",
        # Spanhol et al., IEEE TBME 63(7), 2016: 7,909 images of 82 patients, benign 2,480,
        # malignant 5,429, at 40x/100x/200x/400x (table of
        # web.inf.ufpr.br/vri/databases-software/breast-cancer-histopathological-database-breakhis;
        # the page's prose says 9,109); the paper's protocol splits by patient.
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
        # benign 437, malignant 210 (https://huggingface.co/datasets/Angelou0516/BUSI README.md);
        # each image's segmentation mask sits beside it (_mask.png, _mask_N.png).
        "Al-Dhabyani et al., Data in Brief 2020 (Dataset_BUSI_with_GT)",
        "breast ultrasound",
        (("normal",), ("benign",), ("malignant",)),
        {"all": {"normal": 133, "benign": 437, "malignant": 210}},
        markers=("datasetbusiwithgt", "busi"),
        per_patient="780 images of 600 women",
        official_split="none",
        flaws=(
            "the ground-truth masks (*_mask.png) lie in the class folders beside the images",
            "duplicated images, lesions in both the benign and malignant folders and axilla "
            "images among the breast images (Pawłowska et al., Data in Brief 2023, "
            "https://pmc.ncbi.nlm.nih.gov/articles/PMC10293973)",
        ),
    ),
    KnownSet(
        "knee_oa_chen",
        "Knee Osteoarthritis Severity Grading (Chen, Mendeley 56rmx5bjcr; OAI)",
        # Chen P., Mendeley Data 56rmx5bjcr v1, 2018 (Kaggle shashwatwork/knee-osteoarthritis-
        # dataset-with-severity): train 5,778 and val 826 images (page text, quoted in public
        # READMEs); 8,260 in all, KL 0-4 3253/1495/2175/1086/251
        # (https://github.com/NicoleStrel/Deep-Learning-with-Differential-Privacy
        # knee-data/README.md), which leaves 1,656 for test (the quoted page text says 1346, which
        # does not add up). Per split train 2286/1046/1516/757/173, val 328/153/212/106/27, test
        # 639/296/447/223/51 (they add up to those totals; the split breakdown itself unverified:
        # from the dataset page as remembered); both knees of OAI participants.
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
        # Kaggle aptos2019-blindness-detection train.csv: 3,662 fundus photos, 1,928 in test
        # (https://github.com/pinguinos/cnn-retinopathy-classifier documentation/
        # data_acquisition.md); diagnosis 0: 1805, 1: 370, 2: 999, 3: 193, 4: 295 (unverified: from
        # the dataset page as remembered).
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
        # Kaggle diabetic-retinopathy-detection trainLabels.csv: 35,126 images, level 0: 25810, 1:
        # 2443, 2: 5292, 3: 873, 4: 708; "a left and right field is provided for every subject"
        # (<id>_left/_right.jpeg)
        # (https://academictorrents.com/details/08c244595c6cc4ec403b21023cf99c2b085cbc72).
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
        # classification): 15,135 cell images of 118 participants in all
        # (https://github.com/edolior/Leukemia-Contrastive-Prediction README.md), many cells per
        # subject; training folds fold_0..fold_2 with ALL 7,272 / HEM 3,389 (unverified: from the
        # dataset page as remembered).
        "C-NMC 2019 challenge (TCIA); Kaggle andrewmvd/leukemia-classification",
        "blood smear microscopy",
        (("all",), ("hem",)),
        {"train": {"all": 7272, "hem": 3389}},
        markers=("cnmc", "cnmc2019"),
        # the Kaggle slug's last part alone ("leukemia-classification") is a generic project name
        signatures=(("andrewmvd", "leukemiaclassification"),),
        per_patient="many cells per subject",
        official_split="unknown",
    ),
    KnownSet(
        "all_aria",
        "Acute Lymphoblastic Leukemia images (Aria et al., Kaggle mehradaria/leukemia)",
        # Aria et al., Data in Brief 2021 / Kaggle: 3,256 images of 89 patients
        # (https://github.com/arkodasgupta0412/LGLD-Net DATASET.md), Benign 504, Early 985, Pre 963,
        # Pro 804 (https://github.com/divyanshupatel17/Leukemia-Diagnosis-EfficientNetV2-vs-CNNs
        # docs/assets/tables/table_5.md). Kaggle mohammadamireshraghi/blood-cell-cancer- all-4class
        # publishes 3,242 images of the same 89 patients (https://github.com/rajsweta/OncoType
        # training_data.md).
        "Aria et al. 2021; Kaggle mehradaria/leukemia",
        "blood smear microscopy",
        (("Benign",), ("Early",), ("Pre",), ("Pro",)),
        {"all": {"Benign": 504, "Early": 985, "Pre": 963, "Pro": 804}},
        markers=("bloodcellcancerall",),
        class_match=4,
        extra_totals=(3242,),
        per_patient="3,256 images of 89 patients",
        official_split="none",
    ),
    KnownSet(
        "lc25000",
        "LC25000 lung and colon histopathology (Borkowski et al.)",
        # Borkowski et al., arXiv:1912.12142, 2019: 25,000 images, 5,000 per class
        # (https://github.com/tampapath/lung_colon_image_set README), augmented from 750 lung and
        # 500 colon originals (Kaggle page text, quoted in public notebooks).
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
        # tumor-and-stone): 12,446 CT slices, coronal and axial cuts
        # (https://www.nature.com/articles/s41598-022-15634-4); cyst 3,709, normal 5,077, stone
        # 1,377, tumor 2,283 (Class column of the set's kidneyData.csv as copied in
        # https://github.com/Echo2f13/kidney-tumor-detection).
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
        # Kaggle mayo-clinic-strip-ai train.csv: 754 whole-slide images of 632 patients, CE 547 /
        # LAA 207, with patient_id and image_num columns (train.csv as copied in
        # https://github.com/gunesevitan/mayo-clinic-strip-ai data/train.csv).
        "Kaggle mayo-clinic-strip-ai (data page, train.csv)",
        "histopathology",
        (("CE",), ("LAA",)),
        {"train": {"CE": 547, "LAA": 207}},
        markers=("mayoclinicstripai",),
        per_patient="754 slides of 632 patients (patient_id, image_num in train.csv)",
        official_split="none",
    ),
    KnownSet(
        "pneumoniamnist",
        "PneumoniaMNIST (MedMNIST v2)",
        # Yang et al., Sci Data 10:41, 2023: from Kermany's chest X-rays, train 4,708 / val 524 /
        # test 624 (MedMNIST INFO dict, n_samples, as copied in
        # https://github.com/wz199903/AMLS_23-24_SN21185548 A/info.py); train normal 1214 /
        # pneumonia 3494 (https://clinicalai.guide/labs/module-06/hw5_report.html); test is
        # Kermany's test (234 / 390, "use its source validation set as the test set", INFO
        # description); val 135 / 389 (unverified: from the dataset page as remembered).
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
        # Yang et al. 2023: HAM10000 resized, train 7,007 / val 1,003 / test 2,005
        # (https://github.com/haodongzhang0118/stable-datasets docs/source/datasets/medmnist.rst).
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
