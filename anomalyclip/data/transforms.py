"""The official AnomalyCLIP preprocessing: square bicubic resize, RGB, OpenAI mean/std; masks cut at 0.5."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageTransform:
    """PIL image -> (3, S, S) float tensor: Resize((S, S)) bicubic on the PIL image, RGB, ToTensor, Normalize.

    Equal to the official torchvision pipeline (its CenterCrop(S) after a square resize is a no-op).
    """

    def __init__(self, size: int, mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD):
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = image.resize((self.size, self.size), Image.Resampling.BICUBIC).convert("RGB")
        array = (np.asarray(resized, dtype=np.float32) / np.float32(255.0) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class MaskTransform:
    """Binary 'L' mask (0/255) -> (1, S, S) float 0/1: Resize((S, S)) bilinear, ToTensor, then > 0.5."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, mask: Image.Image | None) -> torch.Tensor:
        if mask is None or mask.getbbox() is None:
            return torch.zeros(1, self.size, self.size)
        resized = np.asarray(mask.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR))
        return torch.from_numpy(resized > 127).float().unsqueeze(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
