"""Reading finished jobs: metrics in long form for tables, per-image scores, and detectors for figures."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anomalyclip.data import Record
from anomalyclip.errors import AnomalyCLIPError, ConfigError, DataError
from anomalyclip.experiments.jobs import DataSource, Job
from anomalyclip.experiments.store import JobResult, RunStore
from anomalyclip.methods import Detector, build_detector
from anomalyclip.methods.registry import METHODS, method_config_from_dict
from anomalyclip.paper import METRICS, paper_table

log = logging.getLogger(__name__)

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


def job_status(job: Job, results: Mapping[str, JobResult], store: RunStore) -> str:
    """`ok` for a finished job, else the error its failure record holds (`no result` without one): for job tables."""
    if job.id in results:
        return "ok"
    return (store.failure(job) or {}).get("error", "no result")


def training_history(result: JobResult) -> pd.DataFrame:
    """The per-step losses (epoch, step, global, local, total) that a learning job's training stored beside its
    checkpoints (`engine.training` writes them after every epoch)."""
    from anomalyclip.engine.training import load_history

    if result.checkpoint is None:
        raise AnomalyCLIPError(f"job {result.job.id} ({result.job.method}) trained nothing: it has no loss history")
    return pd.DataFrame(load_history(result.checkpoint.parent), columns=["epoch", "step", "global", "local", "total"])


def minutes_per_epoch(result: JobResult) -> float:
    """A prompt-learning job's stored training time per epoch, in minutes, with the feature cache: its one backbone
    pass (or the reading of it, when another job on the same images built it) is spread over the epochs."""
    return result.data["timings"]["train_seconds"] / result.job.config["train"]["epochs"] / 60


def images_per_second(results: Iterable[JobResult]) -> float:
    """Test-time speed over every target of `results`: images scored per second, metrics included."""
    targets = [target for result in results for target in result.data["targets"].values()]
    seconds = sum(t["seconds"] for t in targets)
    return sum(t["images"] for t in targets) / seconds if seconds else float("nan")


def uncached_epoch_minutes(job: Job, out_dir: str | Path, *, device: str | torch.device = "cpu") -> float:
    """Minutes of one training epoch of a prompt-learning `job`'s configuration on its training images without the
    feature cache, as the official code trains (the frozen backbone encodes every batch again); measured now."""
    from anomalyclip.experiments.ablations import with_changes

    if job.train is None:
        raise AnomalyCLIPError(f"job {job.id} ({job.method}) has no training source: there is no epoch to time")
    config = method_config_from_dict(job.method, with_changes(job.config, {"train.epochs": 1}))
    detector = build_detector(job.method, config=config, device=device)
    fitted = detector.fit(job.train.records(), out_dir, cache="none", overwrite=True, num_workers=0, progress=False)
    return fitted.train_seconds / 60


def job_detector(result: JobResult, device: str | torch.device = "cpu") -> Detector:
    """The detector a finished job evaluated, with its trained parameters: to draw maps of chosen images.

    A checkpoint brings its own configuration (the method's, as trained); the others are built from the job's.
    """
    job = result.job
    config = None if result.checkpoint else method_config_from_dict(job.method, job.config)
    return build_detector(job.method, config=config, checkpoint=result.checkpoint, shots=job.shots, device=device)


def example_maps(
    result: JobResult,
    target: str,
    count: int | None = None,
    *,
    anomalous: bool = True,
    paths: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Image, mask, smoothed map, category and defect of the first `count` anomalous (or normal) images of a target,
    or of the images named in `paths` (`Record.name`, as `image_scores` lists them; in that order), scored with the
    job's detector through the one inference loop: for qualitative figures.

    The maps are kept in the job's folder (`maps/`, the run store's layout) the first time they are drawn, so a
    second run reads them instead of scoring the images again."""
    source = next(t for t in result.job.targets if t.name == target)
    if paths is None:
        if count is None:
            raise ConfigError("example_maps needs a `count` of images or their `paths`")
        records = [r for r in source.records() if bool(r.label) == anomalous][:count]
    else:
        by_name = {r.name: r for r in source.records()}
        missing = [p for p in paths if p not in by_name]
        if missing:
            raise DataError(f"{target} has no test image {missing[0]!r} ({len(missing)} of {len(paths)} paths not "
                            "found); expected the image names of its scores (results.image_scores)")  # fmt: skip
        records = [by_name[p] for p in dict.fromkeys(paths)]
    if not records:
        return []
    kept = maps_file(result, target, [r.name for r in records])
    if kept.is_file():
        return read_maps(kept)
    examples = _score_examples(result, records, device)
    write_maps(kept, examples)
    return examples


def _score_examples(result: JobResult, records: Sequence[Record], device: str | torch.device) -> list[dict]:
    """`records` scored with the job's detector, as `example_maps` returns them, in the order given."""
    from anomalyclip.engine.inference import score_categories

    order = {r.name: i for i, r in enumerate(records)}
    detector = job_detector(result, device)
    examples = []
    for _, batches in score_categories(detector, records, batch_size=len(records), num_workers=0, progress=False):
        for batch in batches:
            items, masks = batch.items, batch.masks
            for i, path in enumerate(items["path"]):
                examples.append({"path": path, "category": batch.category, "defect": items["defect"][i],
                                 "image": items["image"][i], "mask": masks[i], "map": batch.maps[i]})  # fmt: skip
    return sorted(examples, key=lambda example: order[example["path"]])


MAP_FIELDS = ("path", "category", "defect", "image", "mask", "map")
"""What `example_maps` returns of each image, and what a kept maps file holds (one array per field)."""


def maps_file(result: JobResult, target: str, paths: Sequence[str]) -> Path:
    """Where the job's maps of these images of `target` are kept: `maps/<digest of target and paths>.npz`."""
    digest = hashlib.sha256(json.dumps([target, list(paths)]).encode()).hexdigest()[:16]
    return result.folder / "maps" / f"{digest}.npz"


def write_maps(path: Path, examples: Sequence[dict]) -> None:
    """Keep `examples` (as `example_maps` returns them) at `path`, whole or not at all (written aside, then renamed).
    A run store that cannot be written to is told in the log, and the maps are drawn again next time."""
    arrays = {name: np.stack([np.asarray(example[name]) for example in examples]) for name in MAP_FIELDS}
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.npz")
    try:
        path.parent.mkdir(exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        log.warning("could not keep the maps in %s (%s); they will be drawn again next time", path, error)


def read_maps(path: Path) -> list[dict]:
    """The examples kept at `path` by `write_maps` (images as tensors, as `example_maps` returns them)."""
    with np.load(path, allow_pickle=False) as kept:
        arrays = {name: kept[name] for name in MAP_FIELDS}
    examples = [{name: arrays[name][i] for name in MAP_FIELDS} for i in range(len(arrays["path"]))]
    for example in examples:
        example["image"] = torch.from_numpy(example["image"])
        for name in ("path", "category", "defect"):
            example[name] = str(example[name])
    return examples


FAILURE_CASES = ("normal, highest score", "anomalous, lowest score")
"""The two kinds of failure case, as `failure_cases` labels them."""


def failure_cases(scores: pd.DataFrame, count: int = 4) -> pd.DataFrame:
    """The `count` highest-scoring normal and the `count` lowest-scoring anomalous images of a scores frame
    (`image_scores`): where the image score errs most; `case` says which kind (`FAILURE_CASES`)."""
    normal = scores[scores.label == 0].sort_values("score", ascending=False, kind="stable").head(count)
    anomalous = scores[scores.label == 1].sort_values("score", kind="stable").head(count)
    cases = [part.assign(case=case) for part, case in zip((normal, anomalous), FAILURE_CASES, strict=True)]
    return pd.concat(cases, ignore_index=True)


def figure_images(sources: Sequence[DataSource], fallback: str | None = None) -> list[tuple[DataSource, Record]]:
    """Two anomalous images to set methods side by side (Fig. 1): the first of an industrial and of a medical dataset
    (Table 2's) among `sources`, Table 1's and pixel-level datasets first; without a medical one, the first of two
    categories of `fallback` (default: the first source)."""
    medical_names, industrial_names = set(paper_table(2).dataset), set(paper_table(1).dataset)
    medical = sorted((s for s in sources if s.name in medical_names), key=lambda s: not s.pixel_level)
    if medical:
        industrial = sorted((s for s in sources if s.name not in medical_names),
                            key=lambda s: (s.name not in industrial_names, not s.pixel_level))  # fmt: skip
        return [found for group in (industrial, medical) for found in islice(_first_anomalous(group), 1)]
    named = [s for s in sources if s.name == fallback] or list(sources[:1])
    return list(islice(_first_anomalous(named, per_category=True), 2))


def _first_anomalous(sources: Iterable[DataSource], per_category: bool = False) -> Iterator[tuple[DataSource, Record]]:
    """The first anomalous image of each source (of each category of each source), in order, read lazily."""
    seen = set()
    for source in sources:
        for record in source.records():
            key = (source.name, record.category if per_category else None)
            if record.label and key not in seen:
                seen.add(key)
                yield source, record
