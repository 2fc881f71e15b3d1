"""The reproduce job: profiles, parameter injection, papermill runs of tiny notebooks, failures and the kernel."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from anomalyclip import reproduce as rp
from anomalyclip.reproduce import NotebookFailedError, ReproduceError, load_profile, parse_profile

NOTEBOOKS = tuple(sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")))
"""The numbered notebooks of the checkout: every shipped profile runs all of them, in order."""
RECORD = """
import json, os, pathlib
folder = pathlib.Path(out_dir) / "tables"
(folder / f"{name}.json").write_text(json.dumps({
    "out_dir": out_dir, "device": device, "data_root": data_root, "weights": weights, "backbone": backbone,
    "greeting": greeting, "cwd": os.getcwd(),
}))
"""


def _notebook(path: Path, body: str) -> None:
    parameters = new_code_cell(
        'out_dir = None\ndevice = "cpu"\ngreeting = "default"\ndata_root = None\nweights = None\nbackbone = None\n'
        "pretrained = None",
        metadata={"tags": ["parameters"]},
    )
    nb = new_notebook(cells=[parameters, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    rp.register(parser.add_subparsers())
    args = parser.parse_args(["reproduce", *argv])
    return args.func(args)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _notebook(notebooks / "01_first.ipynb", f"name = '01_first'\n{RECORD}")
    _notebook(notebooks / "02_second.ipynb", f"name = '02_second'\n{RECORD}")
    _notebook(notebooks / "03_broken.ipynb", "raise ValueError('boom in the third')")
    profile = {
        "parameters": {"backbone": "tiny", "pretrained": None, "weights": None, "data_root": None, "device": "cpu"},
        "notebooks": [{"name": "01_first", "parameters": {"greeting": "hello"}}, "02_second", "03_broken"],
    }
    (tmp_path / "mine.yaml").write_text(json.dumps(profile))
    return tmp_path


def test_shipped_profiles_list_every_notebook() -> None:
    for name, backbone in (("smoke", "tiny"), ("paper", "ViT-L-14-336")):
        profile = load_profile(name)
        assert profile.name == name and profile.parameters["backbone"] == backbone
        assert tuple(nb.name for nb in profile.notebooks) == NOTEBOOKS
        assert {"device", "weights", "protocol"} <= set(profile.parameters)


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_shipped_profiles_match_the_notebooks(name: str, tmp_path: Path) -> None:
    """Every parameter a shipped profile sets is declared by a notebook; each notebook gets only its own."""
    import papermill

    overrides = {"data_root": tmp_path, "device": "cpu"}
    for run in rp.plan(load_profile(name), tmp_path, overrides=overrides):
        declared = set(papermill.inspect_notebook(str(run.input)))
        assert set(run.parameters) <= declared, run.name
        assert run.parameters["data_root"] == str(tmp_path.resolve()), run.name
        assert run.parameters["protocol"] == name, run.name


def test_a_parameter_no_notebook_declares_is_an_error(workspace: Path) -> None:
    profile = parse_profile(
        {"parameters": {"backbone": "tiny", "gretting": 1}, "notebooks": ["01_first"]}, "p", "p.yaml"
    )
    with pytest.raises(ReproduceError, match=r"no notebook declares the parameter\(s\) \['gretting'\]"):
        rp.plan(profile, workspace / "out", notebooks_dir=workspace / "notebooks")


def test_profile_validation_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ReproduceError, match="must name the 'backbone'"):
        parse_profile({"notebooks": ["01"]}, "x", "x.yaml")
    with pytest.raises(ReproduceError, match="non-empty list"):
        parse_profile({"parameters": {"backbone": "tiny"}, "notebooks": []}, "x", "x.yaml")
    with pytest.raises(ReproduceError, match=r"x.yaml: unknown key\(s\) \['notebook'\]"):
        parse_profile({"parameters": {"backbone": "tiny"}, "notebook": []}, "x", "x.yaml")
    with pytest.raises(ReproduceError, match="listed more than once"):
        parse_profile({"parameters": {"backbone": "tiny"}, "notebooks": ["a", {"name": "a"}]}, "x", "x.yaml")
    with pytest.raises(ReproduceError, match="each notebook must be"):
        parse_profile({"parameters": {"backbone": "tiny"}, "notebooks": [{"nom": "a"}]}, "x", "x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("notebooks: [unclosed")
    with pytest.raises(ReproduceError, match="bad.yaml is not valid YAML"):
        load_profile(bad)
    with pytest.raises(ReproduceError, match="neither one of"):
        load_profile(tmp_path / "absent.yaml")


def test_plan_merges_parameters_and_selects_by_number(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = load_profile(workspace / "mine.yaml")
    monkeypatch.chdir(workspace)
    runs = rp.plan(
        profile,
        workspace / "out",
        overrides={"device": "cuda:1", "weights": "w.pt", "data_root": None, "undeclared": 1},
        notebooks=["02", "01_first"],
        notebooks_dir=workspace / "notebooks",
    )
    assert [r.name for r in runs] == ["01_first", "02_second"]
    first = runs[0].parameters
    assert first["greeting"] == "hello" and first["device"] == "cuda:1" and first["data_root"] is None
    assert first["weights"] == str(workspace / "w.pt") and first["out_dir"] == str(workspace / "out")
    assert "greeting" not in runs[1].parameters
    assert "undeclared" not in first, "a command-line value goes only to notebooks that declare it"
    with pytest.raises(ReproduceError, match="'04' matches 0 notebooks"):
        rp.select_notebooks(profile, ["04"])


def test_data_root_auto_finds_the_shared_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = parse_profile({"parameters": {"backbone": "tiny", "data_root": "auto"}, "notebooks": ["a"]}, "p", "p")
    monkeypatch.setenv("ANOMALYCLIP_SHARED", str(tmp_path))
    assert rp.merged_parameters(profile, {})["data_root"] is None
    (tmp_path / "datasets").mkdir()
    assert rp.merged_parameters(profile, {})["data_root"] == str(tmp_path / "datasets")
    assert rp.merged_parameters(profile, {"data_root": tmp_path})["data_root"] == str(tmp_path)


@pytest.mark.slow
def test_reproduce_runs_notebooks_with_papermill_and_writes_manifest(workspace: Path) -> None:
    data = workspace / "data"
    data.mkdir()
    code = _cli(
        "--profile",
        str(workspace / "mine.yaml"),
        "--out",
        str(workspace / "reports"),
        "--notebooks",
        "01,02",
        "--notebooks-dir",
        str(workspace / "notebooks"),
        "--data-root",
        str(data),
        "--device",
        "cpu:0",
    )
    assert code == 0
    out = workspace / "reports" / "mine"
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == ["01_first.ipynb", "02_second.ipynb"]
    assert (out / "figures").is_dir()
    seen = json.loads((out / "tables" / "01_first.json").read_text())
    assert seen == {
        "out_dir": str(out),
        "device": "cpu:0",
        "data_root": str(data),
        "weights": None,
        "backbone": "tiny",
        "greeting": "hello",
        "cwd": str(workspace / "notebooks"),
    }
    assert json.loads((out / "tables" / "02_second.json").read_text())["greeting"] == "default"
    executed = nbformat.read(out / "notebooks" / "01_first.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["notebooks_wall_time_s"]) == ["01_first", "02_second"]
    assert manifest["honesty_banner"].startswith("RANDOM WEIGHTS (tiny)") and manifest["device"] == "cpu:0"
    assert manifest["extra"]["status"] == "ok" and manifest["extra"]["profile"] == "mine"
    assert manifest["parameters"]["notebooks"]["01_first"]["greeting"] == "hello"


def test_a_failing_notebook_stops_the_job_with_its_error(workspace: Path) -> None:
    with pytest.raises(
        NotebookFailedError, match=r"notebook 03_broken failed at In \[3\] with ValueError: boom in the third"
    ) as err:
        rp.reproduce(
            workspace / "mine.yaml", workspace / "reports", notebooks=["03"], notebooks_dir=workspace / "notebooks"
        )
    assert err.value.output == workspace / "reports" / "mine" / "notebooks" / "03_broken.ipynb"
    assert err.value.output.is_file()
    manifest = json.loads((workspace / "reports" / "mine" / "manifest.json").read_text())
    assert manifest["extra"]["status"] == "failed" and "boom" in manifest["extra"]["failure"]


def test_missing_notebooks_and_paths_fail_before_running(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ReproduceError, match="notebook\\(s\\) not found: .*01_clip_misalignment.ipynb"):
        rp.reproduce("smoke", workspace / "reports", notebooks_dir=workspace / "nowhere")
    with pytest.raises(ReproduceError, match="--weights .*absent.pt does not exist"):
        rp.reproduce("smoke", workspace / "reports", weights=workspace / "absent.pt")
    assert not (workspace / "reports").exists()
    assert _cli("--dry-run", "--notebooks", "06", "--out", str(workspace / "r")) == 0
    printed = capsys.readouterr().out
    assert "06_evaluation_17_datasets" in printed and '"backbone": "tiny"' in printed
    assert not (workspace / "r").exists()


def test_python_kernel_falls_back_when_python3_runs_another_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    foreign = tmp_path / "kernels" / "python3"
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "other",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == "/nonexistent/python"
    with rp.python_kernel() as name:
        assert name == "python3"
        assert KernelSpecManager().get_kernel_spec(name).argv[0] == sys.executable
    assert os.environ["JUPYTER_PATH"] == str(tmp_path)
    with rp.python_kernel() as name:
        assert rp._runs_this_python(name)  # the temporary spec is one the next check accepts as is


def test_a_subset_run_adds_to_the_manifest_without_forgetting_earlier_outputs(workspace: Path) -> None:
    reports, out = workspace / "reports", workspace / "reports" / "mine"
    options = {"notebooks_dir": workspace / "notebooks"}
    rp.reproduce(workspace / "mine.yaml", reports, notebooks=["01", "02"], **options)
    first = json.loads((out / "manifest.json").read_text())
    rp.reproduce(workspace / "mine.yaml", reports, notebooks=["02"], device="cpu:0", **options)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["notebooks_wall_time_s"]) == ["01_first", "02_second"] and manifest["extra"]["ran"] == [
        "02_second"
    ]
    runs = manifest["extra"]["notebooks"]
    assert runs["01_first"] == first["extra"]["notebooks"]["01_first"] and runs["01_first"]["device"] == "cpu"
    assert runs["02_second"]["device"] == "cpu:0" and runs["02_second"]["status"] == "ok"
    assert manifest["parameters"]["notebooks"]["01_first"]["greeting"] == "hello"
    assert manifest["notebooks_wall_time_s"]["01_first"] == first["notebooks_wall_time_s"]["01_first"]
    assert manifest["total_wall_time_s"] == pytest.approx(sum(manifest["notebooks_wall_time_s"].values()), abs=0.01)
    (out / "notebooks" / "01_first.ipynb").unlink()
    rp.reproduce(workspace / "mine.yaml", reports, notebooks=["02"], **options)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["extra"]["notebooks"]) == ["02_second"], "an output no longer in the folder is not described"


@pytest.mark.slow
def test_reproduce_runs_from_an_installed_package(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources, install it alone and plan the shipped profile from elsewhere."""
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in ("anomalyclip", "notebooks"):
        shutil.copytree(repo / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(repo / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("anomalyclip-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    code = (
        "import anomalyclip, json; from anomalyclip import locations, reports; from anomalyclip.cli import main; "
        "print(json.dumps([anomalyclip.__file__, str(locations.checkout_root()), reports.git_state()])); "
        "main(['reproduce', '--dry-run', '--out', 'elsewhere'])"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("ANOMALYCLIP_SHARED", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    first, *plan_lines = done.stdout.splitlines()
    module, checkout, git = json.loads(first)
    assert module.startswith(str(site)) and checkout == "None" and git == {"commit": None, "dirty": None}
    inputs = [line.split(": ", 1)[1].split(" -> ")[0] for line in plan_lines if not line.startswith(" ")]
    assert len(inputs) == len(NOTEBOOKS) and all(p.startswith(str(site / "anomalyclip" / "notebooks")) for p in inputs)
    assert "MISSING" not in done.stdout and str(tmp_path / "elsewhere" / "smoke" / "notebooks") in done.stdout


def _planned(name: str, alone: bool = False) -> rp.PlannedRun:
    return rp.PlannedRun(name, Path(f"{name}.ipynb"), Path(f"out/{name}.ipynb"), {}, alone)


def test_notebooks_run_two_at_a_time_and_one_marked_alone_runs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    lock, running, seen = threading.Lock(), set(), {}

    def fake_execute(run: rp.PlannedRun, kernel: str, cwd: Path) -> None:
        with lock:
            running.add(run.name)
        time.sleep(0.1)
        with lock:
            seen[run.name] = set(running)  # halfway: who runs beside it
        time.sleep(0.1)
        with lock:
            running.discard(run.name)

    monkeypatch.setattr(rp, "_execute", fake_execute)
    runs = [_planned("01"), _planned("02"), _planned("03", alone=True), _planned("04"), _planned("05")]
    outcomes = rp.run_notebooks(runs, "python3", Path("."), workers=2)
    assert set(outcomes) == {r.name for r in runs}
    assert all(o.error is None and o.wall_time_s >= 0.2 for o in outcomes.values())
    assert seen["03"] == {"03"}  # alone
    assert seen["01"] == {"01", "02"} and seen["04"] == {"04", "05"}  # two at a time around it
    assert all(len(others) <= 2 for others in seen.values())


def test_after_a_failing_notebook_no_further_notebook_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    started = []

    def fake_execute(run: rp.PlannedRun, kernel: str, cwd: Path) -> None:
        started.append(run.name)
        if run.name == "01":
            raise NotebookFailedError(run.name, run.output, "notebook 01 failed")

    monkeypatch.setattr(rp, "_execute", fake_execute)
    outcomes = rp.run_notebooks([_planned("01"), _planned("02", alone=True), _planned("03")], "python3", Path("."))
    assert started == ["01"] and list(outcomes) == ["01"]
    assert str(outcomes["01"].error) == "notebook 01 failed"
    with pytest.raises(ReproduceError, match="--notebook-workers 0: expected at least 1"):
        rp.reproduce("smoke", "reports", notebook_workers=0)


def test_notebooks_started_at_once_each_talk_to_their_own_kernel_in_the_folder_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"0{i}_at_once" for i in range(1, 4)]
    for name in names:
        body = f"import os, pathlib\npathlib.Path('{name}.pid').write_text(str(os.getpid()))"
        _notebook(tmp_path / f"{name}.ipynb", body)
    runs = [rp.PlannedRun(n, tmp_path / f"{n}.ipynb", tmp_path / "out" / f"{n}.ipynb", {}) for n in names]
    (tmp_path / "out").mkdir()

    here = os.getcwd()

    def no_chdir(path: str) -> None:  # papermill returns to the folder it found, which must stay this one
        if os.path.realpath(path) != os.path.realpath(here):
            raise AssertionError(f"this process changed folder to {path}: notebooks in threads would race on it")

    with rp.python_kernel() as kernel:
        monkeypatch.setattr(os, "chdir", no_chdir)
        outcomes = rp.run_notebooks(runs, kernel, tmp_path, workers=3)
        monkeypatch.undo()
    assert {name: outcomes[name].error for name in names} == dict.fromkeys(names)
    assert len({(tmp_path / f"{name}.pid").read_text() for name in names}) == 3
