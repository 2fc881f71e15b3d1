"""`anomalyclip reproduce`: run the numbered notebooks of a profile with papermill into `reports/<profile>/`.

A profile is a small YAML mapping: shared `parameters` (must name the `backbone`) and a list of `notebooks`, each a
name from `notebooks/` with its own `parameters`. `smoke` and `paper` ship with the package; any other file works the
same. Parameters named like a configuration setting (`image_size`, `epochs`, `seed`, ...) are checked as the
configuration checks them. Each notebook gets the shared parameters, then its own, then `out_dir`, `data_root`,
`weights` and `device` from the command line; paths are made absolute. `data_root: auto` means
`$ANOMALYCLIP_SHARED/datasets` (or `../shared/datasets` beside a checkout) when it exists, else none.

The notebooks are the checkout's `notebooks/` or, after `pip install`, the copy inside the package; a run of some
notebooks adds to the folder's manifest and keeps what it says about the others still there.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.errors import AnomalyCLIPError, ConfigError
from anomalyclip.files import output_dir
from anomalyclip.locations import notebooks_dir as default_notebooks_dir
from anomalyclip.locations import shared_dir
from anomalyclip.settings import leaves, yaml_loader

log = logging.getLogger(__name__)

PROFILES = ("smoke", "paper")
"""Profiles shipped as package data in `anomalyclip/profiles/`."""
KERNEL_NAME = "python3"
PATH_PARAMETERS = ("out_dir", "data_root", "weights", "run_store")
AUTO = "auto"
FLAGS = {"data_root": "--data-root FOLDER", "weights": "--weights FILE"}
"""Parameters with their own command-line flag (the rest are given with --set NAME=VALUE)."""
REPORT_FOLDERS = ("notebooks", "tables", "figures")
CONFIG_PARAMETERS = {leaf.name: leaf for leaf in leaves(AnomalyCLIPConfig)}
"""Notebook parameters that are configuration settings, by name: profiles are checked against their definitions."""


class ReproduceError(AnomalyCLIPError):
    """A profile, notebook or path the reproduce job cannot use."""


class NotebookFailedError(ReproduceError):
    """A notebook raised while it ran; the executed copy with the traceback is at `output`."""

    def __init__(self, notebook: str, output: Path, message: str) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.output = output


@dataclass(frozen=True)
class NotebookSpec:
    """One notebook of a profile and the parameters it overrides."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    alone: bool = False
    """It times its own cells (as notebook 05 times an uncached epoch): no other notebook runs beside it."""


@dataclass(frozen=True)
class Profile:
    """Shared parameters and the notebooks to run, in order."""

    name: str
    parameters: dict[str, Any]
    notebooks: tuple[NotebookSpec, ...]
    description: str = ""
    source: str = ""
    required: tuple[str, ...] = ()
    """Parameters a notebook that declares them must receive a value for (no silent synthetic fallback)."""


@dataclass(frozen=True)
class PlannedRun:
    """A notebook as it will run: input, executed copy, and the parameters papermill injects."""

    name: str
    input: Path
    output: Path
    parameters: dict[str, Any]
    alone: bool = False


# ------------------------------------------------------------------------------------------------------- profiles


