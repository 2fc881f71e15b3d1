"""How nbval compares the notebooks: the sanitizer, the tolerance of marked cells, and the outputs on record.

The committed outputs must reproduce on any machine (another CPU, another thread count) and still fail on a real
change of a result; see notebooks/conftest.py and notebooks/nbval_sanitize.cfg.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import get_sanitize_patterns

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"


def _load_tolerance():
    spec = importlib.util.spec_from_file_location("notebooks_nbval_tolerance", NOTEBOOKS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tolerance = _load_tolerance()


SANITIZER = NOTEBOOKS / "nbval_sanitize.cfg"


def sanitize(text: str) -> str:
    """What nbval does with every output before comparing: the file's regex/replace pairs, in order."""
    for pattern, replacement in get_sanitize_patterns(SANITIZER.read_text()):
        text = re.sub(pattern, replacement, text)
    return text


@pytest.mark.parametrize(
    ("fresh", "stored", "expected"),
    [
        ("local 3.957", "local 3.956", "local 3.956"),  # one unit in the last digit: the same
        ("local 3.955", "local 3.956", "local 3.956"),
        ("local 3.958", "local 3.956", "local 3.958"),  # two units: a real change
        ("AUROC 60.9", "AUROC 60.8", "AUROC 60.8"),
        ("AUROC 61.0", "AUROC 60.8", "AUROC 61.0"),
        ("loss -0.001", "loss 0.000", "loss 0.000"),
        ("loss 3.96", "loss 3.956", "loss 3.96"),  # printed at another precision: a change
        ("epochs 9", "epochs 8", "epochs 9"),  # integers stay exact
        ("global 3.957", "local 3.956", "global 3.957"),  # text stays exact
        ("1  0.909  5.754\n2  0.741  4.143", "1  0.909  5.754\n2  0.740  4.142", "1  0.909  5.754\n2  0.740  4.142"),
        ("1  0.909  5.754\n2  0.741  4.145", "1  0.909  5.754\n2  0.740  4.142", "1  0.909  5.754\n2  0.740  4.145"),
        ("1  0.909\n2  0.740\n3  0.811", "1  0.909\n2  0.740", "1  0.909\n2  0.740\n3  0.811"),  # one more epoch
    ],
)
def test_tolerance_is_one_unit_of_the_last_printed_digit(fresh: str, stored: str, expected: str) -> None:
    assert tolerance.align_numbers(fresh, stored) == expected


def test_tolerance_aligns_streams_and_every_text_mime_type_of_an_output() -> None:
    stored = [
        nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": "share 0.593\n"}),
        nbformat.from_dict({"output_type": "execute_result", "execution_count": 4, "metadata": {},
                            "data": {"text/plain": "mean 78.0", "text/html": "<td>78.0</td>"}}),
    ]  # fmt: skip
    fresh = copy.deepcopy(stored)
    fresh[0]["text"] = "share 0.594\n"
    fresh[1]["data"] = {"text/plain": "mean 78.1", "text/html": "<td>78.3</td>"}
    aligned = tolerance.align_outputs(fresh, stored)
    assert aligned[0]["text"] == "share 0.593\n"
    assert aligned[1]["data"] == {"text/plain": "mean 78.0", "text/html": "<td>78.3</td>"}
    assert fresh[1]["data"]["text/plain"] == "mean 78.1", "the fresh outputs themselves are left alone"


def test_tolerance_applies_to_marked_cells_only() -> None:
    assert tolerance.is_marked("# NBVAL_TOLERANCE\nper_epoch.round(3)")
    assert not tolerance.is_marked("per_epoch.round(3)")
    assert not tolerance.is_marked('print("NBVAL_TOLERANCE")')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("saved /home/alice/anomalyclip/reports/smoke/tables/a.csv", "saved <path>"),
        ("/tmp/pytest-of-root/pytest-3/x.png: no such file", "<path>: no such file"),
        (r"C:\Users\bob\runs\epoch_8.pt missing", "<path> missing"),
        ("/work/main/anomalyclip/studies.py:12: FutureWarning", "<path>:12: FutureWarning"),
        ("started 2026-11-27T20:10:33.243064+00:00, done", "started <date>, done"),
        ("run of 2024-03-01 at 12:30:05", "run of <date> at <time>"),
        ("<Figure at 0x7f3a2b1c4d50>", "<Figure at 0x<address>>"),
        ("16 CPUs, 2 threads, 8 cores", "<n> CPUs, <n> threads, <n> cores"),
        ("hostname=node-17.cluster.local", "hostname= <host>"),
    ],
)
def test_sanitizer_hides_what_depends_on_the_machine(text: str, expected: str) -> None:
    assert sanitize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "epoch  global  local  total\n1       0.909  5.754  6.663\n7       0.772  3.957  4.729",
        "train on ['disc', 'stripes'] (32 images), test on ['square', 'weave'] (32 images)",
        "tables in ../reports/smoke/tables, weights runs/visa/epoch_15.pt",
        "pixel/image AUROC from 91.1/91.5 to 84.3/65.6; epochs 8, image_size 224, lr 0.001",
        "V-V, blocks 6-24 (AnomalyCLIP)  78.0  44.6",
    ],
)
def test_sanitizer_leaves_results_visible(text: str) -> None:
    assert sanitize(text) == text


