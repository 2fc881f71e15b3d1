"""Helpers the tests import (`from support import ...`): where `../shared` is, and a tiny model factory.

Kept out of `conftest.py`, whose module name `notebooks/conftest.py` shares, so that imports never pick the wrong one.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANOMALYCLIP_SHARED", REPO_ROOT.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path inside ../shared, or skip the test saying exactly what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the read-only ../shared bundle beside the checkout")
    return path


def tiny_model(clip, *, size: int | None = None, epochs: int | None = None, batch_size: int | None = None, **sections):
    """AnomalyCLIP on the tiny CLIP with fresh seeded prompts: the official recipe with `sections` replaced, then
    the shortcuts `size` (vision.image_size), `epochs` and `batch_size` (train.*) applied."""
    from anomalyclip.config import AnomalyCLIPConfig
    from anomalyclip.model import AnomalyCLIP

    config = AnomalyCLIPConfig(backbone="tiny", pretrained=None).replace(**sections)
    if size is not None:
        config = config.replace(vision=dataclasses.replace(config.vision, image_size=size))
    train = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
    if train:
        config = config.replace(train=dataclasses.replace(config.train, **train))
    return AnomalyCLIP(clip, config)
