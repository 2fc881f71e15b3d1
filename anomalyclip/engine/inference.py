"""The one inference loop: any detector's image scores and smoothed maps for a set of records, category by category.

Evaluation, prediction, the notebooks and the CLI all read maps from here, so every method is scored with the same
data pipeline, precision handling and smoothing. `precision` is `fp32` (the authors' setting, used for conformance and
the paper profile) or `bf16` (autocast on the device: the fast option).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from anomalyclip.data import AnomalyDataset, Record, make_loader
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.errors import ConfigError, DataError
from anomalyclip.head import gaussian_blur
from anomalyclip.methods.base import Detector
from anomalyclip.methods.catalog import PRECISIONS

Precision = Literal["fp32", "bf16"]


@dataclass
class ScoredBatch:
    """One batch of one category: the loader's items, image scores (B,) and smoothed maps (B, S, S), as float32."""

    category: str
    items: dict
    image_scores: np.ndarray
    maps: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """(B, S, S) boolean ground truth at the detector's size."""
        return self.items["mask"][:, 0].numpy() > 0.5

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.items["label"])


def check_precision(precision: str) -> str:
    """`precision` if it is one the loop knows, else a ConfigError naming the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; expected one of {list(PRECISIONS)}")
    return precision


def check_batch_size(batch_size: int) -> None:
    """A batch holds at least one image (a DataLoader would fail deep inside with a traceback)."""
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}; expected an integer >= 1 (--batch-size)")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` for `bf16`, nothing for `fp32`."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def group_by_category(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records per category, categories in order of first appearance."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.category].append(record)
    return dict(groups)


def reference_batch(
    detector: Detector, category: str, references: Mapping[str, Sequence[Record]] | None, mask_threshold: int
) -> torch.Tensor | None:
    """The first `detector.shots` normal reference images of `category`, transformed by the detector, on its device."""
    if detector.shots == 0:
        return None
    found = [r for r in (references or {}).get(category, []) if r.label == 0]
    if len(found) < detector.shots:
        raise DataError(
            f"{detector.name} with {detector.shots} shots needs {detector.shots} normal reference images of category "
            f"{category!r}, found {len(found)}; pass the dataset's train split (e.g. --shots 0 for zero-shot)"
        )
    dataset = _dataset(detector, found[: detector.shots], mask_threshold)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))]).to(detector.device)


def score_categories(
    detector: Detector,
    records: Sequence[Record],
    *,
    references: Mapping[str, Sequence[Record]] | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    precision: str = "fp32",
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
    progress: bool = True,
) -> Iterator[tuple[str, Iterator[ScoredBatch]]]:
    """For each category: its name and an iterator over its scored batches (consume it before the next category).

    `references` maps a category to records of normal images for few-shot methods (`detector.shots` > 0).
    """
    check_precision(precision)
    check_batch_size(batch_size)
    detector.eval()
    for category, items in group_by_category(records).items():
        yield (
            category,
            _score_category(
                detector, category, items, references, batch_size, num_workers, precision, mask_threshold, progress
            ),
        )


def _score_category(
    detector: Detector,
    category: str,
    items: Sequence[Record],
    references: Mapping[str, Sequence[Record]] | None,
    batch_size: int,
    num_workers: int | None,
    precision: str,
    mask_threshold: int,
    progress: bool,
) -> Iterator[ScoredBatch]:
    device = detector.device
    with torch.no_grad(), autocast(device, precision):
        prepared = detector.prepare(category, reference_batch(detector, category, references, mask_threshold))
    loader = make_loader(_dataset(detector, items, mask_threshold), batch_size, num_workers=num_workers)
    for batch in tqdm(loader, desc=category, disable=not progress, unit="batch"):
        with torch.no_grad():
            with autocast(device, precision):
                output = detector.score(batch["image"].to(device, non_blocking=True), prepared)
            maps = gaussian_blur(output.anomaly_maps.float(), detector.sigma)
        yield ScoredBatch(
            category=category,
            items=batch,
            image_scores=output.image_scores.float().cpu().numpy(),
            maps=maps.cpu().numpy(),
            extras={k: v.float().cpu().numpy() for k, v in output.extras.items()},
        )


def _dataset(detector: Detector, records: Sequence[Record], mask_threshold: int) -> AnomalyDataset:
    return AnomalyDataset(
        records,
        detector.image_size,
        mask_threshold,
        image_transform=detector.image_transform(),
        mask_transform=detector.mask_transform(),
    )
