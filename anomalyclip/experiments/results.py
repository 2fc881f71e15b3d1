"""Reading finished jobs: metrics in long form for tables, per-image scores, and detectors for figures."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import torch

from anomalyclip.experiments.store import JobResult
from anomalyclip.methods import Detector, build_detector
from anomalyclip.methods.registry import METHODS, method_config_from_dict
from anomalyclip.paper import METRICS

LONG_COLUMNS = ["dataset", "method", "metric", "value", "trained_on", "job"]


def long_results(results: Iterable[JobResult], *, percent: bool = True) -> pd.DataFrame:
    """One row per (target dataset, method, metric) of the mean rows: the form `anomalyclip.reports` tabulates.

    `method` is the paper's column title (CLIP, CLIP-AC, ...); values in percent unless `percent` is False.
    """
    rows = []
    for result in results:
        trained = None if result.job.train is None else result.job.train.name
        for target, means in result.means.items():
            for metric in METRICS:
                value = means.get(metric)
                if value is None:
                    continue
                rows.append((target, METHODS[result.job.method].title, metric, value * (100 if percent else 1),
                             trained, result.job.id))  # fmt: skip
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def image_scores(result: JobResult, target: str) -> pd.DataFrame:
    """The per-image scores (image, category, defect, label, score, map_max) of one target of a finished job."""
    folder = result.folder / result.data["targets"][target]["folder"]
    return pd.read_csv(folder / "scores.csv")


def job_detector(result: JobResult, device: str | torch.device = "cpu") -> Detector:
    """The detector a finished job evaluated, with its trained parameters: to draw maps of chosen images.

    A checkpoint brings its own configuration (the method's, as trained); the others are built from the job's.
    """
    job = result.job
    config = None if result.checkpoint else method_config_from_dict(job.method, job.config)
    return build_detector(job.method, config=config, checkpoint=result.checkpoint, shots=job.shots, device=device)


def example_maps(
    result: JobResult, target: str, count: int, *, anomalous: bool = True, device: str | torch.device = "cpu"
) -> list[dict]:
    """Image, mask and smoothed map of the first `count` anomalous (or normal) images of a target, re-scored with
    the job's detector through the one inference loop: for qualitative figures."""
    from anomalyclip.engine.inference import score_categories

    source = next(t for t in result.job.targets if t.name == target)
    records = [r for r in source.records() if bool(r.label) == anomalous][:count]
    detector = job_detector(result, device)
    examples = []
    for _, batches in score_categories(detector, records, batch_size=max(1, count), num_workers=0, progress=False):
        for batch in batches:
            for i, path in enumerate(batch.items["path"]):
                image, mask, smoothed = batch.items["image"][i], batch.masks[i], batch.maps[i]
                examples.append(
                    {"path": path, "category": batch.category, "image": image, "mask": mask, "map": smoothed}
                )
    return examples
