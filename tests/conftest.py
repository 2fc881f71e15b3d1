"""Test-wide settings and shared fixtures: never touch the network, find the read-only `../shared` bundle beside the
checkout, and build the tiny CLIP, the synthetic dataset and tiny models once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from support import require_shared


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
