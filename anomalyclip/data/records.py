"""One image of a dataset as a plain record, and the problems found while listing or checking them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

NORMAL = "good"

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Record:
    """An image, its mask (None if normal or image-level only), category, defect type, label and split.

    `crop` is a (left, top, right, bottom) box cut from both image and mask on reading (SDD thirds), or None.
    """

    image: Path
    mask: Path | None
    category: str
    defect: str
    label: int
    split: str
    crop: Box | None = None

    @property
    def name(self) -> str:
        """Short unique display name: the file path, plus the crop box if any."""
        return str(self.image) if self.crop is None else f"{self.image}[crop={','.join(map(str, self.crop))}]"


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset: what kind, which file, and a message saying what was expected."""

    kind: str
    path: Path
    message: str
    category: str | None = None
    record: Record | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


UNREADABLE = "unreadable image"
MASK_SIZE = "mask size mismatch"
MISSING_MASK = "missing mask"
EMPTY_CATEGORY = "empty category"
MISSING_FILE = "missing file"
ORPHAN_MASK = "mask without image"
UNLABELLED = "unlabelled image"


@dataclass
class Listing:
    """What an adapter found: records, structural problems, and notes on files deliberately left out."""

    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def count_records(records: Iterable[Record]) -> dict[tuple[str, str, int], list[int]]:
    """Counts per (category, split, label): [images, masks present]."""
    counts: dict[tuple[str, str, int], list[int]] = {}
    for r in records:
        row = counts.setdefault((r.category, r.split, r.label), [0, 0])
        row[0] += 1
        row[1] += r.mask is not None
    return dict(sorted(counts.items()))
