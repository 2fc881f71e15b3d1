"""The 17 datasets of the paper plus a generic folder: which layouts each accepts, and one loader for all."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anomalyclip.data.adapters.layouts import (
    Layout,
    class_folders_layout,
    dagm_layout,
    headct_layout,
    meta_json_layout,
    mvtec_layout,
    paired_layout,
    visa_layout,
)
from anomalyclip.data.adapters.sdd import kolektor_layout
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.data.records import MISSING_MASK, Listing, Problem, Record
from anomalyclip.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")

# fmt: off
MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
    "tile", "toothbrush", "transistor", "wood", "zipper",
)
VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
    "pcb4", "pipe_fryum",
)
DTD_CATEGORIES = (
    "Woven_001", "Woven_127", "Woven_104", "Stratified_154", "Blotchy_099", "Woven_068", "Woven_125",
    "Marbled_078", "Perforated_037", "Mesh_114", "Fibrous_183", "Matted_069",
)
# fmt: on


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: paper name, whether it has pixel masks, its download layouts and prepared ones it accepts.

    `auto` looks at `native` layouts only, so a shared fallback (MVTec-like, meta.json) names no dataset.
    """

    name: str
    title: str
    domain: str
    pixel_level: bool
    native: tuple[Layout, ...]
    fallbacks: tuple[Layout, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def layouts(self) -> tuple[Layout, ...]:
        return self.native + self.fallbacks


def _info(name, title, domain, pixel_level, native, categories=(), fallbacks=()) -> DatasetInfo:
    """Every dataset also accepts the official meta.json; some accept an MVTec-like prepared copy."""
    return DatasetInfo(
        name, title, domain, pixel_level, tuple(native), (*fallbacks, meta_json_layout()), tuple(categories)
    )


_POLYP = ("colon", "polyp")
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        _info(
            "mvtec",
            "MVTec AD",
            "industrial",
            True,
            [mvtec_layout()],
            MVTEC_CATEGORIES,
        ),
        _info(
            "visa",
            "VisA",
            "industrial",
            True,
            [visa_layout()],
            VISA_CATEGORIES,
        ),
        _info(
            "mpdd",
            "MPDD",
            "industrial",
            True,
            [mvtec_layout()],
            ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"],
        ),
        _info("btad", "BTAD", "industrial", True, [mvtec_layout("ok")], ["01", "02", "03"]),
        _info(
            "sdd",
            "SDD (KolektorSDD, thirds)",
            "industrial",
            True,
            [kolektor_layout()],
            fallbacks=[mvtec_layout()],
        ),
        _info("dagm", "DAGM 2007", "industrial", True, [dagm_layout()], [f"Class{i}" for i in range(1, 11)]),
        _info(
            "dtd",
            "DTD-Synthetic",
            "industrial",
            True,
            [mvtec_layout()],
            DTD_CATEGORIES,
        ),
        _info("headct", "HeadCT", "medical", False, [headct_layout()], ["brain"], [mvtec_layout()]),
        _info(
            "brainmri",
            "BrainMRI",
            "medical",
            False,
            [class_folders_layout("no", ["yes"], "brain", "brain_tumor_dataset")],
            ["brain"],
            [class_folders_layout("no", ["yes"], "brain")],
        ),
        _info("br35h", "Br35H", "medical", False, [class_folders_layout("no", ["yes"], "brain")], ["brain"]),
        _info(
            "covid",
            "COVID-19 Radiography",
            "medical",
            False,
            [class_folders_layout("normal", ["covid"], "chest")],
        ),
        _info(
            "isic",
            "ISIC 2016 (skin lesions)",
            "medical",
            True,
            [
                paired_layout(
                    image_dir,
                    mask_dir,
                    "skin",
                    "lesion",
                    ("{stem}_Segmentation", "{stem}_segmentation"),
                    "<name>_segmentation.png",
                )
                for image_dir, mask_dir in (
                    ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
                    ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
                    ("images", "masks"),
                )
            ]
            + [paired_layout("test_images", "test_masks", "skin", "lesion")],
            ["skin"],
        ),
        _info(
            "clinicdb",
            "CVC-ClinicDB",
            "medical",
            True,
            [
                paired_layout(i, m, *_POLYP)
                for i, m in (
                    ("images", "masks"),
                    ("Original", "Ground Truth"),
                    ("TIF/Original", "TIF/Ground Truth"),
                    ("PNG/Original", "PNG/Ground Truth"),
                )
            ],
            ["colon"],
        ),
        _info(
            "colondb",
            "CVC-ColonDB",
            "medical",
            True,
            [paired_layout(".", ".", *_POLYP, ("p{stem}",), "p<name>.tiff")],
            ["colon"],
            [paired_layout("images", "masks", *_POLYP)],
        ),
        _info("kvasir", "Kvasir-SEG", "medical", True, [paired_layout("images", "masks", *_POLYP)], ["colon"]),
        _info(
            "endo",
            "EndoTect 2020 (Endo)",
            "medical",
            True,
            [paired_layout("images", "masks", *_POLYP)],
            ["colon"],
        ),
        _info(
            "tn3k",
            "TN3K (thyroid nodules)",
            "medical",
            True,
            [paired_layout("test-image", "test-mask", "thyroid", "nodule")],
            ["thyroid"],
        ),
        _info("generic", "your own MVTec-like folder", "any", True, [mvtec_layout()]),
        DatasetInfo("meta_json", "official meta.json", "any", False, (meta_json_layout(),)),
    )
}

