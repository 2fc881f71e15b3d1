"""Executors: where the pending jobs of a plan run. `local` computes them one after the other in this process; `ray`
runs each as a Ray task (one GPU, or `cpus_per_job` CPUs) on a machine's cores and GPUs or on a cluster's nodes.

Both write the same run store through `run_job`, so a plan can be started with one executor and resumed with the
other. Tasks get paths (data roots, backbone weights, the store), never the data: every node must see those paths.
A job whose worker dies leaves nothing half-written and is run again by Ray, up to `max_retries` times (then it is
reported as failed); a job that fails on its input fails once, is recorded in the store's `failed/` and reported, and
the other jobs go on; any other error (a bug) stops the plan, as it does locally.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from anomalyclip.errors import AnomalyCLIPError, ConfigError
from anomalyclip.experiments.jobs import Job, code_version, unique
from anomalyclip.experiments.run import run_job, run_jobs
from anomalyclip.experiments.store import JobResult, RunStore

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


@dataclass
class ExecutionReport:
    """What running a plan gave: every result, the jobs that failed and why, and which jobs this run computed."""

    executor: str
    results: dict[str, JobResult] = field(default_factory=dict)
    """Job id -> its result (computed now or reused from the store)."""
    failures: dict[str, str] = field(default_factory=dict)
    """Job id -> `ErrorType: message` of a job without a result."""
    executed: list[str] = field(default_factory=list)
    """Ids of the jobs computed by this run, in the order they finished."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def execute(
    jobs: Sequence[Job],
    store: RunStore,
    *,
    executor: str = "local",
    address: str | None = None,
    device: str | torch.device = "cpu",
    num_workers: int | None = 0,
    cpus_per_job: int = 1,
    max_retries: int = 3,
    feature_cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> ExecutionReport:
    """Run the jobs of `jobs` that the store has not finished, with `executor` (`local` or `ray`).

    `device` is `cpu`, `cuda` or `auto` (a GPU if there is one: here for `local`, in the cluster for `ray`). With
    `ray`, `address` is the cluster (`auto`: the one `ray start` runs here; `HOST:PORT`; None: a Ray instance started
    for this call on this machine); each task gets one GPU or `cpus_per_job` CPUs and as many torch threads.
    `feature_cache` is where training features are cached (default: the store's `feature_cache/`; on a cluster whose
    store is on network storage, a node-local folder such as `/tmp/anomalyclip-features` keeps epochs off the network).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; expected one of {list(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise ConfigError(f"--address {address} names a Ray cluster; it needs --executor ray")
    if cpus_per_job < 1 or max_retries < 0:
        raise ConfigError(f"cpus_per_job {cpus_per_job} and max_retries {max_retries}: expected >= 1 and >= 0")
    plan = unique(jobs)
    done = {job.id: result for job in plan if (result := store.get(job)) is not None}
    report = ExecutionReport(executor, results=dict(done))
    start = time.perf_counter()
    with _Progress(len(plan), len(done), progress) as bar:
        if executor == "local":
            _run_local(plan, store, report, bar, device, num_workers, feature_cache, progress)
        else:
            _run_ray([job for job in plan if job.id not in done], store, report, bar, address=address, device=device,
                     num_workers=num_workers, cpus_per_job=cpus_per_job, max_retries=max_retries,
                     feature_cache=feature_cache)  # fmt: skip
    report.seconds = time.perf_counter() - start
    return report


def register_executor_args(parser: argparse.ArgumentParser) -> None:
    """Add `--executor` and `--address` to a command that runs jobs (`executor_options` reads them back)."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one job after the other in this process (default); ray: each job as a Ray "
                             "task on this machine's cores and GPUs or on a cluster (anomalyclip[ray])")  # fmt: skip
    parser.add_argument("--address", default=None,
                        help="the Ray cluster for --executor ray: auto (the one `ray start` runs here) or HOST:PORT; "
                             "default: a Ray instance started for this run on this machine")  # fmt: skip


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `execute` set by `register_executor_args`'s flags."""
    return {"executor": args.executor, "address": args.address}


