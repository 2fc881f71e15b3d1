"""Anomaly scores and maps for a user's own images: overlays, raw maps, a score table, and thresholds."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anomalyclip.data import Record
from anomalyclip.data.io import read_image
from anomalyclip.engine.inference import check_batch_size, score_categories
from anomalyclip.engine.visualize import overlay, resize_map
from anomalyclip.errors import ConfigError, DataError
from anomalyclip.files import output_dir
from anomalyclip.methods import Detector, as_detector
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)

DEFAULT_CATEGORY = "object"
"""The class name given to text prompts when a user's images have none (AnomalyCLIP itself ignores it)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Prediction:
    """One image's result; `anomalous` is None when no threshold was given."""

    image: str
    score: float
    map_max: float
    anomalous: bool | None
    overlay: str | None = None
    raw_map: str | None = None


@dataclass
class Thresholds:
    """Decision thresholds for the image score and the pixel map, e.g. derived from normal images; None never flags.

    Image scores are probabilities, so `image` lies in [0, 1]; maps are sums of probabilities over layers, so `pixel`
    is finite and non-negative.
    """

    image: float | None = None
    pixel: float | None = None

    def __post_init__(self) -> None:
        if self.image is not None and not 0 <= self.image <= 1:
            raise ConfigError(f"image threshold {self.image}: expected a probability in [0, 1] (--threshold)")
        if self.pixel is not None and not 0 <= self.pixel < math.inf:
            raise ConfigError(f"pixel threshold {self.pixel}: expected a finite value >= 0 (--pixel-threshold)")

    def flags(self, score: float, map_max: float) -> bool:
        """True when the image score or the map's maximum passes its threshold."""
        by_image = self.image is not None and score > self.image
        return bool(by_image or (self.pixel is not None and map_max > self.pixel))


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders (searched recursively), sorted; anything else is an error."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{item}: no images found; expected files ending in {', '.join(IMAGE_SUFFIXES)}")
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item} does not exist; expected an image file or a folder of images")
    return found


def readable_images(paths: Sequence[Path], skipped: list[tuple[Path, str]]) -> list[Path]:
    """The paths that decode; each one that does not is appended to `skipped` with the reason (and logged)."""
    kept = []
    for path in paths:
        try:
            read_image(path)
        except DataError as err:
            log.warning("skipped: %s", err)
            skipped.append((path, str(err)))
            continue
        kept.append(path)
    return kept


def image_records(paths: Sequence[str | Path], category: str, label: int = 0) -> list[Record]:
    """Records for plain image files: one category (the class name text prompts use), no masks."""
    return [Record(Path(p), None, category, "", label, "predict") for p in paths]


def score_images(
    detector: Detector | AnomalyCLIP,
    paths: Sequence[Path],
    *,
    category: str = DEFAULT_CATEGORY,
    references: Sequence[str | Path] = (),
    batch_size: int = 8,
    precision: str = "fp32",
    progress: bool = True,
) -> Iterator[tuple[Path, float, np.ndarray]]:
    """(path, image score, smoothed map at the detector's size) per image, in order, through the one loop.

    Scores are final only once all images are seen for methods that rescore per category; `predict` handles that.
    """
    detector = as_detector(detector)
    refs = {category: image_records(collect_images(references), category)} if references else None
    for _, batches in score_categories(detector, image_records(paths, category), references=refs,
                                       batch_size=batch_size, precision=precision, progress=progress):  # fmt: skip
        for batch in batches:
            for path, score, small_map in zip(batch.items["path"], batch.image_scores, batch.maps, strict=True):
                yield Path(path), float(score), small_map


def thresholds_from_normals(
    detector: Detector | AnomalyCLIP,
    normal_images: Sequence[str | Path],
    quantile: float = 1.0,
    *,
    category: str = DEFAULT_CATEGORY,
    batch_size: int = 8,
    precision: str = "fp32",
) -> Thresholds:
    """Thresholds at a quantile (default the maximum) of scores and map values on known-normal images.

    The maximum over normal images is the rule suggested by the authors (official issue #17): no normal image
    of this set would be flagged.
    """
    if not 0 < quantile <= 1:
        raise ConfigError(f"quantile must be in (0, 1], got {quantile}")
    scored = list(score_images(detector, collect_images(normal_images), category=category, batch_size=batch_size,
                               precision=precision, progress=False))  # fmt: skip
    scores = np.array([s for _, s, _ in scored])
    peaks = np.array([m.max() for _, _, m in scored])
    return Thresholds(image=float(np.quantile(scores, quantile)), pixel=float(np.quantile(peaks, quantile)))


def predict(
    detector: Detector | AnomalyCLIP,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    category: str = DEFAULT_CATEGORY,
    references: Sequence[str | Path] = (),
    thresholds: Thresholds | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
    save_maps: bool = True,
    skip_bad: bool = False,
    progress: bool = True,
) -> list[Prediction]:
    """Score images; write `<stem>_overlay.png`, `<stem>_map.npy` (at the image's own size), scores.csv/json.

    `category` is the class name the text prompts of class-aware methods use; `references` are normal images for
    few-shot methods. With `skip_bad`, unreadable images are left out and listed under "skipped" in scores.json
    (and logged); otherwise the first one stops the run with an error naming it.
    """
    detector = as_detector(detector)
    check_batch_size(batch_size)
    out_dir = output_dir(out_dir)
    skipped: list[tuple[Path, str]] = []
    paths = collect_images(inputs)
    if skip_bad:
        paths = readable_images(paths, skipped)
    vmax = thresholds.pixel * 2 if thresholds and thresholds.pixel else None
    scored = score_images(detector, paths, category=category, references=references, batch_size=batch_size,
                          precision=precision, progress=progress)  # fmt: skip
    rows = []
    for index, (path, score, small_map) in enumerate(scored):
        image = read_image(path)
        full = resize_map(small_map, *image.size)
        stem = f"{index:04d}_{path.stem}"
        overlay_path = out_dir / f"{stem}_overlay.png"
        Image.fromarray(overlay(np.asarray(image.convert("RGB")), full, vmax=vmax)).save(overlay_path)
        map_path = None
        if save_maps:
            map_path = out_dir / f"{stem}_map.npy"
            np.save(map_path, full.astype(np.float32))
        rows.append((path, score, float(small_map.max()), float(full.max()), overlay_path, map_path))
    final = detector.finalize_scores(torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows]))
    predictions = []
    for (path, _, _, peak, overlay_path, map_path), score in zip(rows, final.tolist(), strict=True):
        anomalous = None if thresholds is None else thresholds.flags(score, peak)
        predictions.append(Prediction(str(path), score, peak, anomalous, str(overlay_path),
                                      None if map_path is None else str(map_path)))  # fmt: skip
    _write_scores(out_dir, predictions, thresholds, skipped)
    return predictions


def _write_scores(
    out_dir: Path, predictions: list[Prediction], thresholds: Thresholds | None, skipped: list[tuple[Path, str]]
) -> None:
    rows = [asdict(p) for p in predictions]
    payload = {
        "thresholds": None if thresholds is None else asdict(thresholds),
        "predictions": rows,
        "skipped": [{"image": str(path), "reason": reason} for path, reason in skipped],
    }
    (out_dir / "scores.json").write_text(json.dumps(payload, indent=2))
    with open(out_dir / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["image"])
        writer.writeheader()
        writer.writerows(rows)
