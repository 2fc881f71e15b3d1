"""The plans of notebooks 04, 05 and 08 on the paper's protocol (fake datasets, no training), Table 13's backbone
jobs and their scaled settings, and the readers of a finished job's training history and timings (one tiny job)."""

from __future__ import annotations

import math

import pytest

from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data.synth import ensure_synthetic_dataset
from anomalyclip.errors import ConfigError
from anomalyclip.experiments import DataSource, Job, RunStore, plans
from anomalyclip.experiments.ablations import ablation_jobs, ablations, changed_settings
from anomalyclip.experiments.results import (
    images_per_second,
    minutes_per_epoch,
    training_history,
    uncached_epoch_minutes,
)
from anomalyclip.experiments.run import run_job

PAPER_SOURCES = {name: DataSource(name, "generic", f"/nowhere/{name}") for name in ("mvtec", "visa", "btad", "sdd")}


@pytest.fixture
def paper(monkeypatch: pytest.MonkeyPatch):
    """A paper setup whose datasets are the fake sources (`plans.datasets` would look for them on disk)."""
    monkeypatch.setattr(plans, "datasets", lambda setup: plans.Datasets(dict(PAPER_SOURCES)))

    def make(**fields) -> plans.Setup:
        return plans.Setup(protocol="paper", epochs=15, image_size=518, **fields)

    return make


def by_variant(jobs: list[Job], ablation: str) -> dict[str, set[str]]:
    """Training dataset -> the variants of `ablation` among `jobs`."""
    found: dict[str, set[str]] = {}
    for job in jobs:
        if job.tags.get("ablation") == ablation and "compute" not in job.tags:
            found.setdefault(job.tags["trained on"], set()).add(job.tags["variant"])
    return found


def assert_every_variant_both_ways(jobs, *keys: str) -> None:
    """Each variant of the paper ablations `keys` is planned trained on MVTec AD and on VisA."""
    table = ablations("paper")
    for key in keys:
        labels = {v.label for v in table[key].variants}
        assert by_variant(jobs, key) == {"mvtec": labels, "visa": labels}, key


def test_notebook_04_plan_is_the_dpam_ablations(paper) -> None:
    setup = paper()
    jobs = plans.PLANS["04_vv_attention_ablation"](setup)
    assert_every_variant_both_ways(jobs, "dpam", "dpam_blocks")


def test_notebook_05_plan_has_the_losses_table8_training_jobs_and_the_test_speed_jobs(paper) -> None:
    setup = paper()
    jobs = plans.PLANS["05_training"](setup)
    table = ablations("paper")
    losses = {v.label for v in table["losses"].variants}
    assert by_variant(jobs, "losses") == {"mvtec": losses, "visa": losses}

    compute = {j.tags["compute"]: j for j in jobs if "compute" in j.tags}
    assert set(compute) == {"AnomalyCLIP", "AnomalyCLIP without DPAM", "CoOp"}
    assert {j.train.name for j in compute.values()} == {"mvtec"}, "Table 8 trains on MVTec AD"
    assert [compute[r].method for r in ("AnomalyCLIP", "AnomalyCLIP without DPAM", "CoOp")] == [
        "anomalyclip", "anomalyclip", "coop"]  # fmt: skip
    assert changed_settings(compute["AnomalyCLIP without DPAM"], compute["AnomalyCLIP"]) == {"vision.dpam_blocks"}
    assert compute["AnomalyCLIP without DPAM"].config["vision"]["dpam_blocks"] == 0
    # the same jobs as the ablations' (notebooks 02, 04 and 05 share them)
    shared = {j.id for key in ("losses", "dpam", "prompts") for j in ablation_jobs(setup, table[key], PAPER_SOURCES)}
    assert {j.id for j in compute.values()} <= shared

    speed = [j for j in jobs if j.tags.get("table") == "main"]
    assert {j.method for j in speed} == {"clip", "winclip", "anomalyclip"}
    assert all(len(j.targets) >= 1 for j in speed)
    assert {j.train.name for j in speed if j.method == "anomalyclip"} == {"mvtec", "visa"}
    assert {j.id for j in speed} <= {j.id for j in plans.tables_plan(setup)}


def test_notebook_08_plan_has_the_chain_and_leave_one_out_and_only_the_setups_backbone(paper) -> None:
    setup = paper()
    jobs = plans.PLANS["08_module_ablation"](setup)
    assert_every_variant_both_ways(jobs, "modules", "leave_one_out")
    backbone = [j for j in jobs if j.tags["ablation"] == "backbones"]
    assert {j.tags["variant"] for j in backbone} == {plans.SETUP_BACKBONE}
    losses = ablations("paper")["losses"]
    base = {j.id for j in ablation_jobs(setup, losses, PAPER_SOURCES) if j.tags["variant"] == losses.reference}
    assert {j.id for j in backbone} == base, "the ViT-L-14-336 row is the setup's own base job"


