"""Zero-shot evaluation: text features once, images in batches, smoothing on the device, per-category metrics."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anomalyclip.data import AnomalyDataset, Record, make_loader
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.engine.features import check_batch_size, device_autocast
from anomalyclip.engine.visualize import heatmap_figure
from anomalyclip.files import output_dir
from anomalyclip.metrics import PAPER_METRICS, CategoryAccumulator, MetricTable, summarize
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)

IMAGE_METRICS = ("image_auroc", "image_ap")


@dataclass
class EvaluationResult:
    """Per-category metrics with a mean row, timing, and where the files went."""

    metrics: MetricTable
    images: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def evaluate(
    model: AnomalyCLIP,
    records: Sequence[Record],
    *,
    text_features: torch.Tensor | Callable[[str], torch.Tensor] | None = None,
    batch_size: int = 8,
    num_workers: int | None = None,
    pixel_level: bool = True,
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
    out_dir: str | Path | None = None,
    figures: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Score every record and compute the paper's metrics per category (pixel ones only if `pixel_level`).

    `text_features` replaces the learned prompts: one (2, E) tensor, or a function of the category name (e.g. the
    hand-made CLIP prompts of each class). `figures` > 0 saves that many heat-map figures per category (image,
    mask, map overlay) under `out_dir`.
    """
    check_batch_size(batch_size)
    if out_dir is not None:
        output_dir(out_dir)
    model.eval()
    start = time.perf_counter()
    if text_features is None and not model.config.prompt.object_aware:
        with torch.no_grad():
            text_features = model.text_features()
    by_category: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_category[record.category].append(record)
    metrics = PAPER_METRICS if pixel_level else IMAGE_METRICS
    per_category = {}
    for category, items in by_category.items():
        with torch.no_grad():
            text = category_text_features(model, text_features, category)
        dataset = AnomalyDataset(items, model.config.vision.image_size, mask_threshold)
        accumulator = CategoryAccumulator()
        saved = 0
        loader = make_loader(dataset, batch_size, num_workers=num_workers)
        for batch in tqdm(loader, desc=category, disable=not progress, unit="batch"):
            with torch.no_grad(), device_autocast(model.device):
                output = model(batch["image"].to(model.device), text)
            maps = output.anomaly_map.float().cpu().numpy()
            masks = batch["mask"][:, 0].numpy() > 0.5
            accumulator.update(masks, maps, batch["label"].numpy(), output.image_scores.float().cpu().numpy())
            if out_dir is not None and saved < figures:
                saved += _save_figures(Path(out_dir) / "figures" / category, batch, maps, figures - saved, saved)
        per_category[category] = accumulator.compute(metrics)
    table = summarize(per_category)
    seconds = time.perf_counter() - start
    result = EvaluationResult(table, len(records), seconds)
    if out_dir is not None:
        result.files = write_results(result, Path(out_dir))
    return result


def category_text_features(
    model: AnomalyCLIP, source: torch.Tensor | Callable[[str], torch.Tensor] | None, category: str
) -> torch.Tensor:
    """The (2, E) text features of one category: given, computed by `source`, or the learned prompts (with the
    category's name when they are object-aware)."""
    if callable(source):
        return source(category)
    if source is not None:
        return source
    if model.config.prompt.object_aware:
        return model.text_features([category])[0]
    return model.text_features()


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
        "images": result.images,
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
    }
    files = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
        "log": out_dir / "log.txt",
    }
    files["json"].write_text(json.dumps(payload, indent=2))
    data.to_csv(files["csv"], index_label="category")
    files["markdown"].write_text(result.metrics.to_markdown() + "\n")
    files["log"].write_text(official_log_table(result.metrics) + "\n")
    return files


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _save_figures(folder: Path, batch: dict, maps: np.ndarray, limit: int, first: int) -> int:
    """Image | mask | overlay panels for the first `limit` images of a batch, numbered on from `first`.

    Names carry the number, the defect folder and the file stem (MVTec repeats `000.png` in every defect folder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    count = min(limit, len(maps))
    for i in range(count):
        name = Path(batch["path"][i]).name
        figure = heatmap_figure(batch["image"][i], batch["mask"][i, 0].numpy(), maps[i], title=name)
        defect = str(batch["defect"][i]).replace("/", "_")
        figure.savefig(folder / f"{first + i:03d}_{defect}_{Path(name).stem}.png", dpi=80)
    return count
