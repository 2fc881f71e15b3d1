"""The official AnomalyCLIP preprocessing: square bicubic resize, RGB, OpenAI mean/std; masks cut at 0.5."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageTransform:
    """PIL image -> (3, S, S) float tensor: Resize((S, S)) bicubic on the PIL image, RGB, ToTensor, Normalize.

    Equal to the official torchvision pipeline (its CenterCrop(S) after a square resize is a no-op). ToTensor and
    Normalize are one table per channel, holding what their float32 arithmetic gives for each of the 256 byte values,
    read into the output planes directly; a grey image is read three times instead of converted to RGB.
    """

    def __init__(self, size: int, mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD):
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        byte = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
        self._table = np.ascontiguousarray(((byte - self.mean) / self.std).T)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = image.resize((self.size, self.size), Image.Resampling.BICUBIC)
        if resized.mode not in ("L", "RGB"):
            resized = resized.convert("RGB")
        pixels = np.asarray(resized)
        planes = np.empty((3, self.size, self.size), np.float32)
        for channel, table in enumerate(self._table):
            np.take(table, pixels if pixels.ndim == 2 else pixels[..., channel], out=planes[channel], mode="clip")
        return torch.from_numpy(planes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class MaskTransform:
    """Binary 'L' mask (0/255) -> (1, S, S) uint8 0/1: Resize((S, S)) bilinear, ToTensor, then > 0.5.

    uint8 rather than float: a quarter of the bytes for the loader's workers to hand over; `> 0.5` and `.float()`
    read it as the official float mask.
    """

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, mask: Image.Image | None) -> torch.Tensor:
        if mask is None or mask.getbbox() is None:
            return torch.zeros(1, self.size, self.size, dtype=torch.uint8)
        grey = mask if mask.mode == "L" else mask.convert("L")
        resized = np.asarray(grey.resize((self.size, self.size), Image.Resampling.BILINEAR))
        return torch.from_numpy((resized > 127).view(np.uint8)).unsqueeze(0)  # ToTensor's v / 255 > 0.5

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
