"""Running jobs: train (if the method learns), evaluate every target, store the result atomically.

The local executor runs the pending jobs of a plan one after the other in this process; other executors (Ray) call
`run_job` on other workers and write to the same run store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from anomalyclip.engine.evaluation import evaluate
from anomalyclip.errors import AnomalyCLIPError, ConfigError
from anomalyclip.experiments.jobs import Job, code_version, unique
from anomalyclip.experiments.store import JobResult, RunStore
from anomalyclip.methods import build_detector
from anomalyclip.methods.registry import method_config_from_dict

log = logging.getLogger(__name__)


def folder_name(name: str) -> str:
    """A file-system-safe folder name for a target's display name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "target"


def run_job(
    job: Job,
    store: RunStore,
    *,
    device: str | torch.device = "cpu",
    num_workers: int | None = 0,
    progress: bool = False,
    feature_cache: str | os.PathLike | None = None,
) -> JobResult:
    """The stored result of `job`, computing it first if needed. An error in the job's input is recorded in the
    store (`failed/`) and raised; nothing half-written stays behind. A learning method's training features are
    cached on disk under `feature_cache` (default: the store's `feature_cache/`) for the next job that needs them."""
    done = store.get(job)
    if done is not None:
        return done
    workspace = store.workspace(job)
    try:
        data = _compute(job, workspace, device, num_workers, progress, feature_cache or store.feature_cache)
    except AnomalyCLIPError as err:
        store.discard(workspace)
        store.record_failure(job, err)
        raise
    except BaseException:
        store.discard(workspace)
        raise
    return store.commit(job, workspace, data)


def _compute(job: Job, workspace, device, num_workers, progress, feature_cache) -> dict[str, Any]:
    config = method_config_from_dict(job.method, job.config)
    detector = build_detector(job.method, config=config, shots=job.shots, device=device)
    data: dict[str, Any] = {"method": job.method, "settings": detector.describe(), "targets": {}, "timings": {}}
    if detector.learns:
        if job.train is None:
            raise ConfigError(f"method {job.method} learns its parameters: its job needs a training source")
        start = time.perf_counter()
        fitted = detector.fit(job.train.records(), workspace / "train", num_workers=num_workers, progress=progress,
                              cache_dir=_feature_cache_folder(job, feature_cache, device))  # fmt: skip
        data["timings"]["train_seconds"] = time.perf_counter() - start
        data["checkpoint"] = str(fitted.checkpoint.relative_to(workspace))
    elif job.train is not None:
        raise ConfigError(f"method {job.method} learns nothing; its job takes no training source ({job.train.name})")
    for target in job.targets:
        records = target.records()
        references = None
        if job.shots:
            references = {}
            for record in target.with_split("train").records():
                references.setdefault(record.category, []).append(record)
        result = evaluate(detector, records, references=references, precision=job.precision,
                          pixel_level=target.pixel_level, num_workers=num_workers, progress=progress,
                          out_dir=workspace / "targets" / folder_name(target.name))  # fmt: skip
        metrics = result.metrics.data
        data["targets"][target.name] = {
            "folder": f"targets/{folder_name(target.name)}",
            "metrics": {row: {k: _plain(v) for k, v in metrics.loc[row].items()} for row in metrics.index},
            "reasons": {f"{row}/{metric}": text for (row, metric), text in result.metrics.reasons.items()},
            "images": result.images,
            "seconds": result.seconds,
            "images_per_second": result.images_per_second,
        }
    data["settings"]["precision"] = job.precision
    return data


def _feature_cache_folder(job: Job, root: str | os.PathLike, device: str | torch.device) -> Path:
    """The folder under `root` caching the training features of a learning `job`: one per training source, backbone,
    vision settings, device type and code version, so jobs that differ only in what they learn share one pass."""
    shared = {"train": asdict(job.train), "device": torch.device(device).type, "code": code_version()}  # type: ignore
    shared |= {name: job.config.get(name) for name in ("backbone", "pretrained", "vision")}
    return Path(root) / hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def _plain(value: Any) -> float | None:
    value = float(value)
    return None if value != value else value


def run_jobs(
    jobs: Sequence[Job],
    store: RunStore,
    *,
    device: str | torch.device = "cpu",
    num_workers: int | None = 0,
    progress: bool = True,
    on_done: Callable[[Job, JobResult | None, BaseException | None], None] | None = None,
    feature_cache: str | os.PathLike | None = None,
) -> dict[str, JobResult]:
    """Run the pending jobs of a plan in this process; a job that fails on its input is reported and the rest go
    on. Returns the results by job id (failed jobs are absent; `store.failure(job)` says why)."""
    results: dict[str, JobResult] = {}
    plan = unique(jobs)
    for index, job in enumerate(plan, start=1):
        cached = store.get(job)
        if cached is None and progress:
            log.info("job %d/%d: %s %s (%s)", index, len(plan), job.method, job.id, dict(job.tags))
        try:
            results[job.id] = cached or run_job(job, store, device=device, num_workers=num_workers, progress=False,
                                                feature_cache=feature_cache)  # fmt: skip
        except AnomalyCLIPError as err:
            log.error("job %s (%s) failed: %s", job.id, job.method, err)
            if on_done is not None:
                on_done(job, None, err)
            continue
        if on_done is not None:
            on_done(job, results[job.id], None)
    return results
