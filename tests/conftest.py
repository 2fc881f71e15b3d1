"""Test-wide settings: never touch the network, and find the read-only `../shared` bundle beside the checkout."""

from __future__ import annotations

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
def tiny_clip():
    """The seeded random `tiny` CLIP, built once per session (frozen, so tests may share it)."""
    from anomalyclip.backbone import load_backbone

    return load_backbone("tiny")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The deterministic synthetic MVTec-layout dataset, generated once per session."""
    from anomalyclip.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synthetic")
