"""The run store: one folder per finished job, written atomically, so results are reused and never half-written.

Layout (stable; other machines write to it through the same functions):

    <root>/jobs/<job id>/job.json         the job (its identity, id and tags)
    <root>/jobs/<job id>/result.json      metrics per target and category, mean rows, timings, settings, status
    <root>/jobs/<job id>/train/           the training folder of a learning method (checkpoints, history)
    <root>/jobs/<job id>/targets/<name>/  results.json/csv/md, log.txt and scores.csv (one row per image: score,
                                          map maximum; what figures of best and worst cases are chosen from)
    <root>/jobs/<job id>/maps/<digest>.npz  maps of chosen test images for figures (`results.example_maps`),
                                          added whole when first drawn; any may be deleted and is drawn again
    <root>/failed/<job id>.json           the error of a job that failed on its input (removed when it succeeds)
    <root>/executions.log                 one line per job actually executed: a counter for resumption
    <root>/tmp/                           work in progress; renamed into jobs/ only when complete
    <root>/feature_cache/<key>/           training features shared by jobs on one source (the default place; any
                                          folder may be deleted: the next job that needs it builds it again)

A job's folder appears by one `rename` of a complete folder, so a crash leaves at most a stale `tmp/` entry.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyclip.errors import AnomalyCLIPError
from anomalyclip.experiments.jobs import Job

DEFAULT_ROOT = Path("runs")


@dataclass
class JobResult:
    """What a finished job produced, read back from its folder."""

    job: Job
    folder: Path
    data: dict[str, Any]

    @property
    def means(self) -> dict[str, dict[str, float | None]]:
        """Target name -> the mean row of its metrics (fractions; None where undefined)."""
        return {name: target["metrics"]["mean"] for name, target in self.data["targets"].items()}

    def per_category(self, target: str) -> dict[str, dict[str, float | None]]:
        return {k: v for k, v in self.data["targets"][target]["metrics"].items() if k != "mean"}

    @property
    def checkpoint(self) -> Path | None:
        name = self.data.get("checkpoint")
        return None if name is None else self.folder / name


class RunStore:
    """Finished jobs under `root`, looked up by the job's identity."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        self.root = Path(root)

    def folder(self, job: Job) -> Path:
        return self.root / "jobs" / job.id

    @property
    def feature_cache(self) -> Path:
        """The default folder of the training-feature caches that jobs share."""
        return self.root / "feature_cache"

    def get(self, job: Job) -> JobResult | None:
        """The stored result of `job`, or None if it has not finished."""
        folder = self.folder(job)
        result = folder / "result.json"
        if not result.is_file():
            return None
        return JobResult(job, folder, json.loads(result.read_text()))

    def failure(self, job: Job) -> dict[str, Any] | None:
        path = self.root / "failed" / f"{job.id}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def executions(self) -> list[str]:
        """Ids of the jobs executed into this store, in order (a job run twice appears twice)."""
        log = self.root / "executions.log"
        return [line.split()[0] for line in log.read_text().splitlines() if line] if log.is_file() else []

    def results(self) -> Iterator[JobResult]:
        """Every finished job in the store."""
        for folder in sorted((self.root / "jobs").glob("*/result.json")):
            job = Job.from_dict(json.loads((folder.parent / "job.json").read_text()))
            yield JobResult(job, folder.parent, json.loads(folder.read_text()))

    def in_progress(self) -> set[str]:
        """Ids of the jobs with a workspace under `tmp/`: being computed now (or killed while computing)."""
        folder = self.root / "tmp"
        return {path.name.split("-")[0] for path in folder.iterdir()} if folder.is_dir() else set()

    def workspace(self, job: Job) -> Path:
        """A fresh private folder to compute `job` in; `commit` moves it into place."""
        path = self.root / "tmp" / f"{job.id}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def commit(self, job: Job, workspace: Path, data: dict[str, Any]) -> JobResult:
        """Write job.json and result.json into `workspace` and rename it to the job's folder (first writer wins)."""
        (workspace / "job.json").write_text(json.dumps(job.to_dict(), indent=2))
        (workspace / "result.json").write_text(json.dumps(data | {"status": "ok"}, indent=2))
        target = self.folder(job)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(workspace, target)
        except OSError:
            if not (target / "result.json").is_file():
                raise AnomalyCLIPError(f"could not move the finished job {job.id} into {target}") from None
            shutil.rmtree(workspace, ignore_errors=True)
        (self.root / "failed" / f"{job.id}.json").unlink(missing_ok=True)
        self._log(job)
        return self.get(job)  # type: ignore[return-value]

    def record_failure(self, job: Job, error: BaseException) -> None:
        """Keep the error of a job that failed on its input, for the manifest and the scorecard."""
        folder = self.root / "failed"
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"id": job.id, "job": job.to_dict(), "error": f"{type(error).__name__}: {error}",
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
        tmp = folder / f".{job.id}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, folder / f"{job.id}.json")

    def discard(self, workspace: Path) -> None:
        shutil.rmtree(workspace, ignore_errors=True)

    def _log(self, job: Job) -> None:
        with open(self.root / "executions.log", "a") as handle:
            handle.write(f"{job.id} {job.method} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
