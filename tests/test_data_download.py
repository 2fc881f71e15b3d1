"""Dataset downloads against a server this test starts on 127.0.0.1, serving archives the test builds."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anomalyclip.data import download
from anomalyclip.data.download import DATASET_SOURCES, download_dataset, get_source
from anomalyclip.data.specs import Archive, DatasetSpec
from anomalyclip.errors import DataError

PAPER_DATASETS = {
    "mvtec": "MVTec AD",
    "visa": "VisA",
    "mpdd": "MPDD",
    "btad": "BTAD",
    "sdd": "KolektorSDD",
    "dagm": "DAGM",
    "dtd": "DTD-Synthetic",
    "headct": "HeadCT",
    "brainmri": "BrainMRI",
    "br35h": "Br35H",
    "covid": "COVID-19",
    "isic": "ISIC",
    "colondb": "CVC-ColonDB",
    "clinicdb": "CVC-ClinicDB",
    "kvasir": "Kvasir",
    "endo": "Endo",
    "tn3k": "TN3K",
}


class Files:
    """What the test server serves (name -> bytes) and the Range headers it was asked for."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.honour_range = True


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    """A request handler serving `files`, with single-range `bytes=N-` support (206 / 416)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            body = files.content.get(self.path.lstrip("/"))
            requested = self.headers.get("Range")
            files.ranges.append(requested)
            if body is None:
                self.send_error(404)
                return
            match = re.fullmatch(r"bytes=(\d+)-", requested or "")
            if match and files.honour_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                body = body[start:]
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Keep the test output quiet."""

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Files]]:
    files = Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w:gz", links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            bundle.addfile(info)
    return buffer.getvalue()


TOY_MEMBERS = {
    "toy/widget/train/good/000.png": b"not really a png " * 4000,
    "toy/widget/test/crack/000.png": b"crack",
    "toy/license.txt": b"toy licence",
}


def _register(
    monkeypatch: pytest.MonkeyPatch, filename: str, data: bytes | None, more: tuple[Archive, ...] = ()
) -> DatasetSpec:
    """Add a 'toy' dataset whose archive is `filename` with sha256 of `data` (None: hash unknown)."""
    sha256 = hashlib.sha256(data).hexdigest() if data is not None else None
    source = DatasetSpec(
        name="toy",
        title="Toy AD",
        archives=(Archive(f"https://example.invalid/files/{filename}", filename, sha256), *more),
        licence="CC0 toy licence",
        homepage="https://example.invalid/toy",
    )
    monkeypatch.setitem(DATASET_SOURCES, "toy", source)
    return source


@pytest.mark.parametrize(("filename", "build"), [("toy.zip", _zip), ("toy.tar.gz", _tar)])
def test_download_verifies_unpacks_and_points_to_the_licence(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys, filename, build
) -> None:
    base_url, files = server
    files.content[filename] = build(TOY_MEMBERS)
    _register(monkeypatch, filename, files.content[filename])

    target = download_dataset("toy", tmp_path, base_url=base_url)

    assert target == tmp_path / "toy" / "toy", "the archive's single top folder is the dataset root"
    for name, data in TOY_MEMBERS.items():
        assert (tmp_path / "toy" / name).read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [".anomalyclip-download.json", "toy"]
    out, err = capsys.readouterr()
    assert "CC0 toy licence" in out and "https://example.invalid/toy" in out
    assert filename in err, "tqdm progress bar names the file"
    assert files.ranges == [None]

    assert download_dataset("toy", tmp_path, base_url=base_url) == target
    assert len(files.ranges) == 1, "a finished dataset is not fetched again"


