"""The detector contract: what every method of the paper's tables gives the one inference loop.

A detector turns a batch of preprocessed images of one category into image scores and raw anomaly maps. The loop
(`anomalyclip.engine.inference`) does everything around that once for all methods: reading and transforming images
with the detector's own transforms, batching, device, precision, per-category preparation (text features, few-shot
memories), smoothing with the detector's `sigma`, and metric accumulation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn

from anomalyclip.data.transforms import ImageTransform, MaskTransform


@dataclass
class DetectorOutput:
    """What a detector computes for a batch: one score per image and one raw (unsmoothed) map per image."""

    image_scores: torch.Tensor
    """(B,) higher = more anomalous."""
    anomaly_maps: torch.Tensor
    """(B, S, S) at the detector's input size, before the loop's Gaussian smoothing."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Optional per-image values (B,) a method exposes for analysis (e.g. the two global cosines)."""


class Detector(nn.Module):
    """Base class of the methods. Subclasses set `name`, implement `prepare` and `score`, and may override the rest.

    `prepare(category, references)` is called once per category before its images; what it returns (text
    features, a few-shot memory, ...) is passed back to `score` with every batch of that category.
    """

    name: ClassVar[str] = ""
    learns: ClassVar[bool] = False
    """True when the method has parameters trained on auxiliary data (`fit`)."""

    def __init__(self, image_size: int, sigma: float = 0.0, shots: int = 0):
        super().__init__()
        self.image_size = int(image_size)
        self.sigma = float(sigma)
        """Standard deviation of the Gaussian the loop applies to the maps (0 = none)."""
        self.shots = int(shots)
        """Normal reference images per category the method needs (0 = zero-shot)."""

    @property
    def device(self) -> torch.device:
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> (3, S, S) tensor; the official AnomalyCLIP transform unless the method's reference differs."""
        return ImageTransform(self.image_size)

    def mask_transform(self) -> Callable[[Image.Image | None], torch.Tensor]:
        """Binary 'L' mask -> (1, S, S) 0/1 tensor at the detector's input size."""
        return MaskTransform(self.image_size)

    def prepare(self, category: str, references: torch.Tensor | None = None) -> Any:
        """Per-category state computed once (e.g. text features of the class name, a memory of `references`).

        `references` is a (K, 3, S, S) batch of normal images of the category when `shots` > 0, else None.
        """
        raise NotImplementedError

    def score(self, images: torch.Tensor, prepared: Any) -> DetectorOutput:
        """Scores and raw maps of a (B, 3, S, S) batch of one category."""
        raise NotImplementedError

    def finalize_scores(self, image_scores: torch.Tensor, map_maxima: torch.Tensor) -> torch.Tensor:
        """Category-level post-processing of the (N,) image scores of all test images of one category, given the
        maxima of their smoothed maps; identity for most methods (VAND's few-shot score normalises over the category).
        """
        return image_scores

    def forward(self, images: torch.Tensor, category: str, references: torch.Tensor | None = None) -> DetectorOutput:
        """One batch end to end (prepare + score): what the method computes on its own."""
        return self.score(images, self.prepare(category, references))

    def fit(self, records: Sequence[Any], out_dir: Any, **options: Any) -> Any:
        """Train the method's parameters on auxiliary records (only methods with `learns`) into the run folder
        `out_dir`; returns an object with the last `checkpoint`. Every method takes the options of `anomalyclip
        train`: `num_workers`, `mask_threshold`, `progress`, `cache_dir` (a folder where it may keep the frozen
        backbone's features for the next training on the same images), `cache` and `cache_dtype` (None: the
        method's default), `resume` with `allow_changes`, and `overwrite`; one it cannot honour is an error."""
        raise NotImplementedError(f"method {self.name!r} has nothing to train")

    def describe(self) -> dict[str, Any]:
        """Settings recorded beside every result (the method's name and configuration)."""
        return {"method": self.name, "image_size": self.image_size, "sigma": self.sigma, "shots": self.shots}
