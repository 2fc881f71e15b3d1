"""Where the paper's 17 datasets come from, and a resumable, verified download of those with a public URL.

`download_dataset(name, root)` fetches each archive of a dataset into `root/<name>/` (HTTP Range resume from
a `.part` file, tqdm progress, sha256 check where the hash is known), unpacks it there refusing members that
would land outside, and points to the licence. Registration-walled datasets raise DataError with manual steps.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from anomalyclip.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60
USER_AGENT = "anomalyclip-downloader"
DONE_NAME = ".anomalyclip-download.json"

CC_BY_NC_SA = "CC BY-NC-SA 4.0 (non-commercial), https://creativecommons.org/licenses/by-nc-sa/4.0/"


@dataclass(frozen=True)
class Archive:
    """One file to fetch: its address, the name it is saved under and its sha256 (None: not known yet)."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset comes from. `url` None: it cannot be fetched automatically, follow `instructions`."""

    name: str
    title: str
    url: str | None
    filename: str | None
    sha256: str | None
    licence: str
    homepage: str
    instructions: str = ""
    folder: str = ""
    more: tuple[Archive, ...] = ()

    @property
    def archives(self) -> tuple[Archive, ...]:
        """Every file to fetch, the main archive first."""
        if self.url is None:
            return ()
        return (Archive(self.url, self.filename or PurePosixPath(self.url).name, self.sha256), *self.more)

    @property
    def target(self) -> str:
        """The folder under the download root that the dataset is unpacked into."""
        return self.folder or self.name


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


