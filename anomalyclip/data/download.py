"""A resumable, verified download of the paper's datasets that have a public URL (sources in `data.specs`).

`download_dataset(name, root)` fetches each archive of a dataset into `root/<name>/` (HTTP Range resume from
a `.part` file, tqdm progress, sha256 check where the hash is known), unpacks it there refusing members that
would land outside, and points to the licence. Registration-walled datasets raise DataError with manual steps.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from anomalyclip.data.specs import ALIASES, DATASET_SPECS, PAPER_DATASETS, Archive, DatasetSpec, name_key
from anomalyclip.errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60
USER_AGENT = "anomalyclip-downloader"
DONE_NAME = ".anomalyclip-download.json"

DATASET_SOURCES: dict[str, DatasetSpec] = {name: DATASET_SPECS[name] for name in PAPER_DATASETS}
"""The datasets with a source to download or fetch by hand: the paper's 17 (specs in `anomalyclip.data.specs`)."""


def get_source(name: str) -> DatasetSpec:
    """The dataset registered under `name` (case, spaces, '-', '_' ignored; aliases such as 'MVTec AD')."""
    key = name_key(name)
    source = DATASET_SOURCES.get(ALIASES.get(key, key))
    if source is None:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_SOURCES)}")
    return source


def manual_instructions(source: DatasetSpec, target: Path) -> str:
    """The message for a dataset that must be fetched by hand: steps, homepage and licence."""
    steps = source.instructions.replace("{target}", str(target))  # other braces are layout patterns
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
