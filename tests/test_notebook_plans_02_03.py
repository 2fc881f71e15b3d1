"""The plans of notebooks 02 (prompt design, state word) and 03 (Fig. 7 sweeps) on the paper's protocol and on the
smoke one, built on fake sources without training: the variants, transfers and sweep grids each notebook tabulates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalyclip.experiments import plans, unique
from anomalyclip.experiments.ablations import STATE_WORDS, SWEEPS, ablations
from anomalyclip.experiments.jobs import DataSource
from anomalyclip.experiments.protocol import SMOKE_SOURCE, SMOKE_TARGET

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PROMPT_DESIGN, DEEP_PROMPTING = "02_prompt_design", "03_deep_text_prompting"
SWEPT = {"prompt_length": ("prompt", "n_ctx"), "token_depth": ("prompt", "depth"),
         "token_length": ("prompt", "t_n_ctx"), "lambda": ("loss", "lambda_local")}  # fmt: skip
"""Sweep -> the configuration section and setting it varies (the key of `SWEEPS` is the setting's name)."""
PAPER_DATASETS = ("mvtec", "visa", "btad", "sdd")


def fake_sources(names):
    return {name: DataSource(name, "generic", f"/nowhere/{name}") for name in names}


def plan(monkeypatch: pytest.MonkeyPatch, notebook: str, setup: plans.Setup, names) -> list:
    """The notebook's jobs with `names` as the datasets found (nothing is read from disk)."""
    monkeypatch.setattr(plans, "datasets", lambda _: plans.Datasets(fake_sources(names)))
    return plans.PLANS[notebook](setup)


def transfers_of(jobs) -> dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]]:
    """(ablation, variant) -> {(trained on, tested datasets)} of a plan."""
    found: dict[tuple[str, str], set] = {}
    for job in jobs:
        key = (job.tags["ablation"], job.tags["variant"])
        found.setdefault(key, set()).add((job.tags["trained on"], tuple(t.name for t in job.targets)))
    return found


@pytest.fixture
def paper() -> plans.Setup:
    return plans.Setup(protocol="paper", epochs=15, image_size=518)


def test_prompt_design_tests_every_variant_both_ways_and_the_state_words_also_on_btad_and_sdd(monkeypatch, paper):
    jobs = plan(monkeypatch, PROMPT_DESIGN, paper, PAPER_DATASETS)
    found = transfers_of(jobs)
    both_ways = {("mvtec", ("visa",)), ("visa", ("mvtec",))}
    for variant in ablations("paper")["prompts"].variants:
        assert found.pop(("prompts", variant.label)) == both_ways, variant.label
    for word in STATE_WORDS:
        assert found.pop(("state_word", word)) == {("mvtec", ("visa", "btad", "sdd")), ("visa", ("mvtec",))}, word
    assert not found, f"jobs of no ablation of notebook 02: {found}"
    methods = {job.tags["variant"]: job.method for job in jobs}
    assert {methods[v] for v in methods if v.startswith(("CoOp", "CLIP (", "CLIP-AC"))} == {"coop", "clip", "clip_ac"}
    words = {job.config["prompt"]["state_word"] for job in jobs if job.tags["ablation"] == "state_word"}
    assert words == set(STATE_WORDS)


def test_every_value_of_the_paper_grids_is_a_job_that_sets_it_both_ways(monkeypatch, paper):
    jobs = plan(monkeypatch, DEEP_PROMPTING, paper, PAPER_DATASETS)
    assert {job.method for job in jobs} == {"anomalyclip"}
    for key, (section, setting) in SWEPT.items():
        mine = [job for job in jobs if job.tags["ablation"] == key]
        by_transfer: dict[tuple[str, tuple[str, ...]], list] = {}
        for job in mine:
            by_transfer.setdefault((job.train.name, tuple(t.name for t in job.targets)), []).append(
                job.config[section][setting]
            )
        assert set(by_transfer) == {("mvtec", ("visa",)), ("visa", ("mvtec",))}, key
        for values in by_transfer.values():
            assert sorted(values) == sorted(SWEEPS["paper"][setting]), key  # the paper's grids hold the defaults
    defaults = {job.id for job in jobs if job.tags["variant"] in {s.reference for s in ablations("paper").values()}}
    assert len(defaults) == 2, "the default configuration is one job per transfer, shared by the four sweeps"


@pytest.mark.parametrize("notebook", [PROMPT_DESIGN, DEEP_PROMPTING])
def test_nothing_trains_on_a_dataset_other_than_the_two_auxiliary_ones(monkeypatch, paper, notebook: str):
    jobs = plan(monkeypatch, notebook, paper, (*PAPER_DATASETS, "mpdd", "dagm", "headct"))
    assert jobs
    assert {job.train.name for job in jobs if job.train is not None} == {"mvtec", "visa"}
    tested = {t.name for job in jobs for t in job.targets}
    assert tested == ({"mvtec", "visa", "btad", "sdd"} if notebook == PROMPT_DESIGN else {"mvtec", "visa"})


def test_without_visa_only_the_state_words_run_from_mvtec(monkeypatch, paper):
    """What notebook 02 reports as 'not run' on a partial paper run: no transfer lacks its datasets silently."""
    jobs = plan(monkeypatch, PROMPT_DESIGN, paper, ("mvtec", "btad"))
    assert transfers_of(jobs) == {("state_word", w): {("mvtec", ("btad",))} for w in STATE_WORDS}
    assert plan(monkeypatch, DEEP_PROMPTING, paper, ("mvtec", "btad")) == []


def test_the_smoke_plans_are_small_and_share_the_default_job(monkeypatch):
    smoke = plans.Setup()
    names = (SMOKE_SOURCE, SMOKE_TARGET)
    design, deep = plan(monkeypatch, PROMPT_DESIGN, smoke, names), plan(monkeypatch, DEEP_PROMPTING, smoke, names)
    both = unique(design + deep)
    assert len(both) <= 20, f"{len(both)} smoke jobs for notebooks 02 and 03"
    assert len(both) < len(unique(design)) + len(unique(deep)), "the default job is shared by the two notebooks"
    assert {(j.train.name if j.train else None, tuple(t.name for t in j.targets)) for j in both} <= {
        (SMOKE_SOURCE, (SMOKE_TARGET,)), (None, (SMOKE_TARGET,))}  # fmt: skip
    for key, (section, setting) in SWEPT.items():
        values = [j.config[section][setting] for j in deep if j.tags["ablation"] == key]
        assert set(SWEEPS["smoke"][setting]) <= set(values) and len(values) == len(set(values)), key


@pytest.mark.parametrize("notebook", [PROMPT_DESIGN, DEEP_PROMPTING])
def test_each_notebook_asks_for_its_own_plan(notebook: str):
    """`reproduce` runs the planned jobs before the notebooks: a notebook must read exactly its PLANS entry."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert f'plans.PLANS["{notebook}"](setup)' in code
    assert code.count("plans.PLANS[") == 1
