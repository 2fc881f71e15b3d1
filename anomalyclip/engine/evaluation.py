"""Evaluation of any method with the paper's metrics: the one inference loop, then per-category metrics and files."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from anomalyclip.data import Record
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.engine.inference import ScoredBatch, check_batch_size, score_categories
from anomalyclip.engine.visualize import heatmap_figure
from anomalyclip.files import output_dir
from anomalyclip.methods import Detector, as_detector
from anomalyclip.metrics import PAPER_METRICS, CategoryAccumulator, MetricTable, summarize
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)

IMAGE_METRICS = ("image_auroc", "image_ap")


@dataclass
class EvaluationResult:
    """Per-category metrics with a mean row, timing, the settings that produced them, and where the files went."""

    metrics: MetricTable
    images: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    """One row per image: path, category, defect, label, final image score and the smoothed map's maximum."""
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def evaluate(
    detector: Detector | AnomalyCLIP,
    records: Sequence[Record],
    *,
    references: Mapping[str, Sequence[Record]] | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    precision: str = "fp32",
    pixel_level: bool = True,
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
    out_dir: str | Path | None = None,
    figures: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Score every record with `detector` and compute the paper's metrics per category (pixel ones if `pixel_level`).

    An `AnomalyCLIP` model is scored with its learned prompts. `references` gives few-shot methods the normal images
    of each category. `figures` > 0 saves that many heat-map figures per category under `out_dir`.
    """
    detector = as_detector(detector)
    check_batch_size(batch_size)
    if out_dir is not None:
        output_dir(out_dir)
    start = time.perf_counter()
    metrics = PAPER_METRICS if pixel_level else IMAGE_METRICS
    per_category, per_image = {}, []
    batches = score_categories(detector, records, references=references, batch_size=batch_size,
                               num_workers=num_workers, precision=precision, mask_threshold=mask_threshold,
                               progress=progress)  # fmt: skip
    for category, scored in batches:
        accumulator = CategoryAccumulator()
        labels, scores, maxima, rows = [], [], [], []
        saved = 0
        for batch in scored:
            accumulator.update(batch.masks, batch.maps)
            rows += [
                {"image": p, "category": category, "defect": d}
                for p, d in zip(batch.items["path"], batch.items["defect"], strict=True)
            ]
            labels.append(batch.labels)
            scores.append(batch.image_scores)
            maxima.append(batch.maps.reshape(len(batch.maps), -1).max(axis=1))
            if out_dir is not None and saved < figures:
                saved += _save_figures(Path(out_dir) / "figures" / category, batch, figures - saved, saved)
        final = detector.finalize_scores(torch.from_numpy(np.concatenate(scores)),
                                         torch.from_numpy(np.concatenate(maxima)))  # fmt: skip
        accumulator.set_images(np.concatenate(labels), final.numpy())
        per_category[category] = accumulator.compute(metrics)
        for row, label, score, peak in zip(rows, np.concatenate(labels), final.tolist(), np.concatenate(maxima),
                                           strict=True):  # fmt: skip
            per_image.append(row | {"label": int(label), "score": float(score), "map_max": float(peak)})
    settings = detector.describe() | {"precision": precision, "mask_threshold": mask_threshold}
    seconds = time.perf_counter() - start
    result = EvaluationResult(summarize(per_category), len(records), seconds, settings, per_image)
    if out_dir is not None:
        result.files = write_results(result, Path(out_dir))
    return result


def official_log_table(table: MetricTable) -> str:
    """The results as the official test.py log prints them: objects, then each metric in percent, one decimal."""
    cells = table.table
    header = ["objects", *cells.columns]
    rows = [[str(i), *cells.loc[i]] for i in cells.index]
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(lines)


def write_results(result: EvaluationResult, out_dir: Path) -> dict[str, Path]:
    """results.json (full precision, reasons), results.csv, results.md and the official log-style table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = result.metrics.data
    payload = {
        "metrics": {row: {k: _json_float(v) for k, v in data.loc[row].items()} for row in data.index},
        "reasons": {f"{row}/{metric}": text for (row, metric), text in result.metrics.reasons.items()},
        "settings": result.settings,
        "images": result.images,
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
    }
    files = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
        "log": out_dir / "log.txt",
        "scores": out_dir / "scores.csv",
    }
    files["json"].write_text(json.dumps(payload, indent=2))
    data.to_csv(files["csv"], index_label="category")
    files["markdown"].write_text(result.metrics.to_markdown() + "\n")
    files["log"].write_text(official_log_table(result.metrics) + "\n")
    pd.DataFrame(result.per_image, columns=["image", "category", "defect", "label", "score", "map_max"]).to_csv(
        files["scores"], index=False
    )
    return files


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _save_figures(folder: Path, batch: ScoredBatch, limit: int, first: int) -> int:
    """Image | mask | overlay panels for the first `limit` images of a batch, numbered on from `first`.

    Names carry the number, the defect folder and the file stem (MVTec repeats `000.png` in every defect folder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    count = min(limit, len(batch.maps))
    for i in range(count):
        name = Path(batch.items["path"][i]).name
        figure = heatmap_figure(batch.items["image"][i], batch.masks[i], batch.maps[i], title=name)
        defect = str(batch.items["defect"][i]).replace("/", "_")
        figure.savefig(folder / f"{first + i:03d}_{defect}_{Path(name).stem}.png", dpi=80)
    return count
