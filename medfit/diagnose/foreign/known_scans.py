"""The known public sets of scans: chest and knee X-ray, retinal OCT, brain MRI, CT and breast
ultrasound (records of known_set.py; every number cites its source, as datasets.py says)."""

from __future__ import annotations

from medfit.diagnose.foreign.known_set import KnownSet

SCANS: tuple[KnownSet, ...] = (
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
)
