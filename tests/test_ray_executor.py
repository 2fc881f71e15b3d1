"""Executors: Ray gives the local executor's results job for job, reruns a job whose worker is killed, reports a job
that fails on its input while the others complete; training features are shared safely between concurrent jobs."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from anomalyclip.backbone import load_backbone
from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data import AnomalyDataset
from anomalyclip.engine import FeatureCache
from anomalyclip.errors import ConfigError
from anomalyclip.experiments import DataSource, Job, JobResult, RunStore
from anomalyclip.experiments.executors import execute, executor_options, register_executor_args
from anomalyclip.experiments.protocol import SMOKE, SMOKE_SOURCE, SMOKE_TARGET, smoke_sources, table_jobs
from anomalyclip.experiments.run import _feature_cache_folder
from anomalyclip.model import AnomalyCLIP

SIZE = 112
CONFIG = AnomalyCLIPConfig(backbone="tiny", pretrained=None, vision=VisionConfig(image_size=SIZE),
                           train=TrainConfig(epochs=1, batch_size=8)).to_dict()  # fmt: skip
TIMINGS = ("seconds", "images_per_second", "timings")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return smoke_sources(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="module")
def plan(sources) -> list[Job]:
    """CLIP on both domains and AnomalyCLIP trained each way: three independent jobs."""
    return table_jobs(SMOKE, sources, ["clip", "anomalyclip"], lambda method, train: CONFIG)


@pytest.fixture(scope="module")
def local(plan, tmp_path_factory) -> dict[str, JobResult]:
    """The reference: the plan run by the local executor, with one torch thread like each Ray task here (on two busy
    cores more threads only wait on each other; the numbers do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = execute(plan, RunStore(tmp_path_factory.mktemp("local")), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert report.ok and report.executed == [job.id for job in plan]
    return report.results


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for the module; its workers inherit this environment (PYTHONPATH, offline)."""
    ray = pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install -e '.[dev]' (or '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def numbers(result: JobResult) -> dict:
    """A job's result.json without the timings, and the per-image scores of each target."""
    data = {k: v for k, v in result.data.items() if k not in TIMINGS}
    data["targets"] = {name: {k: v for k, v in target.items() if k not in TIMINGS}
                       for name, target in data["targets"].items()}  # fmt: skip
    scores = {name: (result.folder / target["folder"] / "scores.csv").read_text()
              for name, target in result.data["targets"].items()}  # fmt: skip
    return {"result": data, "scores": scores}


@pytest.mark.slow
def test_ray_gives_the_local_executors_results_job_for_job(cluster, plan, local, tmp_path):
    store = RunStore(tmp_path / "runs")
    report = execute(plan, store, executor="ray", progress=False)
    assert report.ok and sorted(report.executed) == sorted(job.id for job in plan)
    assert sorted(store.executions()) == sorted(job.id for job in plan)
    for job in plan:
        assert numbers(report.results[job.id]) == numbers(local[job.id]), job.method
    trained = [report.results[job.id] for job in plan if job.train is not None]
    assert all(result.checkpoint.is_file() for result in trained)
    caches = sorted(p.name for p in store.feature_cache.iterdir() if p.is_dir())
    assert len(caches) == 2 and not any(name.startswith(".") for name in caches), caches
    assert store.in_progress() == set()
    again = execute(plan, store, executor="ray", progress=False)
    assert again.ok and again.executed == [] and len(store.executions()) == len(plan)


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_is_run_again(cluster, plan, local, tmp_path):
    victim = next(job for job in plan if job.method == "anomalyclip")
    other = next(job for job in plan if job.method == "clip")
    store = RunStore(tmp_path / "runs")
    outcome: dict = {}
    driver = threading.Thread(target=lambda: outcome.update(report=execute([victim, other], store, executor="ray",
                                                                           progress=False, max_retries=2)))  # fmt: skip
    driver.start()
    deadline = time.monotonic() + 120
    while victim.id not in store.in_progress():
        assert driver.is_alive() and time.monotonic() < deadline, "the victim never started"
        time.sleep(0.02)
    assert store.get(victim) is None
    os.kill(_worker_running(f"job-{victim.id}"), signal.SIGKILL)
    driver.join(timeout=180)
    report = outcome["report"]
    assert report.ok, report.failures
    assert numbers(report.results[victim.id]) == numbers(local[victim.id])
    assert numbers(report.results[other.id]) == numbers(local[other.id])
    assert sorted(store.executions()) == sorted([victim.id, other.id])
    assert store.in_progress() == {victim.id}, "the killed attempt's workspace stays in tmp/, never in jobs/"


def _worker_running(task_name: str) -> int:
    """The pid of the Ray worker whose process title names the task it runs (`ray::<task name>`)."""
    for _ in range(100):
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (proc / "cmdline").read_bytes().startswith(f"ray::{task_name}".encode()):
                    return int(proc.name)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no worker process is running {task_name}")


@pytest.mark.slow
def test_a_job_failing_on_its_input_is_reported_and_the_others_complete(cluster, sources, tmp_path):
    store = RunStore(tmp_path / "runs")
    bad = Job("clip", CONFIG, (DataSource("missing", "generic", str(tmp_path / "nowhere")),))
    good = [Job("clip", CONFIG, (sources[name],)) for name in (SMOKE_SOURCE, SMOKE_TARGET)]
    report = execute([bad, *good], store, executor="ray", progress=False)
    assert set(report.results) == {job.id for job in good} and set(report.failures) == {bad.id}
    assert report.failures[bad.id].startswith("DataError") and "nowhere" in report.failures[bad.id]
    assert "nowhere" in store.failure(bad)["error"] and not report.ok
    assert sorted(store.executions()) == sorted(job.id for job in good)


def test_concurrent_builders_of_one_feature_cache_make_one_backbone_pass(sources, tmp_path):
    model = AnomalyCLIP(load_backbone("tiny"), AnomalyCLIPConfig.from_dict(CONFIG))
    dataset = AnomalyDataset(sources[SMOKE_SOURCE].records()[:12], SIZE)
    passes = []
    encode = model.encode_image
    model.encode_image = lambda images: passes.append(len(images)) or encode(images)
    built = []

    def build():
        cache = FeatureCache.build(model, dataset, directory=tmp_path / "cache", num_workers=0, progress=False)
        built.append(cache)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 3 and sum(passes) == len(dataset), passes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no staging folder is left"


def test_jobs_differing_only_in_what_they_learn_share_their_training_features(sources, tmp_path):
    train = sources[SMOKE_SOURCE]
    anomalyclip = Job("anomalyclip", CONFIG, (sources[SMOKE_TARGET],), train)
    coop = Job("coop", dict(CONFIG, prompt=dict(CONFIG["prompt"], n_ctx=4)), (sources[SMOKE_TARGET],), train)
    other_size = Job("anomalyclip", dict(CONFIG, vision=dict(CONFIG["vision"], image_size=224)), anomalyclip.targets,
                     train)  # fmt: skip
    other_source = Job("anomalyclip", CONFIG, (train,), sources[SMOKE_TARGET])
    folder = _feature_cache_folder(anomalyclip, tmp_path, "cpu")
    assert _feature_cache_folder(coop, tmp_path, "cpu") == folder
    assert folder not in {_feature_cache_folder(job, tmp_path, "cpu") for job in (other_size, other_source)}
    assert _feature_cache_folder(anomalyclip, tmp_path, "cuda") != folder


def test_executor_flags_and_their_errors(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    register_executor_args(parser)
    assert executor_options(parser.parse_args([])) == {"executor": "local", "address": None}
    options = executor_options(parser.parse_args(["--executor", "ray", "--address", "10.0.0.1:6379"]))
    assert options == {"executor": "ray", "address": "10.0.0.1:6379"}
    store = RunStore(tmp_path)
    with pytest.raises(ConfigError, match="needs --executor ray"):
        execute([], store, address="auto")
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        execute([], store, executor="dask")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'anomalyclip\[ray\]'"):
        execute([], store, executor="ray")


@pytest.mark.slow
def test_the_executors_import_without_ray():
    code = "import sys; sys.modules['ray'] = None; import anomalyclip.experiments.executors"
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ | {"PYTHONPATH": root})
