"""Test-wide settings and shared fixtures: never touch the network, find the read-only `../shared` bundle beside the
checkout, and build the tiny CLIP, the synthetic dataset and tiny models once."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANOMALYCLIP_SHARED", REPO_ROOT.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Path inside ../shared, or skip the test saying exactly what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the read-only ../shared bundle beside the checkout")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture
def conformance_dir() -> Path:
    return require_shared("conformance")


@pytest.fixture
def datasets_dir() -> Path:
    return require_shared("datasets")


@pytest.fixture(scope="session")
def clip():
    """The seeded random `tiny` CLIP, built once: it is frozen, so no test can change it."""
    from anomalyclip.backbone import load_backbone

    return load_backbone("tiny")


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """The default synthetic MVTec-like dataset (4 categories, 128 px), written once; tests must not modify it."""
    from anomalyclip.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synthetic")


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
