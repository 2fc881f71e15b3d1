"""Files and folders the project writes: whole files only (written aside, then renamed) with the permissions any new
file of the user gets, and output folders proven writable before any work starts."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from anomalyclip.errors import OutputError

PROBE_PREFIX = ".write-test-"
"""The file `output_dir` creates and deletes at once to prove a folder writable."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Let `write` fill a temporary file beside `path`, then rename it over `path`: a crash never leaves half a file.

    The file is created with mode 0666 less the umask, like any file the user makes (mkstemp's 0600 would hide a
    checkpoint from the colleague who should use it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Make the folder `path` (and its parents) and prove it writable, or fail at once naming it and `flag`."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise OutputError(f"{flag} {path}{where}: a file is in the way; expected a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f"{PROBE_PREFIX}{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{flag} {path} is not writable ({err.strerror or err}); choose another folder") from err
    return path
