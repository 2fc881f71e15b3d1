"""A training run owns its output folder: it holds a lock while it writes there, refuses files that are not its own
resumable run, and replaces a previous run only when asked to."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anomalyclip.errors import OutputError
from anomalyclip.files import PROBE_PREFIX

log = logging.getLogger(__name__)

LOCK_NAME = ".train.lock"
CACHE_DIR = "feature_cache"
"""The default disk feature cache; it checks its own key, so a replaced run keeps it."""
_RUN_FILE = re.compile(r"\.?(epoch_\d+\.pt|history\.json|history\.csv|changes\.json)(\.[0-9a-f]+\.tmp)?")
"""What `train` writes (and the temporary files of an interrupted atomic write)."""


def is_run_file(path: Path) -> bool:
    """True for the files and the cache folder a training run writes into its folder."""
    return path.name == CACHE_DIR or _RUN_FILE.fullmatch(path.name) is not None


@contextmanager
def claim_run_folder(folder: str | Path, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Hold `folder`'s lock for the duration of a run, after checking what the folder already holds.

    A new run needs an empty folder, or `overwrite` to delete a previous run's files; `resume` continues the run
    that is there. Files that no training run writes are never deleted: they stop the run in every case.
    """
    folder = Path(folder)
    _lock(folder / LOCK_NAME)
    try:
        entries = sorted(p for p in folder.iterdir() if p.name != LOCK_NAME and not p.name.startswith(PROBE_PREFIX))
        foreign = [p.name for p in entries if not is_run_file(p)]
        if foreign:
            raise OutputError(
                f"{folder} holds files that no training run writes ({_names(foreign)}); choose an empty --out folder"
            )
        previous = [p for p in entries if p.name != CACHE_DIR]
        if previous and not resume:
            if not overwrite:
                raise OutputError(
                    f"{folder} holds a previous training run ({_names([p.name for p in previous])}); pass --resume to "
                    "continue it, --overwrite to replace it, or choose another --out"
                )
            log.info("overwrite: deleting the previous run in %s (%s)", folder, _names([p.name for p in previous]))
            for path in previous:
                path.unlink()
        yield folder
    finally:
        (folder / LOCK_NAME).unlink(missing_ok=True)


def _names(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _lock(path: Path) -> None:
    """Create the lock file with O_EXCL (atomic even between processes); a lock whose process has died is removed."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            owner = path.read_text().split() if path.is_file() else []
            if _alive(owner):
                who = f"process {owner[0]} on {owner[1]}" if len(owner) == 2 else "another process"
                raise OutputError(
                    f"{path.parent} is in use by a training run ({who}, lock file {path}); wait for it to finish, "
                    "choose another --out, or delete the lock file if no training is running"
                ) from None
            log.warning("removing the stale lock %s (process %s is no longer running)", path, owner[0])
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise OutputError(f"{path.parent}: another training run took the lock {path} at the same moment; try again")


def _alive(owner: list[str]) -> bool:
    """Whether the lock's process may still run: a pid on this host that exists (unknown or foreign: assume yes)."""
    if len(owner) != 2 or not owner[0].isdigit() or owner[1] != socket.gethostname():
        return True
    try:
        os.kill(int(owner[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
