"""Folder layouts as users download them: each walker turns a folder into records and structural problems.

Walkers are plain functions; the `*_layout` factories wrap them with a detector and a description, and
`anomalyclip.data.adapters.registry` says which layouts belong to which dataset.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anomalyclip.data.meta_json import META_JSON, read_meta_json
from anomalyclip.data.records import (
    EMPTY_CATEGORY,
    MISSING_FILE,
    NORMAL,
    ORPHAN_MASK,
    UNLABELLED,
    Listing,
    Problem,
    Record,
)
from anomalyclip.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Layout:
    """A folder shape: a one-line description (used in errors), a cheap detector and a walker."""

    name: str
    expects: str
    detect: Callable[[Path], bool]
    walk: Callable[[Path, int], Listing]


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name; hidden files are not images."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def child(folder: Path, name: str) -> Path | None:
    """The sub-folder of `folder` called `name`, ignoring case (DAGM writes Train/Test, MVTec train/test)."""
    if not folder.is_dir():
        return None
    exact = folder / name
    if exact.is_dir():
        return exact
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def match_masks(images: Sequence[Path], masks: Sequence[Path], patterns: Sequence[str]) -> dict[Path, Path]:
    """Pair each image with the mask whose stem is a `patterns` entry formatted with its stem (first wins)."""
    by_stem = {m.stem: m for m in masks}
    pairs = {}
    for image in images:
        for pattern in patterns:
            mask = by_stem.get(pattern.format(stem=image.stem))
            if mask is not None and mask != image:
                pairs[image] = mask
                break
    return pairs


def orphan_problems(masks: Sequence[Path], used: set[Path], category: str) -> list[Problem]:
    return [
        Problem(ORPHAN_MASK, m, f"{m}: mask matches no image; expected an image with the same name", category)
        for m in masks
        if m not in used
    ]


# --- MVTec-like: <category>/{train,test}/<defect>/*, <category>/ground_truth/<defect>/<stem>_mask.* ---------

MVTEC_MASK_PATTERNS = ("{stem}_mask", "{stem}")


def mvtec_categories(root: Path) -> list[Path]:
    """`root` itself when it is one category (has test/ or train/), else its category sub-folders."""
    if child(root, "test") or child(root, "train"):
        return [root]
    return [c for c in subdirs(root) if child(c, "test") or child(c, "train")]


def walk_mvtec(root: Path, normal: str = NORMAL) -> Listing:
    """MVTec AD, MPDD, BTAD (normal folder 'ok'), DTD-Synthetic, prepared SDD and user folders."""
    listing = Listing()
    for cat_dir in mvtec_categories(root):
        category = cat_dir.name
        n_before = len(listing.records)
        gt_dir = child(cat_dir, "ground_truth")
        for split in ("train", "test"):
            split_dir = child(cat_dir, split)
            for defect_dir in subdirs(split_dir) if split_dir else []:
                images = image_files(defect_dir)
                is_normal = defect_dir.name.lower() == normal
                masks = [] if is_normal or gt_dir is None else image_files(gt_dir / defect_dir.name)
                pairs = match_masks(images, masks, MVTEC_MASK_PATTERNS)
                defect = NORMAL if is_normal else defect_dir.name
                listing.records += [
                    Record(p, None if is_normal else pairs.get(p), category, defect, int(not is_normal), split)
                    for p in images
                ]
                if split == "test":
                    listing.problems += orphan_problems(masks, set(pairs.values()), category)
        if len(listing.records) == n_before:
            listing.problems.append(
                Problem(
                    EMPTY_CATEGORY,
                    cat_dir,
                    f"{cat_dir}: category has no images under train/ or test/",
                    category,
                )
            )
    return listing


def detect_mvtec(root: Path, normal: str = NORMAL) -> bool:
    for cat_dir in mvtec_categories(root):
        for split in ("test", "train"):
            split_dir = child(cat_dir, split)
            if split_dir and any(d.name.lower() == normal for d in subdirs(split_dir)):
                return True
    return False


def mvtec_layout(normal: str = NORMAL) -> Layout:
    return Layout(
        f"MVTec-like (normal folder '{normal}')",
        f"<category>/train/{normal}/*, <category>/test/{{{normal},<defect>}}/*, "
        "<category>/ground_truth/<defect>/<name>_mask.* (ROOT may also be one category folder)",
        lambda root: detect_mvtec(root, normal),
        lambda root, threshold: walk_mvtec(root, normal),
    )


# --- VisA: split_csv/1cls.csv (object, split, label, image, mask) -------------------------------------------

VISA_CSV_PLACES = ("split_csv/1cls.csv", "1cls.csv")


def read_visa_csv(csv_path: Path, root: Path, check_files: bool = True) -> Listing:
    """Records from VisA's official split file; image and mask paths are relative to `root`."""
    listing = Listing()
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = {"object", "split", "label", "image", "mask"}
    if not rows or not expected <= set(rows[0]):
        raise DataError(f"{csv_path}: columns {sorted(rows[0]) if rows else []}; expected {sorted(expected)}")
    for line, row in enumerate(rows, start=2):
        anomalous = row["label"].strip() == "anomaly"
        if row["label"].strip() not in ("anomaly", "normal"):
            raise DataError(f"{csv_path}:{line}: label {row['label']!r}; expected 'normal' or 'anomaly'")
        mask = root / row["mask"] if anomalous and row["mask"].strip() else None
        record = Record(
            root / row["image"],
            mask,
            row["object"],
            "anomaly" if anomalous else NORMAL,
            int(anomalous),
            row["split"],
        )
        listing.records.append(record)
        for path in (record.image, record.mask) if check_files else ():
            if path is not None and not path.is_file():
                listing.problems.append(
                    Problem(
                        MISSING_FILE,
                        path,
                        f"{path}: listed in {csv_path} but absent",
                        record.category,
                        record,
                    )
                )
    return listing


