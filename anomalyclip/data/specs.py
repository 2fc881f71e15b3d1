"""One specification per dataset: the facts every other table is derived from.

Each `DatasetSpec` holds a dataset's title and the name the paper prints, its domain, whether it has pixel masks,
its categories, the folder layouts it is read from, where it comes from (archives with sha256, homepage, licence,
manual steps), and the names users give their downloads. The registry (`data.adapters.registry.DATASETS`), the
downloads (`data.download`), the paper's dataset names (`paper.DATASET_NAMES`), `studies.DATASET_FOLDERS` and the
table in data/README.md (`python -m anomalyclip.data.specs data/README.md` rewrites it) all come from `SPECS`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from anomalyclip.data.adapters.layouts import (
    Layout,
    class_folders_layout,
    dagm_layout,
    headct_layout,
    meta_json_layout,
    mvtec_layout,
    paired_layout,
    visa_layout,
)
from anomalyclip.data.adapters.sdd import SDD_CATEGORY, kolektor_layout


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its address, the name it is saved under and its sha256 (None: not known yet)."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows about one dataset.

    `native` layouts are the ones its download has (`auto` detection looks at these only); `fallbacks` are prepared
    copies it also accepts. No `archives`: it cannot be fetched automatically, and `instructions` (with `{target}`
    for the folder it belongs in) say how to get it by hand. `aliases` are other names users give the dataset or its
    folder (matched ignoring case, spaces and punctuation); `stand_ins` are folders read with this dataset's loader
    that are not this dataset (never compared with the paper).
    """

    name: str
    title: str
    paper_name: str | None = None
    domain: str = "any"
    pixel_level: bool = True
    native: tuple[Layout, ...] = ()
    fallbacks: tuple[Layout, ...] = ()
    categories: tuple[str, ...] = ()
    archives: tuple[Archive, ...] = ()
    licence: str = ""
    homepage: str = ""
    instructions: str = ""
    aliases: tuple[str, ...] = ()
    stand_ins: tuple[str, ...] = ()
    summary: str = ""
    """A few words on the contents for the README (the sizes come from `test_split`)."""
    test_split: tuple[int, int] | None = None
    """(normal, anomalous) images of the test split the paper evaluates, as its dataset table lists them."""
    category_split: tuple[tuple[int, int], ...] = ()
    """`test_split` per category, in the order of `categories`, where the dataset's own pages publish it."""
    test_split_checked: bool = True
    """False where `test_split` was not checked against a source: it sizes the benchmarks' stand-ins only, and the
    README says so."""
    notes: str = ""
    """What the README says about the layout beyond the layouts' own descriptions."""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the dataset is known by: its name, title, the paper's name and the aliases."""
        return (self.name, self.title, *((self.paper_name,) if self.paper_name else ()), *self.aliases)

    @property
    def layouts(self) -> tuple[Layout, ...]:
        return self.native + self.fallbacks

    @property
    def url(self) -> str | None:
        """The main archive's address; None when the dataset must be fetched by hand."""
        return self.archives[0].url if self.archives else None

    @property
    def target(self) -> str:
        """The folder under a download root that the dataset is unpacked into."""
        return self.name

    def test_sizes(self) -> dict[str, tuple[int, int]]:
        """(normal, anomalous) test images per category: as published, else `test_split` spread evenly over the
        categories (the first ones take the remainders); empty when the split is not recorded."""
        if self.category_split:
            return dict(zip(self.categories, self.category_split, strict=True))
        if self.test_split is None:
            return {}
        k = len(self.categories)
        return {c: tuple(n // k + (i < n % k) for n in self.test_split) for i, c in enumerate(self.categories)}


def name_key(name: str) -> str:
    """A name as aliases are matched: lower case, letters and digits only ('MVTec AD' -> 'mvtecad')."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _manual(*steps: str) -> str:
    """Numbered manual steps, one per line."""
    return "\n".join(f"  {i}. {step}" for i, step in enumerate(steps, 1))


def _kaggle(slug: str, layout: str) -> str:
    """Instructions for a dataset that Kaggle serves only to signed-in users."""
    return _manual(
        f"Sign in at https://www.kaggle.com and open https://www.kaggle.com/datasets/{slug}",
        f"Click Download (or, with the kaggle CLI and an API token: kaggle datasets download -d {slug})",
        f"Unzip the archive into {{target}}; expected layout: {layout}",
    )


def _spec(*, native: list[Layout], fallbacks: list[Layout] = (), categories=(), **facts) -> DatasetSpec:
    """Every dataset also accepts the official meta.json after its own layouts."""
    return DatasetSpec(
        native=tuple(native), fallbacks=(*fallbacks, meta_json_layout()), categories=tuple(categories), **facts
    )


CC_BY_NC_SA = "CC BY-NC-SA 4.0 (non-commercial), https://creativecommons.org/licenses/by-nc-sa/4.0/"
_POLYP = ("colon", "polyp")

# fmt: off
MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
    "tile", "toothbrush", "transistor", "wood", "zipper",
)
VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
    "pcb4", "pipe_fryum",
)
MVTEC_CATEGORY_SPLIT = (
    (20, 63), (58, 92), (23, 109), (28, 89), (21, 57), (40, 70), (32, 92), (22, 93), (26, 141), (41, 119), (33, 84),
    (12, 30), (60, 40), (19, 60), (32, 119),
)
VISA_CATEGORY_SPLIT = (  # split_csv/1cls.csv
    (100, 100), (60, 100), (50, 100), (50, 100), (50, 100), (100, 100), (100, 100), (100, 100), (100, 100),
    (101, 100), (101, 100), (50, 100),
)
DTD_CATEGORIES = (
    "Woven_001", "Woven_127", "Woven_104", "Stratified_154", "Blotchy_099", "Woven_068", "Woven_125",
    "Marbled_078", "Perforated_037", "Mesh_114", "Fibrous_183", "Matted_069",
)
# fmt: on

SPECS: tuple[DatasetSpec, ...] = (
    _spec(
        name="mvtec",
        title="MVTec AD",
        paper_name="MVTec AD",
        domain="industrial",
        native=[mvtec_layout()],
        categories=MVTEC_CATEGORIES,
        archives=(
            Archive(
                "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/download/420938113-1629960298/"
                "mvtec_anomaly_detection.tar.xz",
                "mvtec_anomaly_detection.tar.xz",
                "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
            ),
        ),
        licence=CC_BY_NC_SA,
        homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
        instructions=_manual(
            "MVTec rotates its download links; if this one fails, open the homepage, accept the licence and "
            "copy the address of 'Download the whole dataset' (mvtec_anomaly_detection.tar.xz, 4.9 GB)",
            "Unpack it into {target} (15 category folders: bottle, cable, ..., zipper)",
        ),
        aliases=("MVTec AD", "mvtec_anomaly_detection"),
        summary="15 categories",
        test_split=(467, 1258),
        category_split=MVTEC_CATEGORY_SPLIT,
    ),
    _spec(
        name="visa",
        title="VisA",
        paper_name="VisA",
        domain="industrial",
        native=[visa_layout()],
        categories=VISA_CATEGORIES,
        archives=(
            Archive(
                "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
                "VisA_20220922.tar",
                "2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
            ),
        ),
        licence="CC BY 4.0 (the LICENSE-DATASET file of amazon-science/spot-diff), "
        "https://creativecommons.org/licenses/by/4.0/",
        homepage="https://github.com/amazon-science/spot-diff",
        summary="12 categories",
        test_split=(962, 1200),
        category_split=VISA_CATEGORY_SPLIT,
        notes="images `<object>/Data/Images/{Normal,Anomaly}/*.JPG`, masks `<object>/Data/Masks/Anomaly/*.png`",
    ),
    _spec(
        name="mpdd",
        title="MPDD",
        paper_name="MPDD",
        domain="industrial",
        native=[mvtec_layout()],
        categories=["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"],
        licence=CC_BY_NC_SA,
        homepage="https://github.com/stepanje/MPDD",
        instructions=_manual(
            "Open https://github.com/stepanje/MPDD and follow its link to the OneDrive folder (Brno "
            "University of Technology); OneDrive has no stable direct address",
            "Download the six category folders and put them in {target} (bracket_black, bracket_brown, "
            "bracket_white, connector, metal_plate, tubes), each in MVTec layout",
        ),
        summary="6 categories",
        test_split=(176, 282),
    ),
    _spec(
        name="btad",
        title="BTAD (beanTech Anomaly Detection)",
        paper_name="BTAD",
        domain="industrial",
        native=[mvtec_layout("ok")],
        categories=["01", "02", "03"],
        archives=(
            Archive(
                "https://avires.dimi.uniud.it/papers/btad/btad.zip",
                "btad.zip",
                "461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
            ),
        ),
        licence=CC_BY_NC_SA,
        homepage="https://avires.dimi.uniud.it/papers/btad/",
        summary="3 categories",
        test_split=(451, 290),
        notes="the download unpacks into `BTech_Dataset_transformed/` (pass that folder); masks are named as their "
        "image, `.png` or `.bmp`",
    ),
    _spec(
        name="sdd",
        title="SDD (KolektorSDD cut into vertical thirds)",
        paper_name="SDD",
        domain="industrial",
        native=[kolektor_layout()],
        fallbacks=[mvtec_layout()],
        categories=[SDD_CATEGORY],
        archives=(
            Archive(
                "https://go.vicos.si/kolektorsdd",
                "KolektorSDD.zip",
                "65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc",
            ),
        ),
        licence=CC_BY_NC_SA,
        homepage="https://www.vicos.si/resources/kolektorsdd/",
        aliases=("KolektorSDD", "KSDD"),
        summary="see the SDD section below",
        test_split=(181, 74),
        notes="labels are palette BMPs; the MVTec-like fallback is a prepared `electrical commutators/` folder",
    ),
    _spec(
        name="dagm",
        title="DAGM 2007 (Weakly Supervised Learning for Industrial Optical Inspection)",
        paper_name="DAGM",
        domain="industrial",
        native=[dagm_layout()],
        categories=[f"Class{i}" for i in range(1, 11)],
        licence="research use; cite the DAGM 2007 competition (see the homepage)",
        homepage="https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection",
        instructions=_kaggle(
            "mhskjelvareid/dagm-2007-competition-dataset-optical-inspection",
            "DAGM_KaggleUpload/Class1..Class10/{Train,Test}/*.PNG with Label/*_label.PNG",
        ),
        aliases=("DAGM 2007",),
        summary="10 classes, Kaggle upload",
        test_split=(6996, 1054),
        test_split_checked=False,
        notes="an image is anomalous exactly when it has a label",
    ),
    _spec(
        name="dtd",
        title="DTD-Synthetic (Aota et al., WACV 2023)",
        paper_name="DTD-Synthetic",
        domain="industrial",
        native=[mvtec_layout()],
        categories=DTD_CATEGORIES,
        licence="research use; textures from DTD (https://www.robots.ox.ac.uk/~vgg/data/dtd/)",
        homepage="https://drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1",
        instructions=_manual(
            "Open https://drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1 (the authors' "
            "Google Drive folder; Google Drive has no stable direct address) and download DTD-Synthetic",
            "Unpack it into {target}: 12 texture folders (Blotchy_099, ..., Woven_127) in MVTec layout",
        ),
        summary="12 textures",
        test_split=(357, 947),
        test_split_checked=False,
        notes="defects in `test/bad`, masks in `ground_truth/bad`",
    ),
    _spec(
        name="headct",
        title="HeadCT (head CT hemorrhage)",
        paper_name="HeadCT",
        domain="medical",
        pixel_level=False,
        native=[headct_layout()],
        fallbacks=[mvtec_layout()],
        categories=["brain"],
        licence="see the Kaggle page (CC BY-SA 4.0 as listed there)",
        homepage="https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage",
        instructions=_kaggle("felipekitamura/head-ct-hemorrhage", "head_ct/NNN.png and labels.csv (id, hemorrhage)"),
        test_split=(100, 100),
        notes="also Kaggle's nested `head_ct/head_ct/`",
    ),
    _spec(
        name="brainmri",
        title="BrainMRI (brain MRI images for brain tumor detection)",
        paper_name="BrainMRI",
        domain="medical",
        pixel_level=False,
        native=[class_folders_layout("no", ["yes"], "brain", "brain_tumor_dataset")],
        fallbacks=[class_folders_layout("no", ["yes"], "brain")],
        categories=["brain"],
        licence="see the Kaggle page",
        homepage="https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
        instructions=_kaggle(
            "navoneel/brain-mri-images-for-brain-tumor-detection", "brain_tumor_dataset/{no,yes}/*.jpg|png"
        ),
        test_split=(98, 155),
        notes="mixed jpg/png, sizes, grey",
    ),
    _spec(
        name="br35h",
        title="Br35H (brain tumor detection 2020)",
        paper_name="Br35H",
        domain="medical",
        pixel_level=False,
        native=[class_folders_layout("no", ["yes"], "brain")],
        categories=["brain"],
        licence="see the Kaggle page",
        homepage="https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection",
        instructions=_kaggle("ahmedhamada0/brain-tumor-detection", "no/*.jpg and yes/*.jpg"),
        test_split=(1500, 1500),
        notes="the unlabelled `pred/` folder is left out (and said so)",
    ),
    _spec(
        name="covid",
        title="COVID-19 Radiography Database",
        paper_name="COVID-19",
        domain="medical",
        pixel_level=False,
        native=[class_folders_layout("normal", ["covid"], "chest")],
        categories=["chest"],
        licence="see the Kaggle page (academic and non-commercial use, cite the authors)",
        homepage="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
        instructions=_kaggle(
            "tawsifurrahman/covid19-radiography-database",
            "COVID-19_Radiography_Dataset/{COVID,Normal,...}/images/*.png",
        ),
        aliases=("COVID-19 Radiography", "COVID-19_Radiography_Dataset"),
        test_split=(1341, 219),
        test_split_checked=False,
        notes="folder names in any case, images directly inside or in `images/`; the lung `masks/` and the other "
        "classes are left out (and said so)",
    ),
    _spec(
        name="isic",
        title="ISIC 2016 Part 1 (skin lesion segmentation), test set",
        paper_name="ISIC",
        domain="medical",
        native=[
            paired_layout(
                image_dir,
                mask_dir,
                "skin",
                "lesion",
                ("{stem}_Segmentation", "{stem}_segmentation"),
                "<name>_segmentation.png",
            )
            for image_dir, mask_dir in (
                ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
                ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
                ("images", "masks"),
            )
        ]
        + [paired_layout("test_images", "test_masks", "skin", "lesion")],
        categories=["skin"],
        archives=(
            Archive(
                "https://isic-challenge-data.s3.amazonaws.com/2016/ISBI2016_ISIC_Part1_Test_Data.zip",
                "ISBI2016_ISIC_Part1_Test_Data.zip",
            ),
            Archive(
                "https://isic-challenge-data.s3.amazonaws.com/2016/ISBI2016_ISIC_Part1_Test_GroundTruth.zip",
                "ISBI2016_ISIC_Part1_Test_GroundTruth.zip",
            ),
        ),
        licence="CC-0 for the ISIC 2016 challenge data, see https://challenge.isic-archive.com/data/",
        homepage="https://challenge.isic-archive.com/data/#2016",
        aliases=("ISIC 2016", "ISIC 2017"),
        stand_ins=("HAM10000",),
        summary="all lesions",
        test_split=(0, 379),
    ),
    _spec(
        name="colondb",
        title="CVC-ColonDB",
        paper_name="CVC-ColonDB",
        domain="medical",
        native=[paired_layout(".", ".", *_POLYP, ("p{stem}",), "p<name>.tiff")],
        fallbacks=[paired_layout("images", "masks", *_POLYP)],
        categories=["colon"],
        licence="research use only; cite Bernal et al., Pattern Recognition 2012",
        homepage="http://vi.cvc.uab.es/colon-qa/cvccolondb/",
        instructions=_manual(
            "Request CVC-ColonDB from the Computer Vision Center (homepage above), or take the CVC-ColonDB "
            "folder of the polyp test collection at https://figshare.com/articles/figure/Polyp_DataSet_zip/21221579",
            "Put it in {target}: images N.tiff and masks pN.tiff, or images/ and masks/",
        ),
        summary="polyps",
        test_split=(0, 380),
    ),
    _spec(
        name="clinicdb",
        title="CVC-ClinicDB",
        paper_name="CVC-ClinicDB",
        domain="medical",
        native=[
            paired_layout(i, m, *_POLYP)
            for i, m in (
                ("images", "masks"),
                ("Original", "Ground Truth"),
                ("TIF/Original", "TIF/Ground Truth"),
                ("PNG/Original", "PNG/Ground Truth"),
            )
        ],
        categories=["colon"],
        licence="research and education only; cite Bernal et al., CMIG 2015",
        homepage="https://polyp.grand-challenge.org/CVCClinicDB/",
        instructions=_manual(
            "Download CVC-ClinicDB from the homepage above (or the CVC-ClinicDB folder of "
            "https://figshare.com/articles/figure/Polyp_DataSet_zip/21221579)",
            "Put it in {target}: images/N.tif and masks/N.tif (TIFF: read with tifffile)",
        ),
        summary="polyps",
        test_split=(0, 612),
        notes="TIFF read with tifffile",
    ),
    _spec(
        name="kvasir",
        title="Kvasir-SEG",
        paper_name="Kvasir",
        domain="medical",
        native=[paired_layout("images", "masks", *_POLYP)],
        categories=["colon"],
        archives=(Archive("https://datasets.simula.no/downloads/kvasir-seg.zip", "kvasir-seg.zip"),),
        licence="research and education only; cite Jha et al., MMM 2020 (see the homepage)",
        homepage="https://datasets.simula.no/kvasir-seg/",
        aliases=("Kvasir-SEG",),
        summary="polyps",
        test_split=(0, 1000),
        notes="lossy JPEG masks: the threshold matters",
    ),
    _spec(
        name="endo",
        title="EndoTect 2020 segmentation test set (Endo)",
        paper_name="Endo",
        domain="medical",
        native=[paired_layout("images", "masks", *_POLYP)],
        categories=["colon"],
        licence="HyperKvasir terms, CC BY 4.0 (https://datasets.simula.no/hyper-kvasir/)",
        homepage="https://endotect.com",
        instructions=_manual(
            "Follow the data link on https://endotect.com (EndoTect 2020, ICPR) to the segmentation task's "
            "test images and masks; the download is given to registered participants",
            "Put them in {target}: images/<id>.jpg and masks/<id>.png",
        ),
        aliases=("EndoTect",),
        test_split=(0, 200),
        test_split_checked=False,
    ),
    _spec(
        name="tn3k",
        title="TN3K (thyroid nodule ultrasound)",
        paper_name="TN3K",
        domain="medical",
        native=[paired_layout("test-image", "test-mask", "thyroid", "nodule")],
        categories=["thyroid"],
        licence="research use; see https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
        homepage="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
        instructions=_manual(
            "Open the homepage and follow its Google Drive link to TN3K (no stable direct address)",
            "Unpack it into {target}: test-image/*.jpg and test-mask/*.jpg",
        ),
        test_split=(0, 614),
    ),
    _spec(
        name="generic",
        title="your own MVTec-like folder",
        native=[mvtec_layout()],
        stand_ins=("hazelnut_toy",),
        licence="yours",
    ),
    DatasetSpec(
        name="meta_json",
        title="any folder with the official meta.json",
        pixel_level=False,
        native=(meta_json_layout(),),
    ),  # fmt: skip
)
"""The paper's 17 datasets in the order of its tables, then your own MVTec-like folder and the official meta.json."""

DATASET_SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in SPECS}
PAPER_DATASETS: tuple[str, ...] = tuple(spec.name for spec in SPECS if spec.paper_name)

ALIASES: dict[str, str] = {name_key(alias): spec.name for spec in SPECS for alias in spec.names}
"""Every name a dataset is known by (name_key form) -> its name."""

STAND_INS: dict[str, str] = {name_key(folder): spec.name for spec in SPECS for folder in spec.stand_ins}
"""Stand-in folders (name_key form) -> the loader that reads them."""


def find_spec(name: str) -> DatasetSpec | None:
    """The dataset a name or folder name stands for (aliases, case, spaces and punctuation ignored); None if none."""
    return DATASET_SPECS.get(ALIASES.get(name_key(name), ""))


# ---------------------------------------------------------------------------------------------- the README table

README_BEGIN = "<!-- datasets table: generated from anomalyclip/data/specs.py -->"
README_END = "<!-- end of the generated datasets table -->"


def _link(url: str) -> str:
    """A Markdown link named after its site: GitHub and Kaggle by repository or dataset, others by host."""
    parsed = urlparse(url)
    host = parsed.netloc.removeprefix("www.")
    parts = [p for p in parsed.path.split("/") if p]
    if host == "github.com" and len(parts) >= 2:
        label = "/".join(parts[:2])
    elif host == "kaggle.com" and len(parts) >= 3:
        label = f"Kaggle {'/'.join(parts[1:3])}"
    else:
        label = host
    return f"[{label}]({url})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(spec: DatasetSpec) -> str:
    facts = [spec.summary] if spec.summary else []
    if spec.test_split is not None:
        facts.append(
            "test split {:,} / {:,}".format(*spec.test_split)
            + ("" if spec.test_split_checked else " (approximate, not checked)")
        )
    title = f"{spec.title}: {', '.join(facts)}" if facts else spec.title
    layouts = "; or ".join(f"`{layout.expects}`" for layout in spec.layouts if layout.name != "official meta.json")
    if spec.name == "meta_json":
        layouts = f"`{spec.native[0].expects}`"
    layout = f"{layouts}; {spec.notes}" if spec.notes else layouts
    if spec.archives:
        command = f"`anomalyclip data download {spec.name} --root DIR`"
    elif spec.paper_name:
        command = f"manual: `anomalyclip data download {spec.name}` prints the steps"
    else:
        command = f"`anomalyclip data check ROOT --dataset {spec.name}`"
    cells = (f"`{spec.name}`", title, spec.domain, "yes" if spec.pixel_level else "no",
             _link(spec.homepage) if spec.homepage else "—", spec.licence or "—", layout, command)  # fmt: skip
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown_table() -> str:
    """The datasets table of data/README.md, one row per spec."""
    columns = (
        "name",
        "dataset",
        "domain",
        "masks",
        "source",
        "licence",
        "layout (ROOT = the folder passed)",
        "command",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *(_row(spec) for spec in SPECS)]
    return "\n".join(lines) + "\n"


def readme_with_table(text: str) -> str:
    """`text` (data/README.md) with the block between the table markers replaced by `markdown_table()`."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_BEGIN!r} ... {README_END!r} block")
    return text[: start + len(README_BEGIN)] + "\n" + markdown_table() + text[end:]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        readme = Path(sys.argv[1])
        readme.write_text(readme_with_table(readme.read_text()))
    else:
        print(markdown_table(), end="")