def test_backbone_jobs_only_for_backbones_with_weights_with_settings_scaled_to_the_backbone(paper) -> None:
    setup = paper(backbones={"ViT-B-16-plus-240": "/weights/b16plus.pt", "ViT-H-14": None})
    jobs = plans.backbone_jobs(setup)
    given = (plans.SETUP_BACKBONE, "ViT-B-16-plus-240")
    assert {(j.tags["variant"], j.tags["trained on"]) for j in jobs} == {
        (n, t) for n in given for t in ("mvtec", "visa")
    }
    base = next(j for j in jobs if j.tags["variant"] == plans.SETUP_BACKBONE and j.tags["trained on"] == "mvtec")
    b16 = next(j for j in jobs if j.tags["variant"] == "ViT-B-16-plus-240" and j.tags["trained on"] == "mvtec")
    assert changed_settings(b16, base) == {"backbone", "pretrained", "vision.dpam_blocks", "vision.features_list",
                                           "vision.image_size"}  # fmt: skip
    assert (b16.config["backbone"], b16.config["pretrained"]) == ("ViT-B-16-plus-240", "/weights/b16plus.pt")
    vision = b16.config["vision"]
    assert vision["dpam_blocks"] == 7, "12 blocks: DPAM on blocks 6-12"
    assert vision["features_list"] == [12]
    assert vision["image_size"] % 16 == 0 and abs(vision["image_size"] - 518) < 16
    assert base.config["vision"]["dpam_blocks"] == 19 and base.config["vision"]["features_list"] == [24]

    huge = plans.backbone_settings("ViT-H-14", 518)
    assert huge == {"vision.dpam_blocks": 27, "vision.features_list": (32,), "vision.image_size": 518}
    assert plans.backbone_settings("ViT-B-16-plus-240", 224)["vision.image_size"] == 224


def test_backbone_status_lists_every_backbone_with_why_it_did_not_run(paper, tmp_path) -> None:
    setup = paper(backbones={"ViT-H-14": "laion2b_s32b_b79k"}, run_store=str(tmp_path / "runs"))
    jobs = plans.backbone_jobs(setup)
    done = {j.id: None for j in jobs if j.tags["variant"] != "ViT-H-14"}
    status = plans.backbone_status(setup, jobs, done).set_index("backbone")
    assert list(status.index) == ["ViT-L-14-336", "ViT-B-16-plus-240", "ViT-H-14"]
    assert status.loc["ViT-L-14-336", "status"] == "ok"
    assert status.loc["ViT-B-16-plus-240", "status"].startswith("not run: no weights given")
    assert status.loc["ViT-H-14", "status"].startswith("failed")
    assert status.loc["ViT-H-14", "run as"] == "ViT-H-14 (laion2b_s32b_b79k)"
    assert status.loc["ViT-B-16-plus-240", "image size"] == 512


def test_setup_rejects_backbones_it_cannot_run(paper) -> None:
    with pytest.raises(ConfigError, match="own base job"):
        plans.Setup(backbones={"ViT-L-14-336": "openai"})
    with pytest.raises(ConfigError, match="backbones"):
        plans.Setup(backbones=["ViT-H-14"])
    with pytest.raises(ConfigError, match="not an open_clip ViT"):
        plans.backbone_jobs(paper(backbones={"NoSuchNet": "x.pt"}))


def test_training_history_and_timings_read_what_a_job_stored(tmp_path) -> None:
    folder = ensure_synthetic_dataset(tmp_path / "data", categories=("stripes",), n_train=1, n_test_good=4,
                                      n_test_defect=6, image_size=64)  # fmt: skip
    train = DataSource("synthetic", "generic", str(folder))
    config = AnomalyCLIPConfig(backbone="tiny", pretrained=None, vision=VisionConfig(image_size=56),
                               train=TrainConfig(epochs=1, batch_size=8)).to_dict()  # fmt: skip
    job = Job("anomalyclip", config, (train,), train)
    result = run_job(job, RunStore(tmp_path / "runs"))

    history = training_history(result)
    images = len(train.records())
    assert list(history.columns) == ["epoch", "step", "global", "local", "total"]
    assert len(history) == math.ceil(images / 8) and set(history.epoch) == {1}
    assert history.total.to_numpy() == pytest.approx((history["global"] + history["local"]).to_numpy(), rel=1e-5)
    assert (history[["global", "local"]] > 0).all().all()

    assert minutes_per_epoch(result) == pytest.approx(result.data["timings"]["train_seconds"] / 60)
    target = result.data["targets"][train.name]
    assert images_per_second([result, result]) == pytest.approx(target["images"] / target["seconds"])
    assert uncached_epoch_minutes(job, tmp_path / "uncached") > 0
    assert (tmp_path / "uncached" / "epoch_1.pt").is_file()
