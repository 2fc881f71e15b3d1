"""Report helpers: honesty banners, tables in three formats, paper vs run, figures and the manifest."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from anomalyclip import reports
from anomalyclip.paper import paper_table
from anomalyclip.reports import (
    ReportError,
    compare_with_paper,
    format_paper_layout,
    honesty_banner,
    read_table,
    save_figure,
    write_manifest,
    write_table,
)

TINY_BANNER = "RANDOM WEIGHTS (tiny) - numbers say nothing about anomaly-detection quality"


def test_honesty_banner_marks_random_weights_only(tmp_path: Path) -> None:
    assert honesty_banner("tiny", None) == TINY_BANNER
    assert honesty_banner("tiny", "openai") == TINY_BANNER
    assert "RANDOM WEIGHTS (ViT-L-14-336" in honesty_banner("ViT-L-14-336", "none")
    assert honesty_banner("ViT-L-14-336", "openai") is None
    assert honesty_banner("ViT-L-14-336", None) is None, "no tag means the default pretrained one"
    assert honesty_banner("ViT-L-14-336", str(tmp_path / "ViT-L-14-336px.pt")) is None
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"")
    assert honesty_banner(str(weights), None) is None


@pytest.mark.slow
def test_tiny_name_is_the_backbone_modules() -> None:
    from anomalyclip.backbone import RANDOM_WEIGHTS, TINY

    assert reports.TINY_BACKBONE == TINY and reports.RANDOM_TAGS == RANDOM_WEIGHTS


def test_write_table_writes_csv_markdown_latex_with_banner(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {"dataset": ["mvtec", "a_b"], "image_auroc": [91.456, math.nan], "note": ["x|y", "50%"]}
    ).set_index("dataset")
    paths = write_table(df, tmp_path / "tables", "t", banner=TINY_BANNER)
    assert sorted(paths) == ["csv", "md", "tex"]
    csv, md, tex = (paths[k].read_text() for k in ("csv", "md", "tex"))
    assert csv.startswith(f"# {TINY_BANNER}\n") and "91.456" in csv
    assert md.startswith(f"> **{TINY_BANNER}**") and "| mvtec | 91.5 | x\\|y |" in md and "| a_b | – | 50% |" in md
    assert "|---|---:|---|" in md
    assert tex.startswith(f"% {TINY_BANNER}") and f"\\caption{{{TINY_BANNER}}}" in tex
    assert "a\\_b & -- & 50\\% \\\\" in tex and "\\begin{tabular}{lrl}" in tex
    back = read_table(paths["csv"])
    assert list(back.columns) == ["dataset", "image_auroc", "note"]
    assert back.image_auroc.iloc[0] == 91.456 and math.isnan(back.image_auroc.iloc[1])


def test_write_table_without_banner_and_custom_format(tmp_path: Path) -> None:
    paths = write_table(pd.DataFrame({"v": [0.12345]}), tmp_path, "plain", float_format=".3f")
    assert paths["md"].read_text().startswith("| v |") and "0.123" in paths["md"].read_text()
    assert not paths["tex"].read_text().startswith("%")
    assert read_table(paths["csv"]).v.iloc[0] == 0.12345


def test_compare_with_paper_puts_run_numbers_only_in_the_run_column() -> None:
    run = pd.DataFrame(
        {"dataset": ["mvtec", "visa", "synthetic"], "image_auroc": [0.9, 0.8, 0.5], "pixel_auroc": [0.91, np.nan, 0.3]}
    )
    out = compare_with_paper(run, 1)
    assert list(out.columns) == ["dataset", "domain", "method", "metric", "paper", "this run", "difference"]
    assert len(out) == 7 * 4 and "synthetic" not in set(out.dataset)
    cell = out.set_index(["dataset", "metric"])
    assert cell.loc[("mvtec", "image_auroc"), "paper"] == 91.5
    assert cell.loc[("mvtec", "image_auroc"), "this run"] == pytest.approx(90.0)
    assert cell.loc[("mvtec", "image_auroc"), "difference"] == pytest.approx(-1.5)
    assert math.isnan(cell.loc[("visa", "pixel_auroc"), "this run"])
    assert math.isnan(cell.loc[("mpdd", "image_ap"), "this run"])
    assert out["this run"].notna().sum() == 3


def test_compare_with_paper_long_input_table2_and_baselines() -> None:
    run = pd.DataFrame({"dataset": ["isic", "headct"], "metric": ["pixel_auroc", "image_auroc"], "value": [80, 70]})
    out = compare_with_paper(run, 2, method="CLIP", scale=1.0).set_index(["dataset", "metric"])
    assert out.loc[("isic", "pixel_auroc"), "paper"] == 33.1
    assert out.loc[("isic", "pixel_auroc"), "difference"] == pytest.approx(80 - 33.1)
    assert out.loc[("headct", "image_auroc"), "this run"] == 70
    with pytest.raises(ReportError, match="more than one value"):
        compare_with_paper(pd.concat([run, run]), 2)
    with pytest.raises(ReportError, match="expected long form"):
        compare_with_paper(pd.DataFrame({"dataset": ["mvtec"], "auc": [1.0]}))
    with pytest.raises(ReportError, match="unknown method"):
        compare_with_paper(run, 2, method="PatchCore")


def test_format_paper_layout_orders_rounds_and_adds_mean() -> None:
    table = paper_table(1)
    ours = format_paper_layout(table[table.method == "AnomalyCLIP"])
    assert list(ours.columns) == ["image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"]
    assert list(ours.index) == ["MVTec AD", "VisA", "MPDD", "BTAD", "SDD", "DAGM", "DTD-Synthetic", "Mean"]
    assert ours.loc["Mean", "image_auroc"] == pytest.approx(
        round((91.5 + 82.1 + 77 + 88.3 + 84.7 + 97.5 + 93.5) / 7, 1)
    )
    everyone = format_paper_layout(table)
    assert everyone.columns[0] == ("CLIP", "image_auroc") and everyone.columns[-1] == ("AnomalyCLIP", "pixel_aupro")
    assert math.isnan(everyone.loc["Mean", ("CoOp", "image_auroc")])  # '–' on DTD: no mean over fewer datasets
    compare = compare_with_paper(pd.DataFrame({"dataset": ["mvtec"], "image_auroc": [0.9]}), 1)
    layout = format_paper_layout(compare, ["paper", "this run", "difference"])
    assert layout.columns[:3].tolist() == [("image_auroc", v) for v in ("paper", "this run", "difference")]
    assert layout.loc["MVTec AD", ("image_auroc", "difference")] == -1.5
    with pytest.raises(ReportError, match="lack column"):
        format_paper_layout(compare)


def test_save_figure_writes_png_pdf_with_one_banner(tmp_path: Path) -> None:
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    paths = save_figure(fig, tmp_path / "figures", "curve", banner=TINY_BANNER)
    save_figure(fig, tmp_path / "figures", "curve", banner=TINY_BANNER)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")
    assert [t.get_text() for t in fig.texts] == [TINY_BANNER]
    plain = Figure()
    save_figure(plain, tmp_path, "plain")
    assert not plain.texts


def test_write_manifest_records_environment(tmp_path: Path) -> None:
    path = write_manifest(
        tmp_path,
        parameters={"backbone": "tiny", "out_dir": tmp_path},
        notebooks_wall_time={"01_a": 1.23456, "02_b": 2.0},
        backbone="tiny",
        pretrained=None,
        device="cpu",
        extra={"profile": "smoke"},
    )
    manifest = json.loads(path.read_text())
    assert path == tmp_path / "manifest.json"
    assert manifest["honesty_banner"] == TINY_BANNER and manifest["backbone"] == "tiny"
    assert manifest["python"] == sys.version.split()[0]
    assert manifest["packages"]["pandas"] == pd.__version__ and "open_clip_torch" in manifest["packages"]
    assert manifest["notebooks_wall_time_s"] == {"01_a": 1.235, "02_b": 2.0}
    assert manifest["total_wall_time_s"] == pytest.approx(3.235, abs=1e-3)
    assert manifest["parameters"]["out_dir"] == str(tmp_path)
    assert manifest["extra"] == {"profile": "smoke"}
    assert set(manifest["git"]) == {"commit", "dirty"}


def test_git_state_tolerates_a_folder_outside_git(tmp_path: Path) -> None:
    assert reports.git_state(tmp_path) == {"commit": None, "dirty": None}
    assert reports.package_versions(["surely-not-installed-package"]) == {"surely-not-installed-package": None}
