"""nbval for these notebooks: cells marked `# NBVAL_TOLERANCE` compare their decimal numbers with a tolerance.

Trained results differ in their last bits between machines and thread counts (float sums in another order), so a
number printed at full precision can flip its last digit. In a marked cell, a decimal number of the fresh output
matches the stored one when the two differ by at most one unit in the last printed digit: unrounded values closer
than one unit always pass, values two units or more apart always fail. Integers and all other text stay exact.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
from nbval.plugin import IPyNbCell

MARKER = "NBVAL_TOLERANCE"
DECIMAL = re.compile(r"-?\d+\.\d+")


def within_last_digit(fresh: str, stored: str) -> bool:
    """True if two printed decimals have the same number of decimals and differ by at most one unit in the last."""
    decimals = len(stored.partition(".")[2])
    if len(fresh.partition(".")[2]) != decimals:
        return False
    return abs(round(float(fresh) * 10**decimals) - round(float(stored) * 10**decimals)) <= 1


def align_numbers(fresh: str, stored: str) -> str:
    """`fresh` with each decimal number that is within tolerance of the stored one written as the stored one.

    Only when the two texts are identical apart from their decimal numbers; otherwise `fresh` is returned as is, so
    nbval reports the difference in full.
    """
    if DECIMAL.split(fresh) != DECIMAL.split(stored):
        return fresh
    numbers = iter(DECIMAL.findall(stored))

    def pick(match: re.Match) -> str:
        reference = next(numbers)
        return reference if within_last_digit(match.group(), reference) else match.group()

    return DECIMAL.sub(pick, fresh)


def align_outputs(fresh: list, stored: list) -> list:
    """Copies of a cell's fresh outputs, each text aligned to the stored output at the same position.

    Outputs of another type or beyond the stored ones stay as they are: nbval reports them.
    """
    fresh = copy.deepcopy(fresh)
    for new, old in zip(fresh, stored, strict=False):
        if new.get("output_type") != old.get("output_type"):
            continue
        if "text" in new and isinstance(old.get("text"), str):
            new["text"] = align_numbers(new["text"], old["text"])
        for mime, value in new.get("data", {}).items():
            reference = old.get("data", {}).get(mime)
            if isinstance(value, str) and isinstance(reference, str):
                new["data"][mime] = align_numbers(value, reference)
    return fresh


def tolerant(compare: Callable[..., bool]) -> Callable[..., bool]:
    """nbval's comparison of one cell, run on the fresh outputs aligned to the stored ones."""

    def compare_outputs(fresh: list, stored: list, skip_compare: tuple | None = None) -> bool:
        return compare(align_outputs(fresh, stored), stored, skip_compare)

    return compare_outputs


def is_marked(source: str) -> bool:
    """True if a cell's source has the `# NBVAL_TOLERANCE` comment line."""
    return any(
        line.strip().lstrip("#").strip() == MARKER for line in source.splitlines() if line.strip().startswith("#")
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every marked notebook cell the tolerant comparison."""
    for item in items:
        if isinstance(item, IPyNbCell) and is_marked(item.cell.source):
            item.compare_outputs = tolerant(item.compare_outputs)
