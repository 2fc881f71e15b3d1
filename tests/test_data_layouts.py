"""Layouts that ../shared lacks, built in tmp_path as their downloads come; meta.json; auto-detection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyclip.data import (
    DATASETS,
    list_dataset,
    load_pair,
    load_records,
    prepare_sdd,
    read_meta_json,
    write_meta_json,
)
from anomalyclip.data.adapters.registry import AUTO_ORDER, resolve
from anomalyclip.data.records import count_records
from anomalyclip.errors import DataError


def write_image(path: Path, size=(32, 24), value: int = 100, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "P") else (value,) * len(mode)).save(path)
    return path


def write_mask(path: Path, size=(32, 24), box=(4, 4, 12, 12)) -> Path:
    array = np.zeros(size[::-1], np.uint8)
    array[box[1] : box[3], box[0] : box[2]] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_mvtec(
    root: Path, category="widget", normal="good", defects=("scratch",), n=2, ext=".png", mask_suffix="_mask"
):
    """An MVTec-like category: n train normals, n test normals, n images per defect with masks."""
    for i in range(n):
        write_image(root / category / "train" / normal / f"{i:03d}{ext}")
        write_image(root / category / "test" / normal / f"{i:03d}{ext}")
        for defect in defects:
            write_image(root / category / "test" / defect / f"{i:03d}{ext}")
            write_mask(root / category / "ground_truth" / defect / f"{i:03d}{mask_suffix}.png")
    return root


def counts(records):
    return {key: tuple(value) for key, value in count_records(records).items()}


def test_registry_has_17_datasets_and_generic():
    paper = {
        "mvtec",
        "visa",
        "mpdd",
        "btad",
        "sdd",
        "dagm",
        "dtd",
        "headct",
        "brainmri",
        "br35h",
        "covid",
        "isic",
    }
    paper |= {"clinicdb", "colondb", "kvasir", "endo", "tn3k"}
    assert paper <= set(DATASETS)
    assert {"generic", "meta_json"} <= set(DATASETS) and set(AUTO_ORDER) <= set(DATASETS)


def test_visa_with_images(tmp_path):
    rows = [
        ("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
        ("candle", "test", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
        (
            "candle",
            "test",
            "anomaly",
            "candle/Data/Images/Anomaly/000.JPG",
            "candle/Data/Masks/Anomaly/000.png",
        ),
    ]
    for _, _, _, image, mask in rows:
        write_image(tmp_path / image)
        if mask:
            write_mask(tmp_path / mask)
    (tmp_path / "split_csv").mkdir()
    with open(tmp_path / "split_csv" / "1cls.csv", "w", newline="") as f:
        csv.writer(f).writerows([("object", "split", "label", "image", "mask"), *rows])
    records = load_records(tmp_path, "auto", split="test")
    assert counts(records) == {("candle", "test", 0): (1, 0), ("candle", "test", 1): (1, 1)}
    assert len(load_records(tmp_path, "visa", split="train")) == 1


def test_btad(tmp_path):
    root = tmp_path / "BTech_Dataset_transformed"
    make_mvtec(root, "01", normal="ok", defects=("ko",), ext=".bmp", mask_suffix="")
    make_mvtec(root, "03", normal="ok", defects=("ko",), n=1)
    assert resolve(root)[0].name == "btad"
    records = load_records(root, "btad", split=None)
    assert counts(records)[("01", "test", 1)] == (2, 2)
    assert all(r.defect == "good" for r in records if r.label == 0)
    assert load_records(root, "btad", categories=["03"])[0].category == "03"


def test_dagm(tmp_path):
    for cls in ("Class1", "Class2"):
        for split in ("Train", "Test"):
            for i in range(3):
                write_image(tmp_path / cls / split / f"{i:04d}.PNG", mode="L")
            write_mask(tmp_path / cls / split / "Label" / "0001_label.PNG")
            (tmp_path / cls / split / "Label" / "Labels.txt").write_text("header\n")
    records = load_records(tmp_path, "auto", split="test")
    assert counts(records) == {
        (c, "test", label): (n, label) for c in ("Class1", "Class2") for label, n in ((0, 2), (1, 1))
    }
    assert next(r for r in records if r.label).mask.name == "0001_label.PNG"


def test_dtd_synthetic(tmp_path):
    make_mvtec(tmp_path, "Woven_001", defects=("bad",))
    records = load_records(tmp_path, "dtd")
    assert counts(records) == {("Woven_001", "test", 0): (2, 0), ("Woven_001", "test", 1): (2, 2)}


@pytest.mark.parametrize(
    ("dataset", "normal", "anomalous", "category"),
    [("br35h", "no", "yes", "brain"), ("covid", "Normal", "COVID", "chest")],
)
def test_class_folders(tmp_path, dataset, normal, anomalous, category):
    for i in range(3):
        write_image(tmp_path / normal / f"n{i}.png", mode="L")
    for i in range(2):
        write_image(tmp_path / anomalous / f"a{i}.jpg")
    write_image(tmp_path / "pred" / "p0.jpg")  # Br35H's unlabelled folder; for COVID an unused class
    _, _, listing = list_dataset(tmp_path, dataset)
    assert counts(listing.records) == {(category, "test", 0): (3, 0), (category, "test", 1): (2, 0)}
    assert any("pred" in note for note in listing.notes)
    assert resolve(tmp_path)[0].name == dataset


def test_covid_radiography_v4_nests_images(tmp_path):
    """COVID-19_Radiography_Dataset: <Class>/images/*.png beside <Class>/masks/ (lung masks, no anomalies)."""
    for cls, n in (("Normal", 3), ("COVID", 2), ("Viral Pneumonia", 1)):
        for i in range(n):
            write_image(tmp_path / cls / "images" / f"{cls}-{i}.png", mode="L")
            write_mask(tmp_path / cls / "masks" / f"{cls}-{i}.png")
    _, _, listing = list_dataset(tmp_path, "covid")
    assert counts(listing.records) == {("chest", "test", 0): (3, 0), ("chest", "test", 1): (2, 0)}
    assert any("Viral Pneumonia" in n for n in listing.notes) and any("masks" in n for n in listing.notes)


def test_tn3k(tmp_path):
    for i in range(3):
        write_image(tmp_path / "test-image" / f"{i:04d}.jpg", mode="L")
        write_mask(tmp_path / "test-mask" / f"{i:04d}.jpg")
    records = load_records(tmp_path, "auto")
    assert counts(records) == {("thyroid", "test", 1): (3, 3)}


def test_isic_2016_names(tmp_path):
    write_image(tmp_path / "ISBI2016_ISIC_Part1_Test_Data" / "ISIC_0000003.jpg")
    write_mask(tmp_path / "ISBI2016_ISIC_Part1_Test_GroundTruth" / "ISIC_0000003_Segmentation.png")
    [record] = load_records(tmp_path, "auto")
    assert record.category == "skin" and record.mask.name == "ISIC_0000003_Segmentation.png"


def test_headct_kaggle_nesting(tmp_path):
    for i in (0, 1, 100):
        write_image(tmp_path / "head_ct" / "head_ct" / f"{i:03d}.png")
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0,1\n1,1\n100,0\n")
    records = load_records(tmp_path, "headct")
    assert counts(records) == {("brain", "test", 0): (1, 0), ("brain", "test", 1): (2, 0)}


def test_generic_single_category_root(tmp_path):
    make_mvtec(tmp_path, "bolt")
    records = load_records(tmp_path / "bolt", "generic", split=None)
    assert {r.category for r in records} == {"bolt"} and len(records) == 6


def test_meta_json_round_trip(tmp_path):
    make_mvtec(tmp_path, "widget", defects=("scratch", "dent"))
    records = load_records(tmp_path, "mvtec", split=None)
    path = write_meta_json(records, tmp_path)
    meta = json.loads(path.read_text())
    assert set(meta) == {"train", "test"} and set(meta["test"]) == {"widget"}
    item = next(i for i in meta["test"]["widget"] if i["anomaly"] == 1)
    assert set(item) == {"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}
    assert item["img_path"].startswith("widget/test/") and item["mask_path"].startswith("widget/ground_truth/")
    assert next(i for i in meta["train"]["widget"])["mask_path"] == ""
    assert sorted(read_meta_json(path).records, key=str) == sorted(records, key=str)
    assert sorted(load_records(tmp_path, "meta_json", split=None), key=str) == sorted(records, key=str)


def test_official_meta_json_quirks(tmp_path):
    """DAGM's script writes 'Train'/'Test', image-level scripts absolute paths and mask '' for anomalies."""
    image = write_image(tmp_path / "yes" / "y1.jpg")
    meta = {
        "Test": {"brain": [dict(img_path=str(image), mask_path="", cls_name="brain", specie_name="yes", anomaly=1)]}
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    [record] = load_records(tmp_path, "meta_json")
    assert record.image == image and record.mask is None and record.split == "test"
    with pytest.raises(DataError, match="anomalous image has no mask"):
        load_records(tmp_path, "mvtec")  # the same meta.json read as a pixel-level dataset


def test_prepare_sdd_writes_mvtec_layout(tmp_path):
    part = np.full((90, 20), 120, np.uint8)
    label = np.zeros((90, 20), np.uint8)
    label[70:75, 5:10] = 1
    (tmp_path / "raw" / "kos01").mkdir(parents=True)
    Image.fromarray(part).save(tmp_path / "raw" / "kos01" / "Part0.jpg")
    palette = Image.fromarray(label).convert("P")  # indices 0/1, as KolektorSDD's palette BMPs
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.save(tmp_path / "raw" / "kos01" / "Part0_label.bmp")
    raw = load_records(tmp_path / "raw", "sdd")
    assert [r.label for r in raw] == [0, 0, 1] and raw[2].crop == (0, 60, 20, 90)
    with pytest.raises(DataError, match="cropped record"):
        write_meta_json(raw, tmp_path / "raw")
    prepared = load_records(prepare_sdd(tmp_path / "raw", tmp_path / "sdd"), "sdd")
    assert counts(prepared) == counts(raw)
    image, mask = load_pair(next(r for r in prepared if r.label))
    assert image.size == (20, 30) and np.asarray(mask)[10:15, 5:10].all()


def test_unknown_layout_names_every_layout(tmp_path):
    write_image(tmp_path / "x.png")
    with pytest.raises(DataError) as err:
        load_records(tmp_path)
    message = str(err.value)
    assert "unknown layout" in message and "split_csv/1cls.csv" in message and "kos<NN>" in message
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_records(tmp_path, "nope")


def test_unknown_category_and_split(tmp_path):
    make_mvtec(tmp_path)
    with pytest.raises(DataError, match=r"categories \['bolt'\] not found; expected some of \['widget'\]"):
        load_records(tmp_path, "mvtec", categories=["bolt"])
    with pytest.raises(DataError, match="split 'val'"):
        load_records(tmp_path, "mvtec", split="val")
