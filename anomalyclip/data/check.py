"""Check a dataset folder end to end: counts, masks, and every problem by file name, all in one run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anomalyclip.data.adapters.registry import list_dataset, select
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.data.records import MASK_SIZE, UNREADABLE, Problem, Record, count_records
from anomalyclip.errors import DataError


@dataclass
class CheckReport:
    """What `check_dataset` found: dataset and layout, all records, the problems and the records skipped."""

    root: Path
    dataset: str
    layout: str
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[Record]:
        """Records left out because of a problem with their own files (SDD thirds share theirs)."""
        bad = {p.path for p in self.problems if p.record is not None}
        return [r for r in self.records if r.image in bad or r.mask in bad]

    @property
    def ok(self) -> bool:
        return not self.problems


def file_problems(record: Record, mask_threshold: int = DEFAULT_MASK_THRESHOLD) -> list[Problem]:
    """Decode the image and mask in full (truncation shows here) and compare their sizes before any crop."""
    try:
        image = read_image(record.image)
    except DataError as err:
        return [Problem(UNREADABLE, record.image, str(err), record.category, record)]
    if record.mask is None:
        return []
    try:
        mask = read_mask(record.mask, mask_threshold)
    except DataError as err:
        return [Problem(UNREADABLE, record.mask, str(err), record.category, record)]
    if mask.size != image.size:
        message = (
            f"{record.mask}: mask is {mask.size[0]}x{mask.size[1]} but image {record.image} is "
            f"{image.size[0]}x{image.size[1]}; expected the same width x height"
        )
        return [Problem(MASK_SIZE, record.mask, message, record.category, record)]
    return []


def check_dataset(
    root: str | Path,
    dataset: str = "auto",
    split: str | None = None,
    categories: Sequence[str] | None = None,
    *,
    mask_threshold: int = DEFAULT_MASK_THRESHOLD,
) -> CheckReport:
    """Find every problem of `root` (listing problems, then each image and mask decoded in full); none stops it.

    Only a folder that is no dataset at all (unknown layout, unknown category or split) raises DataError.
    """
    root = Path(root)
    info, layout, listing = list_dataset(root, dataset, mask_threshold)
    records, problems = select(listing, split, categories, root)
    report = CheckReport(root, info.name, layout.name, records, problems=list(problems), notes=list(listing.notes))
    decoded = {(p.record.image, p.record.mask) for p in report.problems if p.record is not None}
    for record in records:
        key = (record.image, record.mask)
        if key in decoded:  # SDD thirds share one file pair: decode it once, and never after a listing problem
            continue
        decoded.add(key)
        report.problems += file_problems(record, mask_threshold)
    return report


def _capped(lines: list[str], limit: int | None, what: str) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more {what} (all of them with --show-all)"]


def format_report(report: CheckReport, limit: int | None = 20) -> str:
    """Counts per category x split x label with masks present/missing, then problems and skipped files.

    `limit` caps the lines printed per kind of problem, saying how many more there are; None prints all.
    """
    lines = [f"{report.root}: dataset {report.dataset}, layout {report.layout}, {len(report.records)} images"]
    lines.append(f"{'category':<28}{'split':<7}{'label':<10}{'images':>7}{'masks':>7}{'no mask':>9}")
    for (category, split, label), (n, masks) in count_records(report.records).items():
        name = "anomalous" if label else "normal"
        lines.append(f"{category:<28}{split:<7}{name:<10}{n:>7}{masks:>7}{n - masks:>9}")
    lines += [f"note: {note}" for note in report.notes]
    for kind in dict.fromkeys(p.kind for p in report.problems):
        lines += _capped([f"problem: {p}" for p in report.problems if p.kind == kind], limit, f"'{kind}' problems")
    skipped = report.skipped
    if skipped:
        lines.append(f"skipped {len(skipped)} images:")
        lines += _capped([f"  {r.name}" for r in skipped], limit, "skipped images")
    if report.ok:
        lines.append("OK")
    else:
        kinds = Counter(p.kind for p in report.problems)
        lines.append(f"{len(report.problems)} problems: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))
    return "\n".join(lines)