def visa_layout() -> Layout:
    def find(root: Path) -> Path | None:
        return next((root / p for p in VISA_CSV_PLACES if (root / p).is_file()), None)

    return Layout(
        "VisA split file",
        "split_csv/1cls.csv (object,split,label,image,mask) and the <object>/Data/{Images,Masks}/ it lists",
        lambda root: find(root) is not None,
        lambda root, threshold: read_visa_csv(find(root), root),
    )


# --- DAGM 2007 (Kaggle upload): ClassN/{Train,Test}/*.PNG, ClassN/{Train,Test}/Label/<stem>_label.PNG -------


def dagm_classes(root: Path) -> list[Path]:
    return [d for d in subdirs(root) if re.fullmatch(r"class\d+(_def)?", d.name.lower())]


def walk_dagm(root: Path, threshold: int) -> Listing:
    """An image is anomalous exactly when a label file exists for it (DAGM labels only defective images)."""
    listing = Listing()
    for cat_dir in dagm_classes(root):
        n_before = len(listing.records)
        for split in ("train", "test"):
            split_dir = child(cat_dir, split)
            if split_dir is None:
                continue
            images = image_files(split_dir)
            label_dir = child(split_dir, "label")
            masks = image_files(label_dir) if label_dir else []
            pairs = match_masks(images, masks, ("{stem}_label",))
            listing.records += [
                Record(p, pairs.get(p), cat_dir.name, "defect" if p in pairs else NORMAL, int(p in pairs), split)
                for p in images
            ]
            listing.problems += orphan_problems(masks, set(pairs.values()), cat_dir.name)
        if len(listing.records) == n_before:
            listing.problems.append(
                Problem(EMPTY_CATEGORY, cat_dir, f"{cat_dir}: no images under Train/ or Test/", cat_dir.name)
            )
    return listing


def dagm_layout() -> Layout:
    return Layout(
        "DAGM 2007 (Kaggle upload)",
        "Class<N>/{Train,Test}/*.PNG with defect labels in Class<N>/{Train,Test}/Label/<name>_label.PNG",
        lambda root: any(child(d, "test") or child(d, "train") for d in dagm_classes(root)),
        walk_dagm,
    )


# --- HeadCT (Kaggle): labels.csv (id, hemorrhage) + head_ct/NNN.png -----------------------------------------


def headct_image_dir(root: Path) -> Path | None:
    """The folder of PNGs beside labels.csv: head_ct/, head_ct/head_ct/ (Kaggle's nesting) or ROOT itself."""
    for candidate in (root / "head_ct" / "head_ct", root / "head_ct", root):
        if image_files(candidate):
            return candidate
    return None