SOURCES: tuple[DatasetSource, ...] = (
    DatasetSource(
        name="mvtec",
        title="MVTec AD",
        url="https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f283/download/420938113-1629960298/"
        "mvtec_anomaly_detection.tar.xz",
        filename="mvtec_anomaly_detection.tar.xz",
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        licence=CC_BY_NC_SA,
        homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
        instructions=_manual(
            "MVTec rotates its download links; if this one fails, open the homepage, accept the licence and "
            "copy the address of 'Download the whole dataset' (mvtec_anomaly_detection.tar.xz, 4.9 GB)",
            "Unpack it into {target} (15 category folders: bottle, cable, ..., zipper)",
        ),
    ),
    DatasetSource(
        name="visa",
        title="VisA",
        url="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
        filename="VisA_20220922.tar",
        sha256="2eb8690c803ab37de0324772964100169ec8ba1fa3f7e94291c9ca673f40f362",
        licence="CC BY 4.0 (the LICENSE-DATASET file of amazon-science/spot-diff), https://creativecommons.org/licenses/by/4.0/",
        homepage="https://github.com/amazon-science/spot-diff",
    ),
    DatasetSource(
        name="mpdd",
        title="MPDD",
        url=None,
        filename=None,
        sha256=None,
        licence=CC_BY_NC_SA,
        homepage="https://github.com/stepanje/MPDD",
        instructions=_manual(
            "Open https://github.com/stepanje/MPDD and follow its link to the OneDrive folder (Brno "
            "University of Technology); OneDrive has no stable direct address",
            "Download the six category folders and put them in {target} (bracket_black, bracket_brown, "
            "bracket_white, connector, metal_plate, tubes), each in MVTec layout",
        ),
    ),
    DatasetSource(
        name="btad",
        title="BTAD (beanTech Anomaly Detection)",
        url="https://avires.dimi.uniud.it/papers/btad/btad.zip",
        filename="btad.zip",
        sha256="461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
        licence=CC_BY_NC_SA,
        homepage="https://avires.dimi.uniud.it/papers/btad/",
    ),
    DatasetSource(
        name="sdd",
        title="SDD, from KolektorSDD (each image and label cut into vertical thirds by the SDD loader)",
        url="https://go.vicos.si/kolektorsdd",
        filename="KolektorSDD.zip",
        sha256="65dc621693418585de9c4467d1340ea7958a6181816f0dc2883a1e8b61f9d4dc",
        licence=CC_BY_NC_SA,
        homepage="https://www.vicos.si/resources/kolektorsdd/",
    ),
    DatasetSource(
        name="dagm",
        title="DAGM 2007 (Weakly Supervised Learning for Industrial Optical Inspection)",
        url=None,
        filename=None,
        sha256=None,
        licence="research use; cite the DAGM 2007 competition (see the homepage)",
        homepage="https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection",
        instructions=_kaggle(
            "mhskjelvareid/dagm-2007-competition-dataset-optical-inspection",
            "DAGM_KaggleUpload/Class1..Class10/{Train,Test}/*.PNG with Label/*_label.PNG",
        ),
    ),
    DatasetSource(
        name="dtd",
        title="DTD-Synthetic (Aota et al., WACV 2023)",
        url=None,
        filename=None,
        sha256=None,
        licence="research use; textures from DTD (https://www.robots.ox.ac.uk/~vgg/data/dtd/)",
        homepage="https://drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1",
        instructions=_manual(
            "Open https://drive.google.com/drive/folders/10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1 (the authors' "
            "Google Drive folder; Google Drive has no stable direct address) and download DTD-Synthetic",
            "Unpack it into {target}: 12 texture folders (Blotchy_099, ..., Woven_127) in MVTec layout",
        ),
    ),
    DatasetSource(
        name="headct",
        title="HeadCT (Head CT - hemorrhage)",
        url=None,
        filename=None,
        sha256=None,
        licence="see the Kaggle page (CC BY-SA 4.0 as listed there)",
        homepage="https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage",
        instructions=_kaggle("felipekitamura/head-ct-hemorrhage", "head_ct/NNN.png and labels.csv (id, hemorrhage)"),
    ),
    DatasetSource(
        name="brainmri",
        title="BrainMRI (Brain MRI Images for Brain Tumor Detection)",
        url=None,
        filename=None,
        sha256=None,
        licence="see the Kaggle page",
        homepage="https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
        instructions=_kaggle(
            "navoneel/brain-mri-images-for-brain-tumor-detection", "brain_tumor_dataset/{no,yes}/*.jpg|png"
        ),
    ),
    DatasetSource(
        name="br35h",
        title="Br35H (Brain Tumor Detection 2020)",
        url=None,
        filename=None,
        sha256=None,
        licence="see the Kaggle page",
        homepage="https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection",
        instructions=_kaggle("ahmedhamada0/brain-tumor-detection", "no/*.jpg and yes/*.jpg"),
    ),
    DatasetSource(
        name="covid",
        title="COVID-19 Radiography Database",
        url=None,
        filename=None,
        sha256=None,
        licence="see the Kaggle page (academic and non-commercial use, cite the authors)",
        homepage="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
        instructions=_kaggle(
            "tawsifurrahman/covid19-radiography-database",
            "COVID-19_Radiography_Dataset/{COVID,Normal,...}/images/*.png",
        ),
    ),
    DatasetSource(
        name="isic",
        title="ISIC 2016 Part 1 (lesion segmentation), test set",
        url="https://isic-challenge-data.s3.amazonaws.com/2016/ISBI2016_ISIC_Part1_Test_Data.zip",
        filename="ISBI2016_ISIC_Part1_Test_Data.zip",
        sha256=None,
        licence="CC-0 for the ISIC 2016 challenge data, see https://challenge.isic-archive.com/data/",
        homepage="https://challenge.isic-archive.com/data/#2016",
        more=(
            Archive(
                "https://isic-challenge-data.s3.amazonaws.com/2016/ISBI2016_ISIC_Part1_Test_GroundTruth.zip",
                "ISBI2016_ISIC_Part1_Test_GroundTruth.zip",
            ),
        ),
    ),
    DatasetSource(
        name="colondb",
        title="CVC-ColonDB",
        url=None,
        filename=None,
        sha256=None,
        licence="research use only; cite Bernal et al., Pattern Recognition 2012",
        homepage="http://vi.cvc.uab.es/colon-qa/cvccolondb/",
        instructions=_manual(
            "Request CVC-ColonDB from the Computer Vision Center (homepage above), or take the CVC-ColonDB "
            "folder of the polyp test collection at https://figshare.com/articles/figure/Polyp_DataSet_zip/21221579",
            "Put it in {target}: images N.tiff and masks pN.tiff, or images/ and masks/",
        ),
    ),
    DatasetSource(
        name="clinicdb",
        title="CVC-ClinicDB",
        url=None,
        filename=None,
        sha256=None,
        licence="research and education only; cite Bernal et al., CMIG 2015",
        homepage="https://polyp.grand-challenge.org/CVCClinicDB/",
        instructions=_manual(
            "Download CVC-ClinicDB from the homepage above (or the CVC-ClinicDB folder of "
            "https://figshare.com/articles/figure/Polyp_DataSet_zip/21221579)",
            "Put it in {target}: images/N.tif and masks/N.tif (TIFF: read with tifffile)",
        ),
    ),
    DatasetSource(
        name="kvasir",
        title="Kvasir-SEG",
        url="https://datasets.simula.no/downloads/kvasir-seg.zip",
        filename="kvasir-seg.zip",
        sha256=None,
        licence="research and education only; cite Jha et al., MMM 2020 (see the homepage)",
        homepage="https://datasets.simula.no/kvasir-seg/",
    ),
    DatasetSource(
        name="endo",
        title="Endo (EndoTect 2020 segmentation test set)",
        url=None,
        filename=None,
        sha256=None,
        licence="HyperKvasir terms, CC BY 4.0 (https://datasets.simula.no/hyper-kvasir/)",
        homepage="https://endotect.com",
        instructions=_manual(
            "Follow the data link on https://endotect.com (EndoTect 2020, ICPR) to the segmentation task's "
            "test images and masks; the download is given to registered participants",
            "Put them in {target}: images/<id>.jpg and masks/<id>.png",
        ),
    ),
    DatasetSource(
        name="tn3k",
        title="TN3K (thyroid nodule ultrasound)",
        url=None,
        filename=None,
        sha256=None,
        licence="research use; see https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
        homepage="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
        instructions=_manual(
            "Open the homepage and follow its Google Drive link to TN3K (no stable direct address)",
            "Unpack it into {target}: test-image/*.jpg and test-mask/*.jpg",
        ),
    ),
)

