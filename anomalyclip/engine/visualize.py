"""Heat-map pictures: anomaly maps over images, for evaluation figures and predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from anomalyclip.data.transforms import OPENAI_MEAN, OPENAI_STD


def denormalize(image: torch.Tensor) -> np.ndarray:
    """(3, S, S) normalised tensor -> (S, S, 3) uint8 RGB."""
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    rgb = (image.cpu().float() * std + mean).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlay(rgb: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5, vmax: float | None = None) -> np.ndarray:
    """Blend a jet-coloured map (scaled to [0, vmax], default its max) over an (H, W, 3) uint8 image."""
    top = float(anomaly_map.max()) if vmax is None else vmax
    scaled = np.clip(anomaly_map / top, 0, 1) if top > 0 else np.zeros_like(anomaly_map)
    colours = (colormaps["jet"](scaled)[..., :3] * 255).astype(np.float32)
    return (alpha * colours + (1 - alpha) * rgb.astype(np.float32)).round().astype(np.uint8)


def resize_map(anomaly_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float map to an image's own size."""
    return np.asarray(Image.fromarray(anomaly_map.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))


def heatmap_figure(image: torch.Tensor, mask: np.ndarray | None, anomaly_map: np.ndarray, title: str = "") -> Figure:
    """Three panels: the image, its ground-truth mask (if any) and the map overlaid."""
    return heatmap_grid([(image, mask, anomaly_map, title)])


def heatmap_grid(rows: Sequence[tuple[torch.Tensor, np.ndarray | None, np.ndarray, str]]) -> Figure:
    """One row of panels (image, mask if any, map overlaid) per (image, mask, map, title)."""
    width = max(3 if mask is not None else 2 for _, mask, _, _ in rows)
    figure = Figure(figsize=(3 * width, 3.2 * len(rows)))
    for r, (image, mask, anomaly_map, title) in enumerate(rows):
        rgb = denormalize(image)
        panels = [("image", rgb), ("overlay", overlay(rgb, anomaly_map))]
        if mask is not None:
            panels.insert(1, ("mask", mask))
        for k, (name, picture) in enumerate(panels):
            axis = figure.add_subplot(len(rows), width, r * width + k + 1)
            axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            axis.set_title(f"{title} · {name}" if title and k == 0 else name, fontsize=8)
            axis.axis("off")
    return figure
