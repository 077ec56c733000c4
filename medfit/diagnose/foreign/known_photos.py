"""The known public sets of photographs and slides: dermoscopy, fundus photography, blood smear
microscopy and histopathology (records of known_set.py; every number cites its source, as
datasets.py says)."""

from __future__ import annotations

from medfit.diagnose.foreign.known_set import KnownSet

PHOTOS: tuple[KnownSet, ...] = (
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