def walk_headct(root: Path, threshold: int, category: str = "brain") -> Listing:
    listing = Listing()
    csv_path = root / "labels.csv"
    with open(csv_path, newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    header = [h.lower() for h in rows[0]] if rows else []
    if header[:2] != ["id", "hemorrhage"]:
        raise DataError(f"{csv_path}: header {rows[0] if rows else []}; expected 'id, hemorrhage'")
    image_dir = headct_image_dir(root)
    by_id = {int(p.stem): p for p in image_files(image_dir) if p.stem.isdigit()} if image_dir else {}
    labelled = set()
    for line, (ident, value, *_) in enumerate(rows[1:], start=2):
        if value not in ("0", "1") or not ident.isdigit():
            raise DataError(f"{csv_path}:{line}: row ({ident}, {value}); expected an integer id and 0 or 1")
        image = by_id.get(int(ident))
        if image is None:
            missing = (image_dir or root) / f"{int(ident):03d}.png"
            listing.problems.append(Problem(MISSING_FILE, missing, f"{missing}: id {ident} of {csv_path} has no image"))
            continue
        labelled.add(image)
        anomalous = value == "1"
        listing.records.append(
            Record(image, None, category, "hemorrhage" if anomalous else NORMAL, int(anomalous), "test")
        )
    listing.problems += [
        Problem(UNLABELLED, p, f"{p}: image has no row in {csv_path}", category)
        for p in by_id.values()
        if p not in labelled
    ]
    return listing


def headct_layout() -> Layout:
    return Layout(
        "HeadCT (Kaggle)",
        "labels.csv (id, hemorrhage) and head_ct/<id>.png",
        lambda root: (root / "labels.csv").is_file() and headct_image_dir(root) is not None,
        walk_headct,
    )


# --- image-level class folders: BrainMRI no/yes, Br35H no/yes, COVID-19 Normal/COVID ------------------------


def walk_class_folders(
    root: Path, normal: str, anomalous: Sequence[str], category: str, images_sub: str | None = "images"
) -> Listing:
    """Images in <normal>/ are normal, in <anomalous>/ anomalous; other folders are noted and left out."""
    listing = Listing()
    wanted = {normal.lower(), *(a.lower() for a in anomalous)}
    for folder in subdirs(root):
        key = folder.name.lower()
        if key not in wanted:
            count = len(image_files(folder)) + len(image_files(folder / "images"))
            if count:
                listing.notes.append(f"left out {folder} ({count} images): not a class of this dataset")
            continue
        nested = child(folder, images_sub) if images_sub else None
        images = image_files(nested) if nested else image_files(folder)
        if nested is not None and subdirs(folder) != [nested]:
            listing.notes.append(f"left out {[d.name for d in subdirs(folder) if d != nested]} in {folder}")
        is_normal = key == normal.lower()
        listing.records += [
            Record(p, None, category, NORMAL if is_normal else folder.name, int(not is_normal), "test") for p in images
        ]
        if not images:
            listing.problems.append(Problem(EMPTY_CATEGORY, folder, f"{folder}: class folder has no images", category))
    return listing


def class_folders_layout(normal: str, anomalous: Sequence[str], category: str, base: str | None = None) -> Layout:
    """Class folders directly in ROOT, or in its `base` sub-folder when one is named (then it must exist)."""

    def base_dir(root: Path) -> Path | None:
        return child(root, base) if base else root

    def detect(root: Path) -> bool:
        folder = base_dir(root)
        return folder is not None and all(child(folder, name) for name in (normal, *anomalous))

    where = f"{base}/" if base else ""
    return Layout(
        f"class folders {where}{normal}/ vs {'/, '.join(anomalous)}/",
        f"{where}{normal}/* (normal) and {', '.join(f'{where}{a}/*' for a in anomalous)} (anomalous)",
        detect,
        lambda root, threshold: walk_class_folders(base_dir(root), normal, anomalous, category),
    )


# --- paired image and mask folders (all images anomalous): CVC sets, Kvasir, Endo, ISIC, TN3K ---------------


def walk_paired(
    root: Path, image_dir: str, mask_dir: str, patterns: Sequence[str], category: str, defect: str
) -> Listing:
    """Every image is anomalous and needs a mask; in a shared folder, files used as masks are not images."""
    files = image_files(root / image_dir)
    masks = files if image_dir == mask_dir else image_files(root / mask_dir)
    pairs = match_masks(files, masks, patterns)
    used = set(pairs.values())
    images = [p for p in files if p not in used and not p.stem.endswith("_superpixels")]
    listing = Listing([Record(p, pairs.get(p), category, defect, 1, "test") for p in images])
    if image_dir != mask_dir:
        listing.problems += orphan_problems(masks, used, category)
    if not images:
        listing.problems.append(Problem(EMPTY_CATEGORY, root / image_dir, f"{root / image_dir}: no images", category))
    return listing


def paired_layout(
    image_dir: str,
    mask_dir: str,
    category: str,
    defect: str,
    patterns: Sequence[str] = ("{stem}",),
    mask_hint: str = "<name>.*",
) -> Layout:
    def detect(root: Path) -> bool:
        files = image_files(root / image_dir)
        if image_dir == mask_dir:
            return bool(match_masks(files, files, patterns))
        if not (files and image_files(root / mask_dir)):
            return False
        return bool(match_masks(files[:20], image_files(root / mask_dir), patterns))

    same = image_dir == mask_dir
    return Layout(
        f"paired {image_dir}/ + {mask_dir}/",
        f"{image_dir}/<name>.* with masks {mask_dir}/{mask_hint}" if not same else f"<name>.* beside {mask_hint}",
        detect,
        lambda root, threshold: walk_paired(root, image_dir, mask_dir, patterns, category, defect),
    )


# --- the official meta.json ---------------------------------------------------------------------------------


def meta_json_layout() -> Layout:
    return Layout(
        "official meta.json",
        f"{META_JSON} as written by the official generate_dataset_json scripts",
        lambda root: (root / META_JSON).is_file(),
        lambda root, threshold: read_meta_json(root / META_JSON, root),
    )
