"""Experiments as data: jobs with stable identities, a run store that caches their results, and executors."""

from anomalyclip.experiments.jobs import DataSource, Job, code_version, unique
from anomalyclip.experiments.run import run_job, run_jobs
from anomalyclip.experiments.store import JobResult, RunStore

__all__ = ["DataSource", "Job", "JobResult", "RunStore", "code_version", "run_job", "run_jobs", "unique"]
