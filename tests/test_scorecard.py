"""The replication scorecard lists every artefact of the paper, with an honest status for each."""

from __future__ import annotations

import pandas as pd

from anomalyclip.paper import ARTEFACTS
from anomalyclip.reports import write_table
from anomalyclip.scorecard import write_scorecard


def manifest(**extra):
    base = {"profile": "smoke", "protocol": "smoke", "backbone": "tiny", "pretrained": None,
            "honesty_banner": "RANDOM WEIGHTS (tiny)",
            "notebooks_wall_time_s": {"06_evaluation_17_datasets": 1.0}}  # fmt: skip
    return base | extra


def rows(page: str) -> dict[str, str]:
    return {line.split("**")[1].rstrip(":"): line for line in page.splitlines() if line.startswith("| **")}


def test_scorecard_lists_exactly_the_papers_artefacts(tmp_path):
    page = write_scorecard(tmp_path, manifest()).read_text()
    assert list(rows(page)) == [a.key for a in ARTEFACTS]


def test_status_says_why_an_artefact_is_not_regenerated(tmp_path):
    write_table(pd.DataFrame({"a": [1.0]}), tmp_path / "tables", "06_table1_mean")
    found = rows(write_scorecard(tmp_path, manifest()).read_text())
    assert "regenerated on the smoke setting" in found["table1"] and "06_table1_mean.md" in found["table1"]
    assert "wrote none of its files" in found["table2"]
    assert "was not executed in this run" in found["fig3"]
    assert "outside this zero-shot replication" in found["full_shot"]


def test_paper_numbers_are_shown_only_for_a_comparable_run(tmp_path):
    comparison = pd.DataFrame({"dataset": ["VisA"], "method": ["AnomalyCLIP"], "metric": ["pixel_auroc"],
                               "paper": [95.5], "this run": [95.1], "difference": [-0.4]})  # fmt: skip
    write_table(comparison, tmp_path / "tables", "06_table1_paper_vs_run")
    real = manifest(protocol="paper", honesty_banner=None, backbone="ViT-L-14-336", pretrained="openai")
    page = write_scorecard(tmp_path, real).read_text()
    assert "| VisA | AnomalyCLIP | pixel_auroc | 95.5 | 95.1 | -0.4 |" in page
    smoke = write_scorecard(tmp_path, manifest()).read_text()
    assert "95.1" not in smoke and "RANDOM WEIGHTS" in smoke and "no number of it is set beside" in smoke
