"""Experiments as data: job identities, the run store (reuse, resumption, atomic results) and the protocols."""

from __future__ import annotations

import json

import pytest

from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.experiments import DataSource, Job, RunStore, run_jobs
from anomalyclip.experiments.protocol import PAPER, SMOKE, SMOKE_SOURCE, SMOKE_TARGET, smoke_sources, table_jobs

CONFIG = AnomalyCLIPConfig(backbone="tiny", pretrained=None, vision=VisionConfig(image_size=112),
                           train=TrainConfig(epochs=1, batch_size=8)).to_dict()  # fmt: skip


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return smoke_sources(tmp_path_factory.mktemp("smoke"))


def plan(sources) -> list[Job]:
    return table_jobs(SMOKE, sources, ["clip", "anomalyclip"], lambda method, train: CONFIG)


def test_job_identity_follows_every_setting_and_nothing_else(sources):
    job = plan(sources)[0]
    same = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert same.id == job.id and same == job
    relabelled = Job(job.method, job.config, job.targets, job.train, job.precision, tags={"other": 1})
    assert relabelled.id == job.id
    changed = dict(job.config) | {"head": dict(job.config["head"], sigma=2.0)}
    assert len({job.id, Job(job.method, changed, job.targets).id,
                Job(job.method, job.config, job.targets, precision="bf16").id}) == 3  # fmt: skip


def test_paper_protocol_trains_on_mvtec_for_all_others_and_on_visa_for_mvtec():
    transfers = PAPER.transfers(["mvtec", "visa", "btad", "headct"])
    assert transfers == [("mvtec", ("visa", "btad", "headct")), ("visa", ("mvtec",))]
    assert PAPER.transfers(["mvtec", "btad"]) == [("mvtec", ("btad",))]
    assert PAPER.transfers(["visa", "btad"]) == []


def test_smoke_plan_has_the_papers_shape(sources):
    jobs = plan(sources)
    learned = [j for j in jobs if j.method == "anomalyclip"]
    assert [(j.train.name, [t.name for t in j.targets]) for j in learned] == [
        (SMOKE_SOURCE, [SMOKE_TARGET]), (SMOKE_TARGET, [SMOKE_SOURCE])]  # fmt: skip
    zero_shot = [j for j in jobs if j.method == "clip"]
    assert len(zero_shot) == 1 and zero_shot[0].train is None and len(zero_shot[0].targets) == 2


@pytest.mark.slow
def test_store_reuses_finished_jobs_and_resumes_after_a_crash(sources, tmp_path):
    jobs = plan(sources)
    store = RunStore(tmp_path / "runs")
    done = []

    def crash_after_first(job, result, error):
        done.append(job.id)
        if len(done) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, store, progress=False, on_done=crash_after_first)
    assert store.executions() == [jobs[0].id]
    assert not list((tmp_path / "runs" / "tmp").iterdir())
    results = run_jobs(jobs, store, progress=False)
    assert store.executions() == [j.id for j in jobs]
    assert set(results) == {j.id for j in jobs}
    again = run_jobs(jobs, store, progress=False)
    assert store.executions() == [j.id for j in jobs]
    assert {k: r.data for k, r in again.items()} == {k: r.data for k, r in results.items()}
    trained = results[jobs[1].id]
    assert trained.checkpoint.is_file() and set(trained.means) == {SMOKE_TARGET}
    assert 0 <= trained.means[SMOKE_TARGET]["pixel_auroc"] <= 1


def test_a_job_failing_on_its_input_is_recorded_and_the_others_go_on(sources, tmp_path):
    store = RunStore(tmp_path / "runs")
    missing = DataSource("missing", "generic", str(tmp_path / "nowhere"))
    bad = Job("clip", CONFIG, (missing,))
    good = Job("clip", CONFIG, (sources[SMOKE_TARGET],))
    results = run_jobs([bad, good], store, progress=False)
    assert set(results) == {good.id}
    assert "nowhere" in store.failure(bad)["error"] and store.failure(good) is None
