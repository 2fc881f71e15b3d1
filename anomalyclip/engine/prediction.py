"""Anomaly scores and maps for a user's own images: overlays, raw maps, a score table, and thresholds."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from anomalyclip.data.io import read_image
from anomalyclip.data.transforms import ImageTransform
from anomalyclip.engine.features import check_batch_size, device_autocast
from anomalyclip.engine.visualize import overlay, resize_map
from anomalyclip.errors import ConfigError, DataError
from anomalyclip.files import output_dir
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

    def flags(self, score: float, anomaly_map: np.ndarray) -> bool:
        """True when the score or any map value passes its threshold."""
        by_image = self.image is not None and score > self.image
        return bool(by_image or (self.pixel is not None and anomaly_map.max() > self.pixel))


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
    model: AnomalyCLIP,
    paths: Sequence[Path],
    batch_size: int = 8,
    progress: bool = True,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[tuple[Path, Image.Image, float, np.ndarray]]:
    """(path, image, score, map at the model's size) per image; maps are smoothed as in evaluation.

    An unreadable image raises DataError naming it, or, given a `skipped` list, is appended there with the reason.
    """
    check_batch_size(batch_size)
    transform = ImageTransform(model.config.vision.image_size)
    with torch.no_grad():
        text = model.text_features()
    results = []
    for start in tqdm(range(0, len(paths), batch_size), desc="predict", disable=not progress, unit="batch"):
        chunk, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                images.append(read_image(path))
            except DataError as err:
                if skipped is None:
                    raise
                log.warning("skipped: %s", err)
                skipped.append((path, str(err)))
                continue
            chunk.append(path)
        if not chunk:
            continue
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
    skip_bad: bool = False,
    progress: bool = True,
) -> list[Prediction]:
    """Score images; write `<stem>_overlay.png`, `<stem>_map.npy` (at the image's own size), scores.csv/json.

    With `skip_bad`, unreadable images are left out and listed under "skipped" in scores.json (and logged).
    """
    out_dir = output_dir(out_dir)
    paths = collect_images(inputs)
    vmax = thresholds.pixel * 2 if thresholds and thresholds.pixel else None
    predictions = []
    skipped: list[tuple[Path, str]] | None = [] if skip_bad else None
    for index, (path, image, score, small_map) in enumerate(score_images(model, paths, batch_size, progress, skipped)):
        full = resize_map(small_map, *image.size)
        stem = f"{index:04d}_{path.stem}"
        overlay_path = out_dir / f"{stem}_overlay.png"
        Image.fromarray(overlay(np.asarray(image.convert("RGB")), full, vmax=vmax)).save(overlay_path)
        map_path = None
        if save_maps:
            map_path = out_dir / f"{stem}_map.npy"
            np.save(map_path, full.astype(np.float32))
        anomalous = None if thresholds is None else thresholds.flags(score, full)
        predictions.append(Prediction(str(path), score, float(full.max()), anomalous, str(overlay_path),
                                      None if map_path is None else str(map_path)))  # fmt: skip
    _write_scores(out_dir, predictions, thresholds, skipped or [])
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