DATASET_SOURCES: dict[str, DatasetSource] = {source.name: source for source in SOURCES}

ALIASES = {
    "mvtecad": "mvtec",
    "kolektorsdd": "sdd",
    "ksdd": "sdd",
    "dagm2007": "dagm",
    "dtdsynthetic": "dtd",
    "covid19": "covid",
    "isic2016": "isic",
    "cvccolondb": "colondb",
    "cvcclinicdb": "clinicdb",
    "kvasirseg": "kvasir",
    "endotect": "endo",
}


def get_source(name: str) -> DatasetSource:
    """The source registered under `name` (case, spaces, '-', '_' ignored; aliases such as 'MVTec AD')."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    key = ALIASES.get(key, key)
    if key not in DATASET_SOURCES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_SOURCES)}")
    return DATASET_SOURCES[key]


def manual_instructions(source: DatasetSource, target: Path) -> str:
    """The message for a dataset that must be fetched by hand: steps, homepage and licence."""
    steps = source.instructions.format(target=target)
    return (
        f"{source.title} cannot be downloaded automatically; get it by hand:\n{steps}\n"
        f"  Homepage: {source.homepage}\n  Licence: {source.licence}"
    )


def _url_for(archive: Archive, base_url: str | None) -> str:
    """The archive's own address, or `base_url/<filename>` for a mirror or a test server."""
    return archive.url if base_url is None else f"{base_url.rstrip('/')}/{archive.filename}"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, offset: int) -> http.client.HTTPResponse | None:
    """Open `url` for the bytes from `offset` on; None when the server says that range is already complete."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return None
        raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"cannot reach {url}: {err}") from err


def fetch(url: str, part: Path, *, progress: bool = True) -> None:
    """Stream `url` into `part`, resuming from its current size with an HTTP Range request."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset)
    if response is None:
        return
    with response:
        resumed = offset > 0 and response.status == 206
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name, disable=not progress)
        with bar, part.open("ab" if resumed else "wb") as out:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
            except OSError as err:
                raise DataError(f"download of {url} broke off: {err}; run again to resume from {part}") from err


