"""A torch Dataset over records and a DataLoader helper that decodes and resizes in worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader

from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.data.records import Record
from anomalyclip.data.transforms import ImageTransform, MaskTransform
from anomalyclip.errors import DataError


def load_pair(record: Record, mask_threshold: int = DEFAULT_MASK_THRESHOLD) -> tuple[Image.Image, Image.Image]:
    """Image and binary 'L' mask of one size; a record without mask gets zeros of the image's own size."""
    image = read_image(record.image, record.crop)
    if record.mask is None:
        return image, Image.new("L", image.size, 0)
    mask = read_mask(record.mask, mask_threshold, record.crop)
    if mask.size != image.size:
        raise DataError(
            f"{record.mask}: mask is {mask.size[0]}x{mask.size[1]} but image {record.name} is "
            f"{image.size[0]}x{image.size[1]}; expected the same width x height"
        )
    return image, mask


class AnomalyDataset(torch.utils.data.Dataset):
    """Items {image (3,S,S) float, mask (1,S,S) uint8 0/1, label, category, defect, path}, official transforms."""

    def __init__(
        self,
        records: Sequence[Record],
        image_size: int = 518,
        mask_threshold: int = DEFAULT_MASK_THRESHOLD,
        *,
        image_transform: Callable[[Image.Image], torch.Tensor] | None = None,
        mask_transform: Callable[[Image.Image | None], torch.Tensor] | None = None,
    ):
        """`image_transform` / `mask_transform` replace the official ones (a method whose reference code differs)."""
        self.records = list(records)
        self.image_transform = image_transform or ImageTransform(image_size)
        self.mask_transform = mask_transform or MaskTransform(image_size)
        self.mask_threshold = mask_threshold

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image, mask = load_pair(record, self.mask_threshold)
        return {
            "image": self.image_transform(image),
            "mask": self.mask_transform(mask),
            "label": record.label,
            "category": record.category,
            "defect": record.defect,
            "path": record.name,
        }


def make_loader(
    dataset: AnomalyDataset,
    batch_size: int = 8,
    *,
    shuffle: bool = False,
    num_workers: int | None = None,
    seed: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader with worker processes (default: all CPUs, at most 8) and a seeded shuffle order."""
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1, len(dataset))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        generator=generator,
        prefetch_factor=4 if num_workers > 0 else None,
    )
