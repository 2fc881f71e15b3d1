"""The transforms reproduce the official `preprocessed` and `masks` arrays of the conformance bundles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import require_shared

from anomalyclip.data import (
    OFFICIAL_MASK_THRESHOLD,
    OPENAI_MEAN,
    OPENAI_STD,
    ImageTransform,
    MaskTransform,
    read_image,
    read_mask,
)


@pytest.mark.parametrize("bundle", ["default", "nodpam"])
@pytest.mark.parametrize("threshold", [128, OFFICIAL_MASK_THRESHOLD])
def test_transforms_match_conformance(bundle, threshold):
    folder = require_shared("conformance", bundle)
    config = json.loads((folder / "config.json").read_text())
    expected = np.load(folder / "expected.npz")
    size = config["image_size"]
    image_transform, mask_transform = ImageTransform(size), MaskTransform(size)
    for i, item in enumerate(config["inputs"]):
        image = read_image(folder / "inputs" / item["image"])
        mask = read_mask(folder / "inputs" / item["mask"], threshold) if item["mask"] else None
        np.testing.assert_allclose(image_transform(image).numpy(), expected["preprocessed"][i], atol=1e-5)
        np.testing.assert_array_equal(mask_transform(mask)[0].numpy(), expected["masks"][i])
        assert int(expected["masks"][i].any()) == int(expected["labels"][i])


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "CMYK", "P"])
def test_image_transform_equals_the_float32_formula(mode):
    from PIL import Image

    pixels = np.random.default_rng(len(mode)).integers(0, 256, (30, 40, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    resized = np.asarray(image.resize((28, 28), Image.Resampling.BICUBIC).convert("RGB"), dtype=np.float32)
    expected = (resized / np.float32(255.0) - np.float32(OPENAI_MEAN)) / np.float32(OPENAI_STD)
    assert torch.equal(ImageTransform(28)(image), torch.from_numpy(expected.transpose(2, 0, 1).copy()))


def test_transform_shapes_and_modes():
    from PIL import Image

    for mode in ("L", "RGB", "RGBA"):
        x = ImageTransform(28)(Image.new(mode, (40, 30)))
        assert x.shape == (3, 28, 28) and x.dtype == torch.float32
    mask = MaskTransform(28)(Image.new("L", (40, 30), 255))
    assert mask.shape == (1, 28, 28) and mask.dtype == torch.uint8 and mask.min() == 1
    empty = MaskTransform(28)(None)
    assert empty.shape == (1, 28, 28) and empty.dtype == torch.uint8 and empty.sum() == 0
