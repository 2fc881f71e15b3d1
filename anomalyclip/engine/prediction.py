"""Anomaly scores and maps for a user's own images: overlays, raw maps, a score table, and thresholds."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from anomalyclip.data.io import read_image
from anomalyclip.data.transforms import ImageTransform
from anomalyclip.engine.features import device_autocast
from anomalyclip.engine.visualize import overlay, resize_map
from anomalyclip.errors import ConfigError, DataError
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)

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
    """Decision thresholds for the image score and the pixel map, e.g. derived from normal images."""

    image: float
    pixel: float


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


def score_images(
    model: AnomalyCLIP, paths: Sequence[Path], batch_size: int = 8, progress: bool = True
) -> list[tuple[Path, Image.Image, float, np.ndarray]]:
    """(path, image, score, map at the model's size) per image; maps are smoothed as in evaluation."""
    transform = ImageTransform(model.config.vision.image_size)
    with torch.no_grad():
        text = model.text_features()
    results = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", disable=not progress, unit="batch"):
        chunk = paths[start : start + batch_size]
        images = [read_image(p) for p in chunk]
        batch = torch.stack([transform(im) for im in images]).to(model.device)
        with torch.no_grad(), device_autocast(model.device):
            output = model(batch, text)
        maps = output.anomaly_map.float().cpu().numpy()
        scores = output.image_scores.float().cpu().numpy()
        results += [(p, im, float(s), m) for p, im, s, m in zip(chunk, images, scores, maps, strict=True)]
    return results


def thresholds_from_normals(
    model: AnomalyCLIP, normal_images: Sequence[str | Path], quantile: float = 1.0, batch_size: int = 8
) -> Thresholds:
    """Thresholds at a quantile (default the maximum) of scores and map values on known-normal images.

    The maximum over normal images is the rule suggested by the authors (official issue #17): no normal image
    of this set would be flagged.
    """
    if not 0 < quantile <= 1:
        raise ConfigError(f"quantile must be in (0, 1], got {quantile}")
    scored = score_images(model, collect_images(normal_images), batch_size, progress=False)
    scores = np.array([s for _, _, s, _ in scored])
    peaks = np.array([m.max() for _, _, _, m in scored])
    return Thresholds(image=float(np.quantile(scores, quantile)), pixel=float(np.quantile(peaks, quantile)))


def predict(
    model: AnomalyCLIP,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    thresholds: Thresholds | None = None,
    batch_size: int = 8,
    save_maps: bool = True,
    progress: bool = True,
) -> list[Prediction]:
    """Score images; write `<stem>_overlay.png`, `<stem>_map.npy` (at the image's own size), scores.csv/json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = collect_images(inputs)
    vmax = thresholds.pixel * 2 if thresholds else None
    predictions = []
    for index, (path, image, score, small_map) in enumerate(score_images(model, paths, batch_size, progress)):
        full = resize_map(small_map, *image.size)
        stem = f"{index:04d}_{path.stem}"
        overlay_path = out_dir / f"{stem}_overlay.png"
        Image.fromarray(overlay(np.asarray(image.convert("RGB")), full, vmax=vmax)).save(overlay_path)
        map_path = None
        if save_maps:
            map_path = out_dir / f"{stem}_map.npy"
            np.save(map_path, full.astype(np.float32))
        anomalous = None if thresholds is None else bool(score > thresholds.image or full.max() > thresholds.pixel)
        predictions.append(Prediction(str(path), score, float(full.max()), anomalous, str(overlay_path),
                                      None if map_path is None else str(map_path)))  # fmt: skip
    _write_scores(out_dir, predictions, thresholds)
    return predictions


def _write_scores(out_dir: Path, predictions: list[Prediction], thresholds: Thresholds | None) -> None:
    rows = [asdict(p) for p in predictions]
    payload = {"thresholds": None if thresholds is None else asdict(thresholds), "predictions": rows}
    (out_dir / "scores.json").write_text(json.dumps(payload, indent=2))
    with open(out_dir / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["image"])
        writer.writeheader()
        writer.writerows(rows)
