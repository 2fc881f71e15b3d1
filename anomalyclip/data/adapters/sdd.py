"""SDD as the paper uses it: raw KolektorSDD parts cut into three stacked strips, each a test image.

Cutting happens on reading (records carry a crop box); `prepare_sdd` writes the strips as an MVTec-like folder
for tools that need whole files (the official meta.json).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from anomalyclip.data.adapters.layouts import Layout, image_files, match_masks, orphan_problems, subdirs
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.data.records import MISSING_MASK, NORMAL, UNREADABLE, Listing, Problem, Record
from anomalyclip.errors import DataError

SDD_CATEGORY = "electrical commutators"
SDD_PIECES = 3


def sdd_boxes(width: int, height: int, pieces: int = SDD_PIECES) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of `pieces` stacked strips covering the image from top to bottom."""
    edges = [round(i * height / pieces) for i in range(pieces + 1)]
    return [(0, edges[i], width, edges[i + 1]) for i in range(pieces)]


def kolektor_folders(root: Path) -> list[Path]:
    return [d for d in subdirs(root) if re.fullmatch(r"kos\d+", d.name.lower())]


def walk_kolektor(root: Path, threshold: int) -> Listing:
    """One test record per third of each part; a third is anomalous when its label slice has a defect."""
    listing = Listing()
    for folder in kolektor_folders(root):
        labels = [p for p in image_files(folder) if p.stem.lower().endswith("_label")]
        images = [p for p in image_files(folder) if p not in labels]
        pairs = match_masks(images, labels, ("{stem}_label",))
        for image in images:
            label = pairs.get(image)
            if label is None:
                listing.problems.append(
                    Problem(MISSING_MASK, image, f"{image}: no {image.stem}_label.bmp beside it", SDD_CATEGORY)
                )
                continue
            try:
                mask = np.asarray(read_mask(label, threshold)) > 0
            except DataError as err:
                listing.problems.append(Problem(UNREADABLE, label, str(err), SDD_CATEGORY))
                continue
            for box in sdd_boxes(mask.shape[1], mask.shape[0]):
                defective = bool(mask[box[1] : box[3]].any())
                listing.records.append(
                    Record(
                        image,
                        label if defective else None,
                        SDD_CATEGORY,
                        "defect" if defective else NORMAL,
                        int(defective),
                        "test",
                        box,
                    )
                )
        listing.problems += orphan_problems(labels, set(pairs.values()), SDD_CATEGORY)
    return listing


def kolektor_layout() -> Layout:
    return Layout(
        "KolektorSDD (raw)",
        "kos<NN>/Part<K>.jpg with kos<NN>/Part<K>_label.bmp (cut into vertical thirds on reading)",
        lambda root: bool(kolektor_folders(root)),
        walk_kolektor,
    )


def prepare_sdd(source: str | Path, target: str | Path, threshold: int = DEFAULT_MASK_THRESHOLD) -> Path:
    """Write every strip of raw KolektorSDD as PNGs in `target/electrical commutators/test/{good,defect}/`,
    masks in `ground_truth/defect/<name>_mask.png`; returns `target`."""
    listing = walk_kolektor(Path(source), threshold)
    if listing.problems:
        raise DataError(str(listing.problems[0]))
    category_dir = Path(target) / SDD_CATEGORY
    for record in listing.records:
        name = f"{record.image.parent.name}_{record.image.stem}_{record.crop[1]}"
        out = category_dir / "test" / record.defect / f"{name}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        read_image(record.image, record.crop).save(out)
        if record.mask is not None:
            mask_out = category_dir / "ground_truth" / record.defect / f"{name}_mask.png"
            mask_out.parent.mkdir(parents=True, exist_ok=True)
            read_mask(record.mask, threshold, record.crop).save(mask_out)
    return Path(target)
