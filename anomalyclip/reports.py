"""What every notebook writes into `reports/<profile>/`: tables (CSV, Markdown, LaTeX), figures (PNG, PDF), the paper
beside this run, and a manifest of the environment, all marked when the weights say nothing about quality.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from anomalyclip.errors import AnomalyCLIPError
from anomalyclip.locations import checkout_root
from anomalyclip.paper import DATASET_NAMES, METHODS, METRICS, paper_table

MANIFEST_PACKAGES = (
    "anomalyclip",
    "torch",
    "torchvision",
    "open_clip_torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
    "matplotlib",
    "seaborn",
    "pillow",
    "papermill",
    "nbformat",
    "ipykernel",
)
TINY_BACKBONE = "tiny"
"""`anomalyclip.backbone.TINY`, the built-in random CLIP (not imported: that would load open_clip for a table)."""
RANDOM_TAGS = ("none", "random")
"""`pretrained` values that leave an open_clip backbone with random weights (`anomalyclip.backbone.RANDOM_WEIGHTS`;
None means the name's default pretrained tag)."""
MISSING = "–"
"""How Markdown and LaTeX tables show a missing value, as the paper does."""
BANNER_ID = "honesty-banner"


class ReportError(AnomalyCLIPError, ValueError):
    """A table or run result that cannot be written or compared as asked."""


def honesty_banner(backbone: str, pretrained: str | None) -> str | None:
    """The warning a run with random weights puts on every table and figure; None for pretrained weights."""
    if backbone == TINY_BACKBONE:
        return f"RANDOM WEIGHTS ({TINY_BACKBONE}) - numbers say nothing about anomaly-detection quality"
    if pretrained is not None and str(pretrained).lower() in RANDOM_TAGS and not Path(backbone).is_file():
        return (
            f"RANDOM WEIGHTS ({backbone}, no pretrained weights) - numbers say nothing about anomaly-detection quality"
        )
    return None


# --------------------------------------------------------------------------------------------------------- tables


def _cell_text(value: Any, float_format: str | Callable[[float], str]) -> str:
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    if isinstance(value, float):
        return float_format(value) if callable(float_format) else format(value, float_format)
    return str(value)


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """Index as leading columns (unless it is the default 0..n-1) and MultiIndex columns joined with ' / '."""
    if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None:
        df = df.reset_index()
    columns = [" / ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c) for c in df.columns]
    return df.set_axis(columns, axis=1)


def to_markdown(df: pd.DataFrame, *, float_format: str | Callable[[float], str] = ".1f") -> str:
    """A Markdown pipe table (no `tabulate` needed): numbers right-aligned, NaN as '–'."""
    flat = _flat(df)
    numeric = [pd.api.types.is_numeric_dtype(flat[c]) for c in flat.columns]
    lines = [
        "| " + " | ".join(c.replace("|", "\\|") for c in flat.columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for row in flat.itertuples(index=False):
        lines.append("| " + " | ".join(_cell_text(v, float_format).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    MISSING: "--",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell or caption."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(
    df: pd.DataFrame, *, caption: str | None = None, float_format: str | Callable[[float], str] = ".1f"
) -> str:
    """A booktabs `table` environment (no jinja2 needed); the caption, if any, also opens the file as a comment."""
    flat = _flat(df)
    align = "".join("r" if pd.api.types.is_numeric_dtype(flat[c]) else "l" for c in flat.columns)
    lines = [f"% {caption}"] if caption else []
    lines += ["\\begin{table}[ht]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    lines += [f"\\begin{{tabular}}{{{align}}}", "\\toprule"]
    lines.append(" & ".join(latex_escape(c) for c in flat.columns) + " \\\\")
    lines.append("\\midrule")
    for row in flat.itertuples(index=False):
        lines.append(" & ".join(latex_escape(_cell_text(v, float_format)) for v in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    *,
    banner: str | None = None,
    float_format: str | Callable[[float], str] = ".1f",
) -> dict[str, Path]:
    """Write `name`.csv (full precision), `name`.md and `name`.tex (`float_format`), each opening with the banner."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"{name}.{suffix}" for suffix in ("csv", "md", "tex")}
    with paths["csv"].open("w", newline="") as f:
        if banner:
            f.write(f"# {banner}\n")
        _flat(df).to_csv(f, index=False)
    markdown = to_markdown(df, float_format=float_format)
    paths["md"].write_text(f"> **{banner}**\n\n{markdown}" if banner else markdown)
    paths["tex"].write_text(to_latex(df, caption=banner, float_format=float_format))
    return paths


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV written by `write_table`, without its banner line."""
    lines = Path(path).read_text().splitlines()
    skip = next((i for i, line in enumerate(lines) if not line.startswith("# ")), len(lines))
    return pd.read_csv(path, skiprows=skip)


def _run_long(run: pd.DataFrame) -> pd.DataFrame:
    """A run's results as (dataset, metric, value): long already, or one row per dataset and one column per metric."""
    if {"dataset", "metric", "value"} <= set(run.columns):
        return run[["dataset", "metric", "value"]]
    wide = run.set_index("dataset") if "dataset" in run.columns else run.rename_axis("dataset")
    metrics = [c for c in wide.columns if c in METRICS]
    if not metrics:
        raise ReportError(
            f"run results have columns {list(run.columns)}; expected long form (dataset, metric, value) or one "
            f"column per metric of {list(METRICS)} with datasets as index or a 'dataset' column"
        )
    return wide[metrics].reset_index().melt(id_vars="dataset", var_name="metric", value_name="value")


def compare_with_paper(
    run: pd.DataFrame, table: int = 1, *, method: str = "AnomalyCLIP", scale: float = 100.0
) -> pd.DataFrame:
    """The paper's `method` column of Table `table` beside this run, per dataset and metric, in percent.

    `run` is long (dataset, metric, value) or wide (datasets by metric); `scale` brings its values to percent (100
    for fractions as `anomalyclip.metrics` returns them). `this run` is NaN where the run has no value; run datasets
    the table lacks are left out. `difference` is this run minus the paper, in points.
    """
    if method not in METHODS:
        raise ReportError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    long = _run_long(run)
    duplicated = long.duplicated(["dataset", "metric"])
    if duplicated.any():
        pairs = sorted(set(map(tuple, long.loc[duplicated, ["dataset", "metric"]].to_numpy())))
        raise ReportError(f"run results hold more than one value for (dataset, metric) {pairs}")
    paper = paper_table(table)
    paper = paper.loc[paper.method == method, ["dataset", "domain", "metric", "value"]]
    ours = long.assign(value=pd.to_numeric(long["value"], errors="raise") * scale)
    merged = paper.merge(ours, on=["dataset", "metric"], how="left", suffixes=("_paper", "_run"))
    return pd.DataFrame(
        {
            "dataset": merged["dataset"],
            "domain": merged["domain"],
            "method": method,
            "metric": merged["metric"],
            "paper": merged["value_paper"],
            "this run": merged["value_run"],
            "difference": merged["value_run"] - merged["value_paper"],
        }
    )


def _ordered(known: Sequence[str], found: pd.Series) -> list[str]:
    """The values of `found`, those in `known` first in its order, then the rest as they come."""
    present = set(found)
    return [k for k in known if k in present] + [v for v in dict.fromkeys(found) if v not in known]


def format_paper_layout(
    df: pd.DataFrame, values: str | Sequence[str] = "value", *, decimals: int = 1, mean: bool = True
) -> pd.DataFrame:
    """Long results as the paper prints them: datasets (paper names, paper order) by metric, rounded, a Mean row.

    The mean is NaN for a column with a missing dataset, so every mean shown is over the same datasets; to compare
    on the datasets a run has, drop the others first (e.g. `compare.dropna(subset=["this run"])`).

    With a `method` column of several methods, columns are (method, metric); with several `values` (e.g. `paper`,
    `this run`, `difference` from `compare_with_paper`), each metric gets one column per value.
    """
    names = [values] if isinstance(values, str) else list(values)
    missing = {"dataset", "metric", *names} - set(df.columns)
    if missing:
        raise ReportError(f"results lack column(s) {sorted(missing)}; have {list(df.columns)}")
    metrics = _ordered(METRICS, df["metric"])
    if "method" in df.columns and df["method"].nunique() > 1:
        keys, order = ["method", "metric"], [(m, k) for m in _ordered(METHODS, df["method"]) for k in metrics]
    else:
        keys, order = ["metric"], [(k,) for k in metrics]
    wide = df.pivot(index="dataset", columns=[*keys], values=names)
    wide = wide.reorder_levels([*range(1, wide.columns.nlevels), 0], axis=1)
    columns = [(*c, v) for c in order for v in names if (*c, v) in wide.columns]
    wide = wide[columns]
    if len(names) == 1:
        wide = wide.droplevel(-1, axis=1)
    wide = wide.loc[_ordered(list(DATASET_NAMES), wide.index.to_series())].rename(index=DATASET_NAMES).astype(float)
    if mean:
        wide.loc["Mean"] = wide.mean(skipna=False)
    wide.index.name = "dataset"
    wide.columns.names = [None] * wide.columns.nlevels
    return wide.round(decimals)


# -------------------------------------------------------------------------------------------------------- figures


def save_figure(
    fig: Figure, out_dir: str | Path, name: str, *, banner: str | None = None, dpi: int = 150
) -> list[Path]:
    """Write `name`.png and `name`.pdf; the banner is drawn above the figure (once, however often it is saved)."""
    if banner and not any(t.get_gid() == BANNER_ID for t in fig.texts):
        fig.text(
            0.5,
            1.0,
            banner,
            gid=BANNER_ID,
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold",
            color="white",
            bbox={"facecolor": "firebrick", "edgecolor": "none", "boxstyle": "round,pad=0.3"},
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{suffix}" for suffix in ("png", "pdf")]
    for path in paths:
        # zlib's fastest level: PNGs of image grids save 1.6x faster for files ~20% larger
        options = {"pil_kwargs": {"compress_level": 1}} if path.suffix == ".png" else {}
        fig.savefig(path, dpi=dpi, bbox_inches="tight", **options)
    return paths


# ------------------------------------------------------------------------------------------------------- manifest


def package_versions(names: Sequence[str] = MANIFEST_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: str | Path | None = None) -> dict[str, Any]:
    """Commit and whether the work tree has changes, for the checkout holding this package; None for both when it
    is not in git or runs from an installed copy (whatever repository might enclose site-packages is not ours)."""
    repo = Path(repo) if repo is not None else checkout_root()
    if repo is None:
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def write_manifest(
    out_dir: str | Path,
    *,
    parameters: Mapping[str, Any],
    notebooks_wall_time: Mapping[str, float],
    backbone: str,
    pretrained: str | None,
    device: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `out_dir`/manifest.json: versions, git commit, platform, device, backbone, parameters, wall times."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": backbone,
        "pretrained": pretrained,
        "honesty_banner": honesty_banner(backbone, pretrained),
        "device": device,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_state(),
        "packages": package_versions(),
        "parameters": dict(parameters),
        "notebooks_wall_time_s": {k: round(float(v), 3) for k, v in notebooks_wall_time.items()},
        "total_wall_time_s": round(float(sum(notebooks_wall_time.values())), 3),
        "extra": dict(extra or {}),
    }
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return path
