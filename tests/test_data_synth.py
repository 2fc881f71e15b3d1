"""The synthetic MVTec-layout dataset: layout, exact masks, determinism and the cached copy (its speed: see
benchmarks/bench_data.py --synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyclip.data.synth import (
    CLEAN_RANGE,
    DEFECT_TYPES,
    MARKER_NAME,
    SYNTH_CATEGORIES,
    default_synthetic_root,
    ensure_synthetic_dataset,
    make_synthetic_dataset,
)
from anomalyclip.errors import DataError

SMALL = {"n_train": 2, "n_test_good": 2, "n_test_defect": 3, "image_size": 64}


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth") / "data")


def test_layout_matches_mvtec(default_dataset: Path) -> None:
    root = default_dataset
    assert "synthetic" in (root / "README.txt").read_text().lower()
    for category in SYNTH_CATEGORIES:
        assert sorted(p.name for p in (root / category / "train" / "good").iterdir()) == [
            f"{i:03d}.png" for i in range(8)
        ]
        assert len(list((root / category / "test" / "good").glob("*.png"))) == 6
        defects = sorted(p.name for p in (root / category / "test").iterdir() if p.name != "good")
        assert defects == sorted(DEFECT_TYPES)
        n_defect = 0
        for kind in defects:
            images = sorted((root / category / "test" / kind).glob("*.png"))
            masks = sorted((root / category / "ground_truth" / kind).glob("*_mask.png"))
            assert [m.name for m in masks] == [p.stem + "_mask.png" for p in images]
            n_defect += len(images)
        assert n_defect == 10
        assert not (root / category / "ground_truth" / "good").exists()


def test_masks_are_exactly_the_defect_pixels(default_dataset: Path) -> None:
    low, high = CLEAN_RANGE
    for category in SYNTH_CATEGORIES:
        for image_path in sorted((default_dataset / category).glob("t*/*/*.png")):
            image = _load(image_path)
            assert image.shape == (128, 128, 3) and image.dtype == np.uint8
            kind = image_path.parent.name
            outside_clean = ((image < low) | (image > high)).any(axis=-1)
            if kind == "good":
                assert not outside_clean.any(), image_path
                continue
            mask = _load(default_dataset / category / "ground_truth" / kind / f"{image_path.stem}_mask.png")
            assert mask.shape == (128, 128) and set(np.unique(mask)) == {0, 255}, image_path
            assert np.array_equal(mask == 255, outside_clean), image_path


def test_defects_differ_from_the_same_image_without_them(tmp_path: Path) -> None:
    """Regenerating a defect image's clean base shows the mask covers every changed pixel and no other."""
    from anomalyclip.data import synth

    root = make_synthetic_dataset(tmp_path, categories=["disc", "weave"], **SMALL)
    for category in ("disc", "weave"):
        for i, (kind, j) in enumerate(synth._defect_plan(SMALL["n_test_defect"])):
            clean, region = synth.PAINTERS[category](synth._rng(0, category, "defect", i), 64)
            image = _load(root / category / "test" / kind / f"{j:03d}.png")
            mask = _load(root / category / "ground_truth" / kind / f"{j:03d}_mask.png") > 0
            changed = (image != clean).any(axis=-1)
            assert np.array_equal(changed, mask)
            assert mask.sum() >= synth.MIN_DEFECT_PIXELS
            assert not (mask & ~region).any(), "object defects stay on the object"


def test_defects_contrast_with_the_background(default_dataset: Path) -> None:
    """Defect pixels sit far from the clean intensities, so a local detector can learn them."""
    low, high = CLEAN_RANGE
    for mask_path in sorted(default_dataset.glob("*/ground_truth/*/*_mask.png")):
        category, _, kind, name = mask_path.relative_to(default_dataset).parts
        image = _load(default_dataset / category / "test" / kind / name.replace("_mask", "")).astype(int)
        values = image[_load(mask_path) > 0]
        distance = np.minimum(np.abs(values - low), np.abs(values - high)).min(axis=-1)
        assert distance.min() >= 25


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    first = _files(make_synthetic_dataset(tmp_path / "a", **SMALL))
    second = _files(make_synthetic_dataset(tmp_path / "b", **SMALL))
    assert first == second


def test_other_seed_gives_other_images(tmp_path: Path) -> None:
    first = _files(make_synthetic_dataset(tmp_path / "a", **SMALL))
    other = _files(make_synthetic_dataset(tmp_path / "b", seed=1, **SMALL))
    assert first.keys() == other.keys()
    pngs = [k for k in first if k.endswith(".png")]
    assert all(first[k] != other[k] for k in pngs if not k.endswith("_mask.png"))


def test_an_image_does_not_depend_on_how_many_others_are_made(tmp_path: Path) -> None:
    few = _files(make_synthetic_dataset(tmp_path / "a", categories=["stripes"], **SMALL))
    more = _files(make_synthetic_dataset(tmp_path / "b", categories=["square", "stripes"], **{**SMALL, "n_train": 4}))
    assert few["stripes/train/good/001.png"] == more["stripes/train/good/001.png"]
    assert few["stripes/test/spot/000.png"] == more["stripes/test/spot/000.png"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": ["bottle"]}, "unknown synthetic categories"),
        ({"n_train": -1}, ">= 0"),
        ({"image_size": 8}, "32"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make_synthetic_dataset(tmp_path, **kwargs)


def test_default_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANOMALYCLIP_DATA", str(tmp_path))
    assert default_synthetic_root() == tmp_path / "synthetic"
    monkeypatch.delenv("ANOMALYCLIP_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_synthetic_root() == tmp_path / "home" / ".cache" / "anomalyclip" / "synthetic"


def test_ensure_makes_once_and_regenerates_on_changed_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANOMALYCLIP_DATA", str(tmp_path))
    root = ensure_synthetic_dataset(**SMALL)
    assert root == tmp_path / "synthetic"
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["n_train"] == 2 and marker["categories"] == list(SYNTH_CATEGORIES)
    stamp = (root / "disc" / "train" / "good" / "000.png").stat().st_mtime_ns
    assert ensure_synthetic_dataset(**SMALL) == root
    assert (root / "disc" / "train" / "good" / "000.png").stat().st_mtime_ns == stamp

    ensure_synthetic_dataset(categories=["disc"], **{**SMALL, "n_train": 1})
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["disc"]
    assert [p.name for p in (root / "disc" / "train" / "good").iterdir()] == ["000.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"], "no staging folder is left behind"


def test_ensure_refuses_a_folder_that_is_not_synthetic(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(DataError, match="refusing to overwrite"):
        ensure_synthetic_dataset(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "user data"