def _verify(part: Path, final_name: str, expected: str | None) -> None:
    """Raise DataError naming the file and both hashes when `part` does not match `expected`."""
    if expected is None:
        return
    actual = sha256_of(part)
    if actual != expected.lower():
        raise DataError(
            f"checksum mismatch for {final_name}: expected sha256 {expected}, got {actual}. "
            f"The file was kept as {part}; delete it to download from scratch."
        )


def download_archive(archive: Archive, folder: Path, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Fetch one archive into `folder` (resuming a `.part` file), check its sha256 and return its path."""
    path = folder / archive.filename
    if path.exists():
        _verify(path, archive.filename, archive.sha256)
        return path
    part = path.with_name(path.name + ".part")
    fetch(_url_for(archive, base_url), part, progress=progress)
    _verify(part, archive.filename, archive.sha256)
    part.rename(path)
    return path


def _check_member(name: str, target: Path, archive: Path) -> None:
    """Refuse an archive member whose path is absolute or climbs out of `target`."""
    destination = (target / name).resolve()
    if PurePosixPath(name).is_absolute() or not destination.is_relative_to(target.resolve()):
        raise DataError(f"unsafe member {name!r} in {archive}: it would be written outside {target}; nothing unpacked")


def _unpack_zip(archive: Path, target: Path) -> None:
    """Unpack a zip after checking every member name."""
    with zipfile.ZipFile(archive) as bundle:
        for name in bundle.namelist():
            _check_member(name, target, archive)
        bundle.extractall(target)


def _unpack_tar(archive: Path, target: Path) -> None:
    """Unpack a tar (any compression) after checking every member and link; links must stay inside too."""
    with tarfile.open(archive, "r:*") as bundle:
        members = bundle.getmembers()
        for member in members:
            _check_member(member.name, target, archive)
            if member.issym() or member.islnk():
                base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
                _check_member(str(base / member.linkname), target, archive)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        bundle.extractall(target, members=members, **safe)


def unpack(archive: Path, target: Path) -> bool:
    """Unpack a zip or tar archive into `target`; False (nothing done) for a file that is neither."""
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        _unpack_zip(archive, target)
    elif tarfile.is_tarfile(archive):
        _unpack_tar(archive, target)
    else:
        return False
    return True


def dataset_root(target: Path) -> Path:
    """The dataset root: the single folder an archive unpacked into (BTAD, Kvasir-SEG), else `target`."""
    entries = [entry for entry in target.iterdir() if not entry.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def download_dataset(name: str, root: str | Path, *, base_url: str | None = None, progress: bool = True) -> Path:
    """Download, verify and unpack dataset `name` into `root/<name>/`; return the unpacked dataset's root.

    Each archive is deleted once unpacked; a marker file makes a second call a no-op.
    `base_url` replaces each archive's address by `base_url/<filename>` (a mirror or a local test server).
    A dataset with no public address raises DataError whose message is its manual instructions.
    """
    source = get_source(name)
    target = Path(root) / source.target
    if source.url is None:
        raise DataError(manual_instructions(source, target))
    done = target / DONE_NAME
    archives = [archive.filename for archive in source.archives]
    if done.exists() and json.loads(done.read_text()).get("archives") == archives:
        print(f"{source.title} is already in {dataset_root(target)}")
        return dataset_root(target)
    target.mkdir(parents=True, exist_ok=True)
    for archive in source.archives:
        path = download_archive(archive, target, base_url=base_url, progress=progress)
        if unpack(path, target):
            path.unlink()
    done.write_text(json.dumps({"dataset": source.name, "archives": archives}, indent=1) + "\n")
    print(f"{source.title} is in {dataset_root(target)}. Licence: {source.licence}. Terms: {source.homepage}")
    return dataset_root(target)
