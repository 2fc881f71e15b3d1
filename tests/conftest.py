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
