"""The replication scorecard, `reports/<profile>/index.md`: the page a reader opens first.

It lists every artefact of the paper (`anomalyclip.paper.ARTEFACTS`) with its status in this run (regenerated, partly,
not run and why), links to its tables, figures and notebook, the paper's numbers beside this run's where the protocol
is the same, and what the run was: weights, datasets, precision, commit and the time each job took.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from anomalyclip.paper import ARTEFACTS, Artefact
from anomalyclip.reports import read_table, to_markdown

COMPARISON_SUFFIX = "_paper_vs_run"
"""A table named `<prefix>_paper_vs_run` holds (…, paper, this run, difference) rows for the scorecard."""


def artefact_files(report: Path, artefact: Artefact) -> list[Path]:
    """The table and figure files of `artefact` in a report folder, sorted."""
    found: list[Path] = []
    for kind in ("tables", "figures"):
        for prefix in artefact.outputs:
            found += (report / kind).glob(f"{prefix}*")
    return sorted(set(found))


def artefact_status(artefact: Artefact, files: list[Path], executed: Iterable[str], comparable: bool) -> str:
    """`regenerated`, `partly` or `not run`, with the reason."""
    if artefact.notebook is None:
        return f"not run: {artefact.why_not}"
    if artefact.notebook not in set(executed):
        return f"not run: notebook {artefact.notebook} was not executed in this run"
    if not files:
        return f"not run: notebook {artefact.notebook} wrote none of its files ({', '.join(artefact.outputs)})"
    if not comparable:
        return "regenerated on the smoke setting (random weights or stand-in data: not comparable with the paper)"
    comparison = [f for f in files if f.stem.endswith(COMPARISON_SUFFIX) and f.suffix == ".csv"]
    if artefact.numbers and comparison:
        rows = pd.concat([read_table(f) for f in comparison])
        if rows["this run"].isna().any():
            return "partly: some of the paper's cells have no value in this run (missing datasets or methods)"
    return "regenerated"


def write_scorecard(
    report: str | Path,
    manifest: Mapping[str, Any],
    *,
    jobs: Iterable[Mapping[str, Any]] = (),
    artefacts: tuple[Artefact, ...] = ARTEFACTS,
) -> Path:
    """Write `report`/index.md from the report's files, its manifest and the run store's job summaries."""
    report = Path(report)
    manifest = {**manifest, **manifest.get("extra", {})}
    jobs = list(jobs) or manifest.get("jobs", [])
    executed = list(manifest.get("notebooks_wall_time_s", {}))
    banner = manifest.get("honesty_banner")
    comparable = banner is None and manifest.get("protocol") == "paper"
    lines = [f"# Replication scorecard: {manifest.get('profile', report.name)}", ""]
    if banner:
        lines += [f"> **{banner}**", ""]
    git = manifest.get("git") or {}
    commit = (git.get("commit") or "not a git checkout") + (" (uncommitted changes)" if git.get("dirty") else "")
    lines += [
        "| | |",
        "|---|---|",
        f"| protocol | {manifest.get('protocol', 'unknown')} |",
        f"| weights | {manifest.get('backbone')} ({manifest.get('pretrained') or 'no pretrained tag'}) |",
        f"| precision | {manifest.get('precision', 'fp32')} |",
        f"| datasets | {', '.join(manifest.get('datasets', [])) or 'synthetic only'} |",
        f"| skipped datasets | {_skipped(manifest.get('skipped_datasets'))} |",
        f"| commit | {commit} |",
        f"| created | {manifest.get('created')} |",
        "",
        "## Artefacts",
        "",
        "| artefact | paper | status | notebook | files |",
        "|---|---|---|---|---|",
    ]
    details = []
    for artefact in artefacts:
        files = artefact_files(report, artefact)
        status = artefact_status(artefact, files, executed, comparable)
        notebook = f"[{artefact.notebook}](notebooks/{artefact.notebook}.ipynb)" if artefact.notebook else "–"
        links = ", ".join(f"[{f.name}]({f.relative_to(report)})" for f in files if f.suffix in (".md", ".png"))
        lines.append(f"| **{artefact.key}**: {artefact.title} | {artefact.where} | {status} | {notebook} | "
                     f"{links or '–'} |")  # fmt: skip
        details += _numbers(artefact, files, comparable)
    lines += ["", "## The paper's numbers beside this run's", ""]
    lines += details or ["No artefact of this run follows the paper's protocol with pretrained weights, so no number "
                         "of it is set beside the paper's (they would not measure the same thing).", ""]  # fmt: skip
    lines += ["## Jobs", "", *_job_table(jobs), ""]
    path = report / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _skipped(skipped: Mapping[str, str] | list | None) -> str:
    if not skipped:
        return "none"
    if isinstance(skipped, Mapping):
        return "; ".join(f"{name} ({why})" for name, why in skipped.items())
    return ", ".join(skipped)


def _numbers(artefact: Artefact, files: list[Path], comparable: bool) -> list[str]:
    if not comparable or not artefact.numbers:
        return []
    out = []
    for table in (f for f in files if f.stem.endswith(COMPARISON_SUFFIX) and f.suffix == ".csv"):
        frame = read_table(table).dropna(subset=["this run"])
        if not frame.empty:
            out += [f"### {artefact.key} ({table.stem})", "", to_markdown(frame), ""]
    return out


def _job_table(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    rows = [
        {"job": j["id"], "method": j["method"], "for": j.get("for") or "–", "trained on": j.get("train") or "–",
         "evaluated on": ", ".join(j.get("targets", [])), "status": j.get("status", "ok"),
         "train s": j.get("train_seconds"), "evaluate s": j.get("evaluate_seconds")}
        for j in jobs
    ]  # fmt: skip
    if not rows:
        return ["No jobs were run through the run store."]
    return [to_markdown(pd.DataFrame(rows), float_format=".1f")]


def job_summaries(results: Iterable[Any], failures: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Rows for the scorecard's job table from run-store results (`JobResult`) and failure records."""
    rows = []
    for result in results:
        rows.append({
            "id": result.job.id, "method": result.job.method, "for": _purpose(result.job.tags),
            "train": None if result.job.train is None else result.job.train.name,
            "targets": list(result.data["targets"]), "status": "ok",
            "train_seconds": result.data["timings"].get("train_seconds"),
            "evaluate_seconds": sum(t["seconds"] for t in result.data["targets"].values()),
        })  # fmt: skip
    for failure in failures:
        job = failure["job"]
        train = None if job.get("train") is None else job["train"]["name"]
        targets = [t["name"] for t in job["targets"]]
        rows.append({"id": failure["id"], "method": job["method"], "for": _purpose(job.get("tags", {})),
                     "train": train, "targets": targets,
                     "status": f"failed: {failure['error']}"})  # fmt: skip
    return rows


def _purpose(tags: Mapping[str, Any]) -> str:
    """What a job was first planned for: `table main`, `ablation dpam: Q-Q`, ..."""
    if "ablation" in tags:
        return f"ablation {tags['ablation']}: {tags.get('variant', '')}"
    return f"table {tags['table']}" if "table" in tags else ""


def read_manifest(report: str | Path) -> dict[str, Any]:
    path = Path(report) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}
