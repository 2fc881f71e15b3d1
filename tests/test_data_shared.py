"""Every folder of the mini real benchmark (../shared/datasets) loads with the right counts, labels, masks."""

from __future__ import annotations

import numpy as np
import pytest
from support import require_shared

from anomalyclip.data import (
    DATASETS,
    AnomalyDataset,
    check_dataset,
    list_dataset,
    load_pair,
    load_records,
    read_image,
)
from anomalyclip.data.adapters.layouts import read_visa_csv
from anomalyclip.data.records import MISSING_FILE, count_records
from anomalyclip.errors import DataError

# folder, dataset, {(category, split, label): (images, with mask)}
CASES = [
    (
        "mvtec_ad",
        "mvtec",
        {("grid", "train", 0): (7, 0), ("grid", "test", 0): (3, 0), ("grid", "test", 1): (11, 11)},
    ),
    (
        "hazelnut_toy",
        "generic",
        {
            ("hazelnut", "train", 0): (10, 0),
            ("hazelnut", "test", 0): (6, 0),
            ("hazelnut", "test", 1): (17, 17),
        },
    ),
    ("mpdd", "mpdd", {("metal_plate", "test", 0): (12, 0), ("metal_plate", "test", 1): (12, 12)}),
    (
        "kolektorsdd",
        "sdd",
        {("electrical commutators", "test", 0): (39, 0), ("electrical commutators", "test", 1): (9, 9)},
    ),
    ("brainmri", "brainmri", {("brain", "test", 0): (98, 0), ("brain", "test", 1): (156, 0)}),
    ("headct", "headct", {("brain", "test", 0): (20, 0), ("brain", "test", 1): (20, 0)}),
    ("cvc_clinicdb", "clinicdb", {("colon", "test", 1): (10, 10)}),
    ("cvc_colondb", "colondb", {("colon", "test", 1): (8, 8)}),
    ("kvasir_seg", "kvasir", {("colon", "test", 1): (22, 22)}),
    ("endotect", "endo", {("colon", "test", 1): (16, 16)}),
    ("isic2017", "isic", {("skin", "test", 1): (9, 9)}),
    ("ham10000", "isic", {("skin", "test", 1): (5, 5)}),
]


def _counts(records):
    return {key: tuple(value) for key, value in count_records(records).items()}


@pytest.mark.parametrize(("folder", "dataset", "expected"), CASES, ids=[c[0] for c in CASES])
def test_shared_folder_counts(folder, dataset, expected):
    root = require_shared("datasets", folder)
    _, _, listing = list_dataset(root, dataset)
    assert not listing.problems
    assert _counts(listing.records) == expected
    auto = load_records(root, "auto", split=None)
    assert _counts(auto) == expected


@pytest.mark.parametrize(("folder", "dataset", "expected"), CASES, ids=[c[0] for c in CASES])
def test_shared_folder_masks_match_images(folder, dataset, expected):
    """First anomalous and normal record: mask of the image's own size, non-empty exactly when anomalous."""
    root = require_shared("datasets", folder)
    records = load_records(root, dataset, split="test")
    for label in (0, 1):
        record = next((r for r in records if r.label == label), None)
        if record is None:
            continue
        image, mask = load_pair(record)
        assert mask.size == image.size
        has_pixels = bool(np.asarray(mask).any())
        assert has_pixels == (label == 1 and record.mask is not None)


def test_shared_check_reports_ok():
    for folder, dataset, _ in CASES[:4] + CASES[6:8]:
        assert check_dataset(require_shared("datasets", folder), dataset).ok


def test_sdd_thirds_cover_each_part():
    root = require_shared("datasets", "kolektorsdd")
    records = load_records(root, "sdd")
    by_image = {}
    for r in records:
        by_image.setdefault(r.image, []).append(r.crop)
    assert len(by_image) == 16
    for image, crops in by_image.items():
        width, height = read_image(image).size
        assert len(crops) == 3 and crops[0][1] == 0 and crops[-1][3] == height
        assert all(c[0] == 0 and c[2] == width for c in crops)
        assert [c[3] for c in crops[:-1]] == [c[1] for c in crops[1:]]
    item = AnomalyDataset(records[:1], image_size=56)[0]
    assert item["image"].shape == (3, 56, 56) and "crop=" in item["path"]


def test_cvc_clinicdb_soft_mask_threshold():
    """CVC-ClinicDB masks have soft edges: the official > 0 rule marks more pixels than 128."""
    root = require_shared("datasets", "cvc_clinicdb")
    record = next(r for r in load_records(root, "clinicdb") if r.image.stem == "1")
    strict = np.asarray(load_pair(record)[1]).astype(bool).sum()
    loose = np.asarray(load_pair(record, mask_threshold=1)[1]).astype(bool).sum()
    assert 0 < strict < loose


def test_visa_split_file():
    root = require_shared("datasets", "visa_split")
    listing = read_visa_csv(root / "1cls.csv", root, check_files=False)
    test = [r for r in listing.records if r.split == "test"]
    assert (sum(r.label == 0 for r in test), sum(r.label == 1 for r in test)) == (962, 1200)
    assert sum(r.split == "train" for r in listing.records) == 8659
    assert {r.category for r in test} == set(DATASETS["visa"].categories)
    assert all(r.mask is not None for r in test if r.label)
    with pytest.raises(DataError, match=r"Images/Normal/\d+\.JPG: listed in .*1cls\.csv but absent"):
        load_records(root, "visa")
    _, _, listing = list_dataset(root, "visa")
    assert listing.problems and {p.kind for p in listing.problems} == {MISSING_FILE}