def test_pytest_passes_the_sanitizer_to_nbval(pytestconfig: pytest.Config) -> None:
    addopts = pytestconfig.getini("addopts")
    assert "--nbval-sanitize-with" in addopts, "pyproject's pytest addopts must name the notebooks' sanitizer"
    assert (REPO_ROOT / addopts[addopts.index("--nbval-sanitize-with") + 1]).resolve() == SANITIZER


def test_sanitizer_file_parses_into_every_rule() -> None:
    rules = get_sanitize_patterns(SANITIZER.read_text())
    assert len(rules) == SANITIZER.read_text().count("\nregex: "), "each 'regex:' line needs a 'replace:' line below it"
    for pattern, _ in rules:
        re.compile(pattern)


def _compared_texts(notebook: Path):
    """(cell number, text) of every output nbval compares in a committed notebook."""
    nb = nbformat.read(notebook, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code):
        if "NBVAL_IGNORE_OUTPUT" in cell.source:
            continue
        for output in cell.outputs:
            texts = [output.get("text")] + [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
            yield from ((number, text) for text in texts if isinstance(text, str))


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_recorded_outputs_follow_the_conventions(notebook: Path) -> None:
    """Nothing on record names the recording machine, and numbers are rounded where they are produced."""
    for number, text in _compared_texts(notebook):
        assert sanitize(text) == text, f"{notebook.name} cell {number} prints something machine-dependent: {text!r}"
        long = re.findall(r"\d+\.\d{4,}", text)
        assert not long, f"{notebook.name} cell {number} prints unrounded numbers {long[:3]}: round where produced"


@pytest.mark.slow
def test_nbval_passes_noise_and_fails_a_real_change(tmp_path: Path) -> None:
    """Notebook 05's loss table under nbval: noise under one unit of the last digit passes; 2.5 units or a wrong λ fail.

    The noise cells shift every unrounded loss by 0.9 unit; with the machine's own noise (about 0.03 unit) they stay
    under one unit of the recorded values, so they must pass on any machine.
    """
    nb = nbformat.read(NOTEBOOKS / "05_training.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    losses = code[3]
    assert tolerance.is_marked(losses.source) and "per_epoch" in losses.source, "cell 3 shows the mean epoch losses"

    def showing_losses(table: str, setup: str = "") -> nbformat.NotebookNode:
        """A copy of the loss cell printing `table` (after `setup`) in place of the per-epoch losses."""
        cell = copy.deepcopy(losses)
        cell.source = (f"# {tolerance.MARKER}\n{setup}"
                       "print(f\"trained on {base.train.name}: {len(history)} steps, \"\n"
                       "      f\"λ = {base.config['loss']['lambda_local']}\")\n"
                       f"print(({table}).round(3).to_string())")  # fmt: skip
        return cell

    checks = {
        "noise +0.9 unit": showing_losses("per_epoch + 0.0009"),
        "noise -0.9 unit": showing_losses("per_epoch - 0.0009"),
        "one loss +2.5 units": showing_losses("bumped", "bumped = per_epoch.copy()\nbumped.iloc[6, 1] += 0.0025\n"),
        "wrong lambda": showing_losses(
            "wrong_history.groupby('epoch')[['global', 'local', 'total']].mean()",
            "import dataclasses\n"
            "from anomalyclip.experiments.ablations import with_changes\n"
            "from anomalyclip.experiments.run import run_job\n"
            "wrong = dataclasses.replace(base, config=with_changes(base.config, {'loss.lambda_local': 3.6}))\n"
            "wrong_history = training_history(run_job(wrong, setup.store()))\n",
        ),
    }
    for number, cell in enumerate(checks.values()):
        cell.id = f"tolerance-check-{number}"
    nb.cells = code[:4] + list(checks.values())
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "05_tolerance.ipynb")
    (tmp_path / "notebooks" / "conftest.py").write_text((NOTEBOOKS / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         "--nbval-sanitize-with", str(SANITIZER), f"--junitxml={report}", "notebooks/05_tolerance.ipynb"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip

    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failure = case.find("failure")
        outcomes[case.get("name")] = "passed" if failure is None else failure.get("message", "failed")
    names = ["params", "setup", "jobs", "losses", *checks]
    assert len(outcomes) == len(names), run.stdout[-3000:]
    by_name = dict(zip(names, (outcomes[f"Cell {i}"] for i in range(len(names))), strict=True))
    for name in ["params", "setup", "jobs", "losses", "noise +0.9 unit", "noise -0.9 unit"]:
        assert by_name[name] == "passed", f"{name}: {by_name[name]}"
    for name in ["one loss +2.5 units", "wrong lambda"]:
        assert "Cell outputs differ" in by_name[name], f"{name} should fail the comparison, got: {by_name[name]}"