def _mapping(value: Any, what: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ReproduceError(f"{source}: {what} must be a mapping of names to values, got {value!r}")
    return dict(value)


def check_parameters(parameters: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`parameters`, after checking those named like a configuration setting by its definition (values are passed
    on as written: papermill writes lists, not tuples, into a notebook)."""
    for name, value in parameters.items():
        if name in CONFIG_PARAMETERS:
            try:
                CONFIG_PARAMETERS[name].check(value)
            except ConfigError as err:
                raise ReproduceError(f"{source}: parameter {name}: {err}") from err
    return dict(parameters)


def _notebook_spec(entry: Any, source: str) -> NotebookSpec:
    if isinstance(entry, str):
        return NotebookSpec(entry)
    keys = {"name", "parameters", "alone"}
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and set(entry) <= keys:
        parameters = _mapping(entry.get("parameters"), f"parameters of {entry['name']}", source)
        alone = entry.get("alone", False)
        if not isinstance(alone, bool):
            raise ReproduceError(f"{source}: {entry['name']}: alone must be true or false, got {alone!r}")
        return NotebookSpec(entry["name"], check_parameters(parameters, f"{source}: {entry['name']}"), alone)
    raise ReproduceError(f"{source}: each notebook must be a name or {{name: ..., parameters: {{...}}, alone: "
                         f"true|false}}, got {entry!r}")  # fmt: skip


def parse_profile(data: Any, name: str, source: str) -> Profile:
    """Validate a profile's YAML content: `parameters` with a `backbone`, and a non-empty list of `notebooks`."""
    if not isinstance(data, Mapping):
        raise ReproduceError(f"{source}: a profile must be a mapping with 'parameters' and 'notebooks'")
    unknown = sorted(set(data) - {"description", "parameters", "notebooks", "required"})
    if unknown:
        expected = "description, parameters, notebooks, required"
        raise ReproduceError(f"{source}: unknown key(s) {unknown}; expected {expected}")
    required = data.get("required") or []
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ReproduceError(f"{source}: 'required' must be a list of parameter names, got {required!r}")
    parameters = check_parameters(_mapping(data.get("parameters"), "parameters", source), source)
    if not isinstance(parameters.get("backbone"), str):
        raise ReproduceError(f"{source}: parameters must name the 'backbone' (e.g. tiny or ViT-L-14-336)")
    entries = data.get("notebooks")
    if not isinstance(entries, list) or not entries:
        raise ReproduceError(f"{source}: 'notebooks' must be a non-empty list")
    notebooks = tuple(_notebook_spec(entry, source) for entry in entries)
    names = [nb.name for nb in notebooks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ReproduceError(f"{source}: notebook(s) {repeated} listed more than once")
    return Profile(name, parameters, notebooks, str(data.get("description") or ""), source, tuple(required))


def load_profile(profile: str | os.PathLike) -> Profile:
    """A shipped profile by name (`smoke`, `paper`) or a YAML file; its name is the file's stem."""
    if str(profile) in PROFILES:
        resource = resources.files("anomalyclip") / "profiles" / f"{profile}.yaml"
        text, source, name = resource.read_text(), f"anomalyclip/profiles/{profile}.yaml", str(profile)
    else:
        path = Path(profile)
        if not path.is_file():
            raise ReproduceError(f"profile {profile!r} is neither one of {list(PROFILES)} nor a YAML file")
        text, source, name = path.read_text(), str(path), path.stem
    try:
        data = yaml.load(text, Loader=yaml_loader())  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ReproduceError(f"{source} is not valid YAML: {err}") from err
    return parse_profile(data, name, source)


def select_notebooks(profile: Profile, selection: Sequence[str] | None) -> tuple[NotebookSpec, ...]:
    """The notebooks named (or number-prefixed, e.g. `01`) in `selection`, in profile order; all when None."""
    if not selection:
        return profile.notebooks
    chosen = set()
    for token in selection:
        matches = [nb.name for nb in profile.notebooks if token in (nb.name, nb.name.split("_", 1)[0])]
        if len(matches) != 1:
            raise ReproduceError(
                f"--notebooks {token!r} matches {len(matches)} notebooks of profile {profile.name!r}; "
                f"expected one of {[nb.name for nb in profile.notebooks]} or their number prefix"
            )
        chosen.add(matches[0])
    return tuple(nb for nb in profile.notebooks if nb.name in chosen)


def shared_datasets_dir() -> Path | None:
    """The read-only dataset bundle ($ANOMALYCLIP_SHARED/datasets, or beside the checkout), if present."""
    shared = shared_dir()
    return shared / "datasets" if shared is not None and (shared / "datasets").is_dir() else None


def _resolve_paths(parameters: dict[str, Any]) -> dict[str, Any]:
    resolved = dict(parameters)
    if resolved.get("data_root") == AUTO:
        resolved["data_root"] = shared_datasets_dir()
    for key in PATH_PARAMETERS:
        if resolved.get(key) is not None:
            resolved[key] = str(Path(resolved[key]).expanduser().resolve())
    return resolved


def merged_parameters(
    profile: Profile,
    overrides: Mapping[str, Any],
    notebook: NotebookSpec | None = None,
    sets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile's shared parameters, then the notebook's own, then the given (not None) overrides, then `sets`
    (`--set NAME=VALUE`, null included); paths made absolute and `data_root: auto` resolved."""
    given = {k: v for k, v in overrides.items() if v is not None}
    notebook_own = notebook.parameters if notebook else {}
    return _resolve_paths({**profile.parameters, **notebook_own, **given, **dict(sets or {})})


def plan(
    profile: Profile,
    out_dir: str | os.PathLike,
    *,
    overrides: Mapping[str, Any] | None = None,
    notebooks: Sequence[str] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    sets: Mapping[str, Any] | None = None,
) -> list[PlannedRun]:
    """Each selected notebook's input, executed copy under `out_dir`/notebooks and injected parameters.

    A notebook receives only the parameters its `parameters` cell declares; a profile parameter that no selected
    notebook declares is an error (a misspelt name would otherwise be ignored).
    """
    notebooks_dir = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    selected = select_notebooks(profile, notebooks)
    declared = {nb.name: _declared_names(Path(notebooks_dir) / f"{nb.name}.ipynb") for nb in profile.notebooks}
    _check_declared(profile, declared)
    known = set().union(*(names for names in declared.values() if names is not None))
    undeclared = sorted(set(sets or {}) - known)
    if undeclared:
        raise ReproduceError(f"--set {undeclared}: no notebook of profile {profile.name} declares these parameters")
    runs = []
    for nb in selected:
        parameters = merged_parameters(profile, {**(overrides or {}), "out_dir": out_dir}, nb, sets)
        names = declared[nb.name]
        if names is not None:
            parameters = {k: v for k, v in parameters.items() if k in names}
            missing = [k for k in profile.required if k in names and parameters.get(k) is None]
            if missing:
                flags = ", ".join(FLAGS.get(k, f"--set {k}=...") for k in missing)
                raise ReproduceError(f"profile {profile.name}: notebook {nb.name} needs {missing} ({flags}); without "
                                     "them it would silently run on synthetic data")  # fmt: skip
        runs.append(PlannedRun(nb.name, notebooks_dir / f"{nb.name}.ipynb",
                               Path(out_dir) / "notebooks" / f"{nb.name}.ipynb", parameters, nb.alone))  # fmt: skip
    return runs


def _declared_names(notebook: Path) -> set[str] | None:
    """Names in the notebook's parameters cell, or None while the notebook does not exist."""
    if not notebook.is_file():
        return None
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def _check_declared(profile: Profile, declared: Mapping[str, set[str] | None]) -> None:
    """Each notebook's own parameters exist in it, and each shared one in at least one of the profile's notebooks."""
    known = {name: names for name, names in declared.items() if names is not None}
    for nb in profile.notebooks:
        unknown = sorted(set(nb.parameters) - known.get(nb.name, set(nb.parameters)))
        if unknown:
            raise ReproduceError(f"{profile.source}: {nb.name} has no parameter(s) {unknown} in its parameters cell")
    if known:
        unknown = sorted(set(profile.parameters) - set().union(*known.values()))
        if unknown:
            raise ReproduceError(
                f"{profile.source}: no notebook declares the parameter(s) {unknown}; expected names from their "
                "parameters cells"
            )


# --------------------------------------------------------------------------------------------------------- kernel


def _runs_this_python(name: str) -> bool:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec(name).argv[0]
    except NoSuchKernel:
        return False
    found = shutil.which(argv0)
    return found is not None and os.path.realpath(found) == os.path.realpath(sys.executable)


@contextlib.contextmanager
def python_kernel(name: str = KERNEL_NAME) -> Iterator[str]:
    """A Jupyter kernel `name` that runs this interpreter: the installed one when it does, else a temporary
    kernelspec for `sys.executable` put first on JUPYTER_PATH (restored afterwards)."""
    if _runs_this_python(name):
        yield name
        return
    from ipykernel.kernelspec import write_kernel_spec

    previous = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="anomalyclip-kernels-") as tmp:
        write_kernel_spec(Path(tmp) / "kernels" / name, overrides={"display_name": f"Python 3 ({sys.executable})"})
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp, *([previous] if previous else [])])
        try:
            yield name
        finally:
            if previous is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = previous


# ------------------------------------------------------------------------------------------------------------ run


@functools.cache
def _ipc_kernel_manager() -> type:
    """A kernel manager whose kernel talks over Unix sockets of its own: kernels that start at the same moment can
    neither collide on a TCP port nor cross messages on shared socket names (both seen with two at a time)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _ipc_transport(self) -> str:
            return "ipc"

        @default("ip")
        def _own_socket_prefix(self) -> str:
            return os.path.join(tempfile.gettempdir(), f"anomalyclip-kernel-{uuid.uuid4().hex[:12]}")

    return IPCKernelManager


def _execute(run: PlannedRun, kernel: str, cwd: Path) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    sockets = {"kernel_manager_class": _ipc_kernel_manager()} if os.name == "posix" else {}
    try:
        papermill.execute_notebook(
            str(run.input),
            str(run.output),
            parameters=run.parameters,
            kernel_name=kernel,
            progress_bar=False,
            # the kernel starts in `cwd`; papermill's own `cwd` would change this process's folder, which notebooks
            # run two at a time (in threads) would race on
            resources={"metadata": {"path": str(cwd)}},
            **sockets,
        )
    except PapermillExecutionError as err:
        raise NotebookFailedError(
            run.name,
            run.output,
            f"notebook {run.name} failed at In [{err.exec_count}] with {err.ename}: {err.evalue} "
            f"(the executed notebook with the traceback is {run.output})",
        ) from err


@dataclass(frozen=True)
class NotebookRun:
    """How one notebook's execution went: its wall time, when it finished, and its error if it failed."""

    wall_time_s: float
    finished: str
    error: NotebookFailedError | None = None


def run_notebooks(runs: Sequence[PlannedRun], kernel: str, cwd: Path, workers: int = 2) -> dict[str, NotebookRun]:
    """Execute `runs` in their order, `workers` at a time (their jobs are in the run store already, so they only
    read it); one marked `alone` runs with none beside it. After a failure no further notebook starts. Returns how
    each notebook that started went, by name."""
    outcomes: dict[str, NotebookRun] = {}

    def execute(run: PlannedRun) -> None:
        log.info("running %s -> %s", run.input, run.output)
        start, error = time.perf_counter(), None
        try:
            _execute(run, kernel, cwd)
        except NotebookFailedError as err:
            error = err
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        outcomes[run.name] = NotebookRun(time.perf_counter() - start, finished, error)
        if error is None:
            log.info("%s done in %.1f s", run.name, outcomes[run.name].wall_time_s)

    pending, running = list(runs), {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while pending or running:
            failed = any(outcome.error for outcome in outcomes.values())
            while pending and not failed and len(running) < workers:
                if running and (pending[0].alone or any(run.alone for run in running.values())):
                    break
                run = pending.pop(0)
                running[pool.submit(execute, run)] = run
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                future.result()
    return outcomes


def earlier_runs(out_dir: Path, profile: Profile) -> dict[str, dict[str, Any]]:
    """What `out_dir`'s manifest says about each of the profile's notebooks whose executed copy is still there:
    its `parameters`, `wall_time_s` and `run` (status, finish time, backbone, pretrained, device, honesty banner)."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    wall_times = manifest.get("notebooks_wall_time_s", {})
    parameters = manifest.get("parameters", {}).get("notebooks", {})
    runs = manifest.get("extra", {}).get("notebooks", {})
    kept = [nb.name for nb in profile.notebooks if (out_dir / "notebooks" / f"{nb.name}.ipynb").is_file()]
    return {
        name: {"parameters": parameters.get(name, {}), "wall_time_s": wall_times[name], "run": runs.get(name, {})}
        for name in kept
        if name in wall_times
    }


def reproduce(
    profile: str | os.PathLike | Profile = "smoke",
    out: str | os.PathLike = "reports",
    *,
    data_root: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    notebooks: Sequence[str] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    run_store: str | os.PathLike = "runs",
    allow_missing: bool = False,
    sets: Mapping[str, Any] | None = None,
    executor: str = "local",
    address: str | None = None,
    notebook_workers: int = 2,
) -> Path:
    """Run the jobs a profile's notebooks need into the run store, then the notebooks into `out`/<profile>/, then
    write the scorecard (`index.md`); return the manifest. Finished jobs are reused, so a second run (or one after
    a crash) computes only what is missing. A failing notebook stops the job (the manifest records it). The manifest
    keeps its entries for notebooks not run this time whose executed copies are still in the folder.

    `sets` overrides any declared notebook parameter (`--set NAME=VALUE`); `executor` (`local` or `ray`, with a Ray
    cluster's `address`) runs the jobs (`anomalyclip.experiments.executors.execute`); the notebooks then run
    `notebook_workers` at a time (`run_notebooks`)."""
    from anomalyclip.reports import honesty_banner, write_manifest

    if notebook_workers < 1:
        raise ReproduceError(f"--notebook-workers {notebook_workers}: expected at least 1")
    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    notebooks_dir = Path(notebooks_dir).resolve() if notebooks_dir is not None else default_notebooks_dir()
    out_dir = Path(out).resolve() / profile.name
    overrides = {"data_root": data_root, "weights": weights, "device": device, "run_store": run_store,
                 "allow_missing": allow_missing or None}  # fmt: skip
    for key, path in (("--data-root", data_root), ("--weights", weights)):
        if path is not None and not Path(path).exists():
            raise ReproduceError(f"{key} {path} does not exist")
    runs = plan(profile, out_dir, overrides=overrides, notebooks=notebooks, notebooks_dir=notebooks_dir, sets=sets)
    missing = [str(r.input) for r in runs if not r.input.is_file()]
    if missing:
        raise ReproduceError(f"notebook(s) not found: {missing}; pass the folder that holds them with --notebooks-dir")
    output_dir(out_dir)
    jobs = run_planned_jobs(runs, executor=executor, address=address)
    earlier = earlier_runs(out_dir, profile)
    for folder in REPORT_FOLDERS:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    shared = merged_parameters(profile, {**overrides, "out_dir": out_dir}, sets=sets)
    backbone, pretrained = shared["backbone"], shared.get("weights") or shared.get("pretrained")
    device_name = str(shared.get("device", "cpu"))
    with python_kernel() as kernel:
        outcomes = run_notebooks(runs, kernel, notebooks_dir, workers=notebook_workers)
    ran = [run for run in runs if run.name in outcomes]
    for run in ran:
        outcome = outcomes[run.name]
        earlier[run.name] = {
            "parameters": run.parameters,
            "wall_time_s": outcome.wall_time_s,
            "run": {
                "status": "failed" if outcome.error else "ok",
                "finished": outcome.finished,
                "backbone": backbone,
                "pretrained": pretrained,
                "device": device_name,
                "honesty_banner": honesty_banner(backbone, pretrained),
            },
        }
    failure = next((outcomes[run.name].error for run in ran if outcomes[run.name].error), None)
    recorded = {nb.name: earlier[nb.name] for nb in profile.notebooks if nb.name in earlier}
    manifest = write_manifest(
        out_dir,
        parameters={"shared": shared, "notebooks": {name: e["parameters"] for name, e in recorded.items()}},
        notebooks_wall_time={name: e["wall_time_s"] or 0.0 for name, e in recorded.items()},
        backbone=backbone,
        pretrained=pretrained,
        device=device_name,
        extra={
            "profile": profile.name,
            "profile_source": profile.source,
            "notebooks_dir": str(notebooks_dir),
            "ran": [run.name for run in ran],
            "notebook_workers": notebook_workers,
            "status": "failed" if failure else "ok",
            "failure": str(failure) if failure else None,
            "notebooks": {name: e["run"] for name, e in recorded.items()},
            **jobs,
        },
    )
    from anomalyclip.scorecard import write_scorecard

    write_scorecard(out_dir, json.loads(manifest.read_text()))
    if failure:
        raise failure
    return manifest


def run_planned_jobs(runs: Sequence[PlannedRun], executor: str = "local", address: str | None = None) -> dict[str, Any]:
    """Run the union of the jobs the planned notebooks need (`experiments.plans.PLANS`) into their run store; what
    the manifest and the scorecard say about them: protocol, precision, datasets, skipped datasets, jobs."""
    from anomalyclip.experiments import unique
    from anomalyclip.experiments.executors import execute
    from anomalyclip.experiments.plans import PLANS, Setup, datasets
    from anomalyclip.scorecard import job_summaries

    planned = [(run, Setup.from_mapping(run.parameters)) for run in runs if run.name in PLANS]
    if not planned:
        return {}
    setup = planned[0][1]
    found = datasets(setup)
    jobs = unique([job for run, setup_ in planned for job in PLANS[run.name](setup_)])
    store = setup.store()
    log.info("%d jobs, %d already in the run store %s", len(jobs), sum(store.get(j) is not None for j in jobs),
             store.root)  # fmt: skip
    results = execute(jobs, store, executor=executor, address=address, device=setup.device).results
    failures = [store.failure(j) for j in jobs if j.id not in results]
    return {
        "protocol": setup.protocol,
        "precision": setup.precision,
        "run_store": str(store.root),
        "datasets": list(found.sources),
        "skipped_datasets": found.skipped,
        "jobs": job_summaries([results[j.id] for j in jobs if j.id in results], [f for f in failures if f]),
    }


# ------------------------------------------------------------------------------------------------------------ CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """`anomalyclip reproduce [--profile smoke|paper|FILE.yaml] [--out reports] [--notebooks 01,03] [--dry-run] ...`."""
    parser = subparsers.add_parser(
        "reproduce",
        help="run the notebooks of a profile with papermill into reports/<profile>/",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", default="smoke", help="smoke (default), paper, or a profile YAML file")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="reports folder (default: reports)")
    parser.add_argument("--data-root", type=Path, help="folder with the datasets (injected as data_root)")
    parser.add_argument("--weights", type=Path, help="CLIP weights file, instead of the profile's pretrained tag")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: the profile's)")
    parser.add_argument("--notebooks", help="comma-separated notebook names or numbers, e.g. 01,03 (default: all)")
    parser.add_argument(
        "--notebooks-dir",
        type=Path,
        help="folder of the notebooks (default: the checkout's notebooks/, else the copy installed with the package)",
    )
    parser.add_argument("--run-store", type=Path, default=Path("runs"), help="folder of finished jobs (default runs)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="paper profile: run the datasets present, not stop at a missing one")  # fmt: skip
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter, e.g. --set epochs=1 (YAML value); repeatable")  # fmt: skip
    parser.add_argument("--executor", default="local",
                        help="local (default): one job after the other here; ray: each job a Ray task")  # fmt: skip
    parser.add_argument("--address", help="the Ray cluster for --executor ray: auto or HOST:PORT (default: a new one)")
    parser.add_argument("--notebook-workers", type=int, default=2, metavar="N",
                        help="notebooks executed at a time once the jobs are done (default 2; 1: one after the "
                             "other)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print what would run, with parameters, and stop")
    parser.set_defaults(func=_main)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`NAME=VALUE` pairs, each value read as YAML (`1`, `null`, `[a, b]`, `text`)."""
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ReproduceError(f"--set {item!r}: expected NAME=VALUE, e.g. --set epochs=1")
        try:
            parsed[name.strip()] = yaml.load(value, Loader=yaml_loader())
        except yaml.YAMLError as err:
            raise ReproduceError(f"--set {item!r}: the value is not valid YAML ({err})") from err
    return parsed


def _main(args: argparse.Namespace) -> int:
    selection = [t.strip() for t in args.notebooks.split(",") if t.strip()] if args.notebooks else None
    sets = parse_sets(args.sets)
    if args.dry_run:
        profile = load_profile(args.profile)
        overrides = {"data_root": args.data_root, "weights": args.weights, "device": args.device,
                     "run_store": args.run_store, "allow_missing": args.allow_missing or None}  # fmt: skip
        out_dir = args.out.resolve() / profile.name
        runs = plan(profile, out_dir, overrides=overrides, notebooks=selection, notebooks_dir=args.notebooks_dir,
                    sets=sets)  # fmt: skip
        for run in runs:
            status = "" if run.input.is_file() else "  (MISSING)"
            print(f"{run.name}: {run.input} -> {run.output}{status}")
            print(f"  parameters: {json.dumps(run.parameters, sort_keys=True)}")
        return 0
    manifest = reproduce(
        args.profile,
        args.out,
        data_root=args.data_root,
        weights=args.weights,
        device=args.device,
        notebooks=selection,
        notebooks_dir=args.notebooks_dir,
        run_store=args.run_store,
        allow_missing=args.allow_missing,
        sets=sets,
        executor=args.executor,
        address=args.address,
        notebook_workers=args.notebook_workers,
    )
    written = json.loads(manifest.read_text())
    for name, seconds in written["notebooks_wall_time_s"].items():
        print(f"{name:32s} {seconds:8.1f} s{'' if name in written['extra']['ran'] else '  (earlier run)'}")
    print(f"reports in {manifest.parent}, manifest {manifest}")
    return 0
