"""The parts of benchmarks/run_gpu_benchmarks.sh that no GPU run has recorded yet, at tiny sizes on the CPU: they run
and print what the GPU run is read for (fp32 against bf16, the official-style loop against ours, the protocol)."""

from __future__ import annotations

import math
import re
import subprocess

import pytest
from support import REPO_ROOT

from anomalyclip.data.specs import DATASET_SPECS, PAPER_DATASETS

pytestmark = pytest.mark.slow


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch):
    """The benchmark scripts as modules (they import each other by file name)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import bench_engine
    import bench_protocol

    return bench_engine, bench_protocol


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the output:\n{text}"
    return float(found.group(1))


TINY = ["--device", "cpu", "--workers", "0"]


def test_fp32_against_bf16_prints_both_speeds_and_their_differences(benchmarks, capsys) -> None:
    benchmarks[0].main(["precision", *TINY, "--size", "56", "--images", "8", "--batch-size", "4"])
    out = capsys.readouterr().out
    for precision in ("fp32", "bf16"):
        assert re.search(rf"(?m)^{precision}  8 images in [\d.]+ s = [\d.]+ images/s$", out), out
    maps = number(r"largest \|difference\| of the anomaly maps ([\d.e+-]+)", out)
    scores = number(r"of the image scores ([\d.e+-]+)", out)
    assert 0 < maps <= 1 and 0 <= scores <= 1, "bf16 rounds (so maps differ), and probabilities differ by at most 1"


def test_official_style_loop_scores_as_ours_and_the_ratio_is_printed(benchmarks, capsys) -> None:
    benchmarks[0].main(["official", *TINY, "--size", "112", "--images", "8", "--batch-size", "4"])
    out = capsys.readouterr().out
    ratio = number(r"ours / official-style: ([\d.]+)x images/s", out)
    assert math.isfinite(ratio) and ratio > 0
    assert number(r"official-style loop .*: [\d.]+ s = ([\d.]+) images/s", out) > 0
    gap = number(r"largest difference of the per-category metrics, ours \(fp32\) - [^:]+: ([\d.e+-]+)", out)
    assert gap < 5e-4, "in fp32 ours must give the official numbers to well within the 0.1 % the tables print"


def test_protocol_runs_both_jobs_over_every_paper_dataset_at_its_scaled_size(benchmarks, capsys) -> None:
    scale = 0.01
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    benchmarks[1].main([*TINY, "--size", "56", "--backbone", "tiny", "--epochs", "1", "--scale", str(scale),
                        "--max-categories", "1", "--source-size", "64", "--pool", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert "paper profile, AnomalyCLIP, Tables 1-2: tiny (random weights) at 56 px, 1 epochs" in out
    jobs = re.findall(r"(?m)^job (\d)/2: trained on (\w+) .*: ([\d.]+) s$", out)
    assert sorted(train for _, train, _ in jobs) == ["mvtec", "visa"], out
    rows = re.findall(r"(?m)^  (\w+) +(\d+) images +[\d.]+ s +[\d.]+ images/s$", out)
    assert sorted(name for name, _ in rows) == sorted(PAPER_DATASETS), "every dataset of the paper is evaluated once"
    evaluated = dict(rows)
    for name in PAPER_DATASETS:
        normal, anomalous = next(iter(DATASET_SPECS[name].test_sizes().values()))
        expected = sum(max(1, round(n * scale)) for n in (normal, anomalous) if n)
        assert int(evaluated[name]) == expected, name
    total = number(r"total: 2 jobs in ([\d.]+) s", out)
    assert total == pytest.approx(sum(float(s) for _, _, s in jobs), abs=0.2)
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert after == before, "the stand-ins and the run store belong in a temporary folder, not in the repository"