def test_progress_can_be_switched_off(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    base_url, files = server
    files.content["toy.zip"] = _zip(TOY_MEMBERS)
    _register(monkeypatch, "toy.zip", files.content["toy.zip"])
    download_dataset("toy", tmp_path, base_url=base_url, progress=False)
    assert "toy.zip" not in capsys.readouterr().err


def test_resume_from_a_truncated_part_file(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base_url, files = server
    data = _tar(TOY_MEMBERS, mode="w:xz")
    files.content["toy.tar.xz"] = data
    _register(monkeypatch, "toy.tar.xz", data)
    (tmp_path / "toy").mkdir()
    half = len(data) // 2
    (tmp_path / "toy" / "toy.tar.xz.part").write_bytes(data[:half])

    target = download_dataset("toy", tmp_path, base_url=base_url, progress=False)

    assert files.ranges == [f"bytes={half}-"]
    assert (target / "widget/test/crack/000.png").read_bytes() == b"crack"


def test_a_server_that_ignores_range_restarts_the_file(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base_url, files = server
    files.honour_range = False
    data = _zip(TOY_MEMBERS)
    files.content["toy.zip"] = data
    _register(monkeypatch, "toy.zip", data)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip.part").write_bytes(data[:100])

    target = download_dataset("toy", tmp_path, base_url=base_url, progress=False)

    assert files.ranges == ["bytes=100-"]
    assert (target / "license.txt").read_bytes() == b"toy licence"


def test_a_complete_part_file_is_not_fetched_again(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base_url, files = server
    data = _zip(TOY_MEMBERS)
    files.content["toy.zip"] = data
    _register(monkeypatch, "toy.zip", data)
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy.zip.part").write_bytes(data)

    target = download_dataset("toy", tmp_path, base_url=base_url, progress=False)

    assert files.ranges == [f"bytes={len(data)}-"]
    assert (target / "license.txt").exists()


def test_checksum_mismatch_names_file_and_hashes_and_keeps_the_part(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base_url, files = server
    files.content["toy.zip"] = _zip(TOY_MEMBERS)
    source = _register(monkeypatch, "toy.zip", b"something else")
    actual = hashlib.sha256(files.content["toy.zip"]).hexdigest()

    with pytest.raises(DataError) as caught:
        download_dataset("toy", tmp_path, base_url=base_url, progress=False)

    message = str(caught.value)
    assert "toy.zip" in message and source.archives[0].sha256 in message and actual in message
    part = tmp_path / "toy" / "toy.zip.part"
    assert str(part) in message and part.read_bytes() == files.content["toy.zip"]
    assert not (tmp_path / "toy" / "toy.zip").exists()


def test_real_entries_check_their_hash(server: tuple[str, Files], tmp_path: Path) -> None:
    """A mirror serving the wrong BTAD archive is caught by the registered checksum."""
    base_url, files = server
    files.content["btad.zip"] = _zip({"01/train/ok/0000.bmp": b"fake"})
    with pytest.raises(DataError, match=DATASET_SOURCES["btad"].archives[0].sha256):
        download_dataset("BTAD", tmp_path, base_url=base_url, progress=False)


def test_unknown_hash_still_downloads(server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    base_url, files = server
    files.content["toy.zip"] = _zip(TOY_MEMBERS)
    _register(monkeypatch, "toy.zip", None)
    assert (download_dataset("toy", tmp_path, base_url=base_url, progress=False) / "license.txt").exists()


def test_several_archives_and_a_missing_file(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    base_url, files = server
    files.content["images.zip"] = _zip({"images/a.jpg": b"a"})
    files.content["masks.zip"] = _zip({"masks/a.png": b"m"})
    more = (Archive("https://example.invalid/masks.zip", "masks.zip"),)
    _register(monkeypatch, "images.zip", files.content["images.zip"], more=more)
    target = download_dataset("toy", tmp_path, base_url=base_url, progress=False)
    assert target == tmp_path / "toy"
    assert (target / "images/a.jpg").exists() and (target / "masks/a.png").exists()

    _register(monkeypatch, "gone.zip", None)
    with pytest.raises(DataError, match="HTTP 404"):
        download_dataset("toy", tmp_path / "other", base_url=base_url, progress=False)


@pytest.mark.parametrize(
    ("filename", "build"),
    [
        ("evil.zip", lambda: _zip({"ok.txt": b"ok", "../escaped.txt": b"x"})),
        ("evil.tar", lambda: _tar({"ok.txt": b"ok", "/tmp/abs.txt": b"x"}, mode="w")),
        ("evil.tar.gz", lambda: _tar({"ok.txt": b"ok"}, links={"link": "../../outside"})),
    ],
)
def test_unsafe_members_are_rejected_before_anything_is_unpacked(
    server: tuple[str, Files], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, filename, build
) -> None:
    base_url, files = server
    files.content[filename] = build()
    _register(monkeypatch, filename, files.content[filename])
    with pytest.raises(DataError, match="unsafe member"):
        download_dataset("toy", tmp_path / "root", base_url=base_url, progress=False)
    assert not (tmp_path / "root" / "toy" / "ok.txt").exists()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "root" / "escaped.txt").exists()


def test_registration_walled_dataset_gives_manual_instructions(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        download_dataset("MPDD", tmp_path)
    message = str(caught.value)
    assert "by hand" in message and "https://github.com/stepanje/MPDD" in message
    assert str(tmp_path / "mpdd") in message and "CC BY-NC-SA" in message
    assert not (tmp_path / "mpdd").exists()


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as caught:
        download_dataset("imagenet", tmp_path)
    assert all(name in str(caught.value) for name in PAPER_DATASETS)


@pytest.mark.parametrize(
    ("alias", "name"), [("MVTec AD", "mvtec"), ("KolektorSDD", "sdd"), ("CVC-ClinicDB", "clinicdb")]
)
def test_names_and_aliases(alias: str, name: str) -> None:
    assert get_source(alias).name == name


def test_every_paper_dataset_has_a_source() -> None:
    assert set(PAPER_DATASETS) <= set(DATASET_SOURCES)
    for name, words in PAPER_DATASETS.items():
        source = DATASET_SOURCES[name]
        assert words.split("-")[0].lower() in source.title.lower(), name
        assert source.licence and source.homepage.startswith("http"), name
        if source.url is None:
            assert "{target}" in source.instructions, name
        else:
            assert all(a.url.startswith("https://") and a.filename for a in source.archives), name
        assert all(a.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", a.sha256) for a in source.archives), name
    automatic = {name for name, source in DATASET_SOURCES.items() if source.url}
    assert {"mvtec", "visa", "btad", "sdd", "kvasir", "isic"} <= automatic


def test_sha256_of_reads_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "CHUNK", 7)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    assert download.sha256_of(path) == hashlib.sha256(b"x" * 100).hexdigest()