class _Progress:
    """One bar over the jobs of a plan: finished (done or failed) of all, with the running and failed counts."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.counts = {"failed": 0}
        self.bar = tqdm(total=total, initial=done, desc="jobs", unit="job", disable=not enabled)
        self.redirect = logging_redirect_tqdm()

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.redirect.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.bar.close()
        if self.enabled:
            self.redirect.__exit__(*exc_info)

    def running(self, count: int) -> None:
        self.counts["running"] = count
        self.bar.set_postfix(self.counts)

    def finished(self, failed: bool) -> str:
        """Count one more finished job; returns its place (`3/8`) for the log line."""
        self.counts["failed"] += failed
        self.bar.update(1)
        self.bar.set_postfix(self.counts)
        return f"{self.bar.n}/{self.total}"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _run_local(plan, store, report, bar, device, num_workers, feature_cache, progress) -> None:
    def on_done(job: Job, result: JobResult | None, error: BaseException | None) -> None:
        if job.id in report.results:
            return
        if error is None:
            report.results[job.id] = result  # type: ignore[assignment]
            report.executed.append(job.id)
        else:
            report.failures[job.id] = _describe(error)
        bar.finished(failed=error is not None)  # run_jobs writes the log lines

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    run_jobs(plan, store, device=device, num_workers=num_workers, progress=progress, on_done=on_done,
             feature_cache=feature_cache)  # fmt: skip


def _run_ray(pending, store, report, bar, *, address, device, num_workers, cpus_per_job, max_retries, feature_cache):
    ray = _import_ray()
    if not pending:
        return
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address)
        except ConnectionError as err:
            raise ConfigError(f"--address {address}: {err} Start one with `ray start --head`, or leave --address out "
                              "to start Ray on this machine") from None  # fmt: skip
    try:
        gpu = _wants_gpu(device, ray.cluster_resources())
        task = ray.remote(_ray_task)
        needs = {"num_cpus": cpus_per_job, "num_gpus": int(gpu), "max_retries": max_retries, "retry_exceptions": False}
        root = os.path.abspath(store.root)
        cache = None if feature_cache is None else os.path.abspath(feature_cache)
        resources = ray.cluster_resources()
        log.info("ray: %d jobs on %g CPUs and %g GPUs, each with %s", len(pending), resources.get("CPU", 0),
                 resources.get("GPU", 0), "1 GPU" if gpu else f"{cpus_per_job} CPUs")  # fmt: skip
        arguments = (root, "cuda" if gpu else "cpu", num_workers, cpus_per_job, cache)
        running = {task.options(name=f"job-{job.id}", **needs).remote(job, job.id, *arguments): job for job in pending}
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    _collect(ray, ref, running.pop(ref), store, report, bar, max_retries)
                bar.running(len(store.in_progress() & {job.id for job in running.values()}))
        finally:
            for ref in running:
                ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


def _collect(ray, ref, job: Job, store: RunStore, report: ExecutionReport, bar: _Progress, max_retries: int) -> None:
    """Read back one finished task: the job's result from the store, or why there is none; and its log line."""
    try:
        info = ray.get(ref)
        where, error = f" in {info['seconds']:.1f} s on {info['node']}", None
    except ray.exceptions.RayTaskError as err:
        if not isinstance(err.cause, AnomalyCLIPError):
            raise
        where, error = "", _describe(err.cause)
    except ray.exceptions.RayError as err:
        where, error = "", f"{type(err).__name__} after {max_retries + 1} tries: {str(err).splitlines()[0]}"
    result = store.get(job)  # a task whose node was lost after it committed has its result all the same
    if result is not None:
        report.results[job.id] = result
        report.executed.append(job.id)
        log.info("job %s done: %s %s %s%s", bar.finished(False), job.method, job.id, dict(job.tags), where)
        return
    if error is None:
        error = f"finished{where}, but its result is not in {store.root} as seen here: put the run store on a path "
        error += "every node sees"
    report.failures[job.id] = error
    log.error("job %s failed: %s %s %s: %s", bar.finished(True), job.method, job.id, dict(job.tags), error)


def _ray_task(job: Job, job_id: str, root: str, device: str, num_workers, threads: int, feature_cache) -> dict:
    """What a Ray worker runs: one job into the run store at `root`, with `threads` torch threads."""
    if job.id != job_id:
        raise ConfigError(f"{socket.gethostname()} computes job {job_id} as {job.id}: it runs other anomalyclip code "
                          f"({code_version()}); install the same version on every node")  # fmt: skip
    torch.set_num_threads(threads)
    start = time.perf_counter()
    run_job(job, RunStore(root), device=device, num_workers=num_workers, feature_cache=feature_cache)
    return {"seconds": time.perf_counter() - start, "node": socket.gethostname()}


def _wants_gpu(device: str | torch.device, resources: dict[str, float]) -> bool:
    if device == "auto":
        return resources.get("GPU", 0) >= 1
    if torch.device(device).type != "cuda":
        return False
    if resources.get("GPU", 0) < 1:
        raise ConfigError(f"device {device}: the Ray cluster has no GPU ({resources}); use device cpu")
    return True


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'anomalyclip[ray]' (or pip install 'ray>=2.40')"
        ) from None
    return ray
