"""Which dataset and layout a folder is, and one loader for all (the datasets themselves are in `data.specs`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from anomalyclip.data.adapters.layouts import Layout
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD
from anomalyclip.data.records import MISSING_MASK, Listing, Problem, Record
from anomalyclip.data.specs import DATASET_SPECS, DatasetSpec
from anomalyclip.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")

DatasetInfo = DatasetSpec
"""The registry's entries are the dataset specifications themselves (`anomalyclip.data.specs`)."""

DATASETS: dict[str, DatasetSpec] = DATASET_SPECS
"""Every dataset by name: the paper's 17, `generic` (your own MVTec-like folder) and `meta_json`."""

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


def resolve(root: str | Path, dataset: str = "auto") -> tuple[DatasetSpec, Layout]:
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
) -> tuple[DatasetSpec, Layout, Listing]:
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
