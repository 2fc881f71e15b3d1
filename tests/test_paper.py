"""The paper's numbers as data: every cell of the facts document's tables is held, and nothing is invented."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from support import require_shared

from anomalyclip import paper
from anomalyclip.paper import (
    DATASET_NAMES,
    METHODS,
    PaperDataError,
    paper_ablations,
    paper_per_class,
    paper_results,
    paper_table,
    paper_value,
)

PAIR = re.compile(r"\(([\d.–]+), ([\d.–]+)\)")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
TABLE2_NAMES = {f"{name} ({tag})": key for key, name in DATASET_NAMES.items() for tag in ("img", "px")}


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end)]


@pytest.fixture(scope="module")
def facts() -> str:
    return require_shared("docs", "ANOMALYCLIP_FACTS.md").read_text()


def _table_cells(section: str, names: dict[str, str]) -> list[tuple[str, str | None, str, float | None, bool]]:
    """(dataset, level or None, method, value or None for '–', dagger) for every number in a facts table."""
    cells, level = [], None
    for line in section.splitlines():
        if line.startswith("| **Image-level"):
            level = "image"
        elif line.startswith("| **Pixel-level"):
            level = "pixel"
        if not line.startswith("| ") or not PAIR.search(line):
            continue
        row = [c.strip().strip("*") for c in line.strip("|").split("|")]
        pairs = [c for c in row if PAIR.search(c)]
        assert len(pairs) == len(METHODS), line
        for method, cell in zip(METHODS, pairs, strict=True):
            for index, text in enumerate(PAIR.search(cell).groups()):
                cells.append((names[row[0]], level, method, index, None if text == "–" else float(text), "†" in cell))
    return cells


def test_table1_holds_every_cell_of_the_facts_table(facts: str) -> None:
    section = _section(facts, "### 2.1 Table 1", "Baseline definitions")
    cells = _table_cells(section, {name: key for key, name in DATASET_NAMES.items()})
    assert len(cells) == 7 * 2 * 6 * 2
    table = paper_table(1)
    for dataset, level, method, index, value, dagger in cells:
        metric = paper.LEVEL_METRICS[level][index]
        row = table[(table.dataset == dataset) & (table.method == method) & (table.metric == metric)]
        assert len(row) == 1, (dataset, method, metric)
        held = row.value.iloc[0]
        assert math.isnan(held) if value is None else held == value, (dataset, method, metric, held, value)
        assert bool(row.copied_from_original.iloc[0]) == dagger, (dataset, method, metric)
    assert len(table) == len(cells)
    names = {name: key for key, name in DATASET_NAMES.items()}
    n_classes = {
        names[m.group(1)]: int(m.group(2)) for m in re.finditer(r"^\| ([\w -]+) \| (\d+) \|", section, flags=re.M)
    }
    assert n_classes == paper.TABLE1_N_CLASSES


def test_table2_holds_every_cell_of_the_facts_table(facts: str) -> None:
    cells = _table_cells(_section(facts, "### 2.2 Table 2", "Table 3 (medical"), TABLE2_NAMES)
    assert len(cells) == 10 * 6 * 2
    table = paper_table(2)
    for dataset, _, method, index, value, _ in cells:
        level = paper.TABLE2[dataset][0]
        metric = paper.LEVEL_METRICS[level][index]
        assert paper_value(dataset, metric, method) == value, (dataset, method, metric)
    assert len(table) == len(cells)
    assert not table.copied_from_original.any()


def test_per_class_logs_match_the_facts_lists(facts: str) -> None:
    section = _section(facts, "**Released per-class logs**", "### 2.2 Table 2")
    mvtec, visa = section.split("VisA:", 1)
    for dataset, text in (("mvtec", mvtec), ("visa", visa)):
        lines = re.findall(r"^- \**(\w+) ([\d.]+) / ([\d.]+) / ([\d.]+) / ([\d.]+)", text, flags=re.M)
        logged = {name: tuple(map(float, values)) for name, *values in lines}
        assert logged.pop("mean") == paper.PER_CLASS[dataset]["mean"]
        assert logged == paper.PER_CLASS[dataset]["classes"]


def test_ablation_numbers_all_appear_in_the_facts_text(facts: str) -> None:
    text = _section(facts, "### 2.2 Table 2", "## 3. What users report")
    published = {float(n) for n in NUMBER.findall(text)}
    values = paper_ablations().value
    assert set(values) <= published, sorted(set(values) - published)
    later = _section(facts, "## 4. Later", "## 5. Existing")
    assert set(paper.later_targets().value) <= {float(n) for n in NUMBER.findall(later)}


def test_long_form_columns_and_keys() -> None:
    results = paper_results()
    assert list(results.columns) == list(paper.TABLE_COLUMNS)
    assert set(results.dataset) == set(DATASET_NAMES)
    assert set(results.metric) <= set(paper.METRICS)
    assert set(results.domain) == {"industrial", "medical"}
    assert results.value.isna().sum() == 4  # CoOp on DTD-Synthetic, both levels
    assert results.source.str.len().gt(0).all()
    ablations = paper_ablations()
    assert ablations.source.str.len().gt(0).all()
    assert set(paper_ablations("backbone").setting) == {"ViT-B-16-plus", "ViT-L-14", "ViT-H-14"}


def test_paper_value_reads_cells_and_rejects_what_the_paper_lacks() -> None:
    assert paper_value("mvtec", "image_auroc") == 91.5
    assert paper_value("visa", "pixel_aupro", "VAND") == 86.8
    assert math.isnan(paper_value("dtd", "image_ap", "CoOp"))
    with pytest.raises(PaperDataError, match="no image_auroc for 'isic'"):
        paper_value("isic", "image_auroc")
    with pytest.raises(PaperDataError, match="unknown dataset 'MVTec AD'"):
        paper_value("MVTec AD", "image_auroc")
    with pytest.raises(PaperDataError, match="unknown method"):
        paper_value("mvtec", "image_auroc", "PatchCore")
    with pytest.raises(PaperDataError, match="unknown paper table 3"):
        paper_table(3)


def test_per_class_means_agree_with_the_logged_means() -> None:
    for dataset in paper.PER_CLASS:
        per_class = paper_per_class(dataset)
        with_mean = paper_per_class(dataset, include_mean=True)
        logged = with_mean[with_mean["class"] == "mean"].set_index("metric").value
        computed = per_class.groupby("metric").value.mean()
        pd.testing.assert_series_equal(computed.sort_index(), logged.sort_index(), atol=0.1, check_names=False)
        assert set(per_class.trained_on) == {"visa" if dataset == "mvtec" else "mvtec"}
    with pytest.raises(PaperDataError, match="per-class dataset 'btad'"):
        paper_per_class("btad")