AUTO_ORDER = (
    "visa",
    "dagm",
    "sdd",
    "headct",
    "brainmri",
    "covid",
    "br35h",
    "btad",
    "isic",
    "colondb",
    "tn3k",
    "kvasir",
    "generic",
    "meta_json",
)
"""Datasets `auto` tries, by native layouts only; datasets sharing a layout resolve to the first listed here
(MVTec AD, MPDD, DTD-Synthetic -> generic; CVC-ClinicDB, EndoTect -> kvasir); pass the name to be exact."""


def _layouts_tried(candidates: Sequence[tuple[str, Layout]]) -> str:
    return "; ".join(f"{name}: {layout.name} ({layout.expects})" for name, layout in candidates)


def resolve(root: str | Path, dataset: str = "auto") -> tuple[DatasetInfo, Layout]:
    """The dataset and layout of `root`, or a DataError naming every layout tried and what each expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected the root folder of a dataset")
    if dataset == "auto":
        candidates = [(n, layout) for n in AUTO_ORDER for layout in DATASETS[n].native]
    elif dataset in DATASETS:
        candidates = [(dataset, layout) for layout in DATASETS[dataset].layouts]
    else:
        raise DataError(f"unknown dataset {dataset!r}; expected one of: auto, {', '.join(DATASETS)}")
    for name, layout in candidates:
        if layout.detect(root):
            return DATASETS[name], layout
    raise DataError(f"{root}: unknown layout for dataset {dataset!r}; tried {_layouts_tried(candidates)}")


def list_dataset(
    root: str | Path, dataset: str = "auto", mask_threshold: int = DEFAULT_MASK_THRESHOLD
) -> tuple[DatasetInfo, Layout, Listing]:
    """Walk `root` with its layout: every record found and every structural problem, nothing dropped."""
    info, layout = resolve(root, dataset)
    listing = layout.walk(Path(root), mask_threshold)
    if info.pixel_level:
        listing.problems += [
            Problem(
                MISSING_MASK,
                r.image,
                f"{r.name}: anomalous image has no mask in pixel-level {info.title}",
                r.category,
                r,
            )
            for r in listing.records
            if r.label and r.mask is None
        ]
    return info, layout, listing


def select(
    listing: Listing, split: str | None, categories: Sequence[str] | None, root: Path
) -> tuple[list[Record], list[Problem]]:
    """Records and problems of one split and some categories (None: all); unknown names are errors."""
    if split is not None and split not in SPLITS:
        raise DataError(f"split {split!r}; expected one of {SPLITS} or None for all")
    found = sorted({r.category for r in listing.records} | {p.category for p in listing.problems if p.category})
    unknown = sorted(set(categories or ()) - set(found))
    if unknown:
        raise DataError(f"{root}: categories {unknown} not found; expected some of {found}")
    keep = set(categories) if categories else set(found)
    records = [r for r in listing.records if r.category in keep and (split is None or r.split == split)]
    problems = [
        p
        for p in listing.problems
        if (p.category is None or p.category in keep) and (p.record is None or split is None or p.record.split == split)
    ]
    return records, problems


def load_records(
    root: str | Path,
    dataset: str = "auto",
    split: str | None = "test",
    categories: Sequence[str] | None = None,
    *,
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
    skip_bad: bool = False,
) -> list[Record]:
    """Records of `root` for one split, checked for structural problems (fail fast, or log and skip).

    Images are not decoded here; `anomalyclip data check` (`anomalyclip.data.check`) does that.
    """
    root = Path(root)
    info, _, listing = list_dataset(root, dataset, mask_threshold)
    records, problems = select(listing, split, categories, root)
    for note in listing.notes:
        log.info("%s: %s", info.name, note)
    if problems and not skip_bad:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0].message}{more}; run 'anomalyclip data check {root} --dataset {info.name}'")
    bad = {p.record for p in problems if p.record is not None}
    for problem in problems:
        log.warning("skip_bad: %s", problem)
    records = [r for r in records if r not in bad]
    if not records:
        raise DataError(f"{root}: no usable {split or 'any'}-split images for {info.title}; expected at least one")
    return records
