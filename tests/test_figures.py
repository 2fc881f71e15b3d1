"""The figures' helpers: CLIP with its text held fixed across categories, failure-case selection, the images of
Fig. 1 and maps of chosen images re-scored with a job's detector."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from anomalyclip.config import AnomalyCLIPConfig, VisionConfig
from anomalyclip.errors import DataError
from anomalyclip.experiments import DataSource, Job, JobResult, plans
from anomalyclip.experiments.results import FAILURE_CASES, example_maps, failure_cases, figure_images
from anomalyclip.methods import PromptedDetector
from anomalyclip.methods.prompted import method_config
from anomalyclip.model import AnomalyCLIP
from anomalyclip.studies import FixedText, score_frame

SIZE = 112
CONFIG = AnomalyCLIPConfig(backbone="tiny", pretrained=None, vision=VisionConfig(image_size=SIZE))


@pytest.fixture(scope="module")
def plain(clip) -> PromptedDetector:
    """The CLIP baseline on the tiny backbone."""
    depth = len(clip.visual.transformer.resblocks)
    return PromptedDetector(AnomalyCLIP(clip, method_config("clip", CONFIG, depth)), "clip")


@pytest.fixture
def source(synth) -> DataSource:
    return DataSource("synthetic", "generic", str(synth))


def test_fixed_text_prepares_every_category_with_the_same_prompts(plain, source):
    fixed = FixedText(plain, "object")
    torch.testing.assert_close(fixed.prepare("disc"), fixed.prepare("stripes"), rtol=0, atol=0)
    torch.testing.assert_close(fixed.prepare("disc"), plain.prepare("object"), rtol=0, atol=0)
    assert not torch.allclose(plain.prepare("disc"), plain.prepare("stripes"))
    assert not torch.allclose(fixed.prepare("disc"), plain.prepare("disc"))
    assert fixed.image_size == plain.image_size and fixed.sigma == plain.sigma and fixed.name == "clip"

    records = [r for r in source.records() if r.category in ("disc", "stripes")][::8]
    own, same = score_frame(plain, records), score_frame(fixed, records)
    assert list(own.image) == list(same.image) and list(own.label) == list(same.label)
    assert not own.score.equals(same.score)


def scores_frame() -> pd.DataFrame:
    normal = [("n0", 0.30), ("n1", 0.90), ("n2", 0.10), ("n3", 0.70), ("n4", 0.50), ("n5", 0.80)]
    anomalous = [("a0", 0.60), ("a1", 0.20), ("a2", 0.95), ("a3", 0.40), ("a4", 0.05), ("a5", 0.75)]
    rows = [(name, "c", "good", 0, s) for name, s in normal] + [(name, "c", "d", 1, s) for name, s in anomalous]
    return pd.DataFrame(rows, columns=["image", "category", "defect", "label", "score"]).sample(frac=1, random_state=0)


def test_failure_cases_are_the_top_scoring_normal_and_the_bottom_scoring_anomalous_images():
    cases = failure_cases(scores_frame(), count=4)
    normal, anomalous = (cases[cases.case == case] for case in FAILURE_CASES)
    assert list(normal.image) == ["n1", "n5", "n3", "n4"] and set(normal.label) == {0}
    assert list(anomalous.image) == ["a4", "a1", "a3", "a0"] and set(anomalous.label) == {1}
    assert len(failure_cases(scores_frame(), count=10)) == 12
    only_anomalous = scores_frame().query("label == 1")
    assert set(failure_cases(only_anomalous, count=2).case) == {FAILURE_CASES[1]}


def test_example_maps_come_back_for_exactly_the_chosen_images_in_their_order(source):
    job = Job("clip", CONFIG.to_dict(), (source,))
    result = JobResult(job, source.root, {})
    records = source.records()
    picked = [records[-1], records[0], records[len(records) // 2]]
    chosen = [r.name for r in picked]
    examples = example_maps(result, "synthetic", paths=chosen)
    assert [e["path"] for e in examples] == chosen
    assert [(e["category"], e["defect"]) for e in examples] == [(r.category, r.defect) for r in picked]
    assert all(e["map"].shape == (SIZE, SIZE) and e["image"].shape == (3, SIZE, SIZE) for e in examples)
    assert len({e["category"] for e in examples}) > 1
    first = example_maps(result, "synthetic", 2)
    assert [e["path"] for e in first] == [r.name for r in records if r.label][:2]
    with pytest.raises(DataError, match="no test image"):
        example_maps(result, "synthetic", paths=[chosen[0], "missing.png"])


def test_figure_images_pair_an_industrial_with_a_medical_image_or_two_categories(synth):
    industrial = DataSource("mvtec", "generic", str(synth))
    other = DataSource("synthetic target", "generic", str(synth))
    medical = [DataSource("headct", "generic", str(synth), pixel_level=False), DataSource("colondb", "generic",
               str(synth))]  # fmt: skip
    pair = figure_images([other, medical[0], industrial, medical[1]])
    assert [s.name for s, _ in pair] == ["mvtec", "colondb"] and all(r.label for _, r in pair)
    two = figure_images([industrial, other], fallback="synthetic target")
    assert [s.name for s, _ in two] == ["synthetic target"] * 2
    assert all(r.label for _, r in two) and two[0][1].category != two[1][1].category


def test_figure1_plan_tests_each_dataset_once_per_method_under_the_paper_protocol(monkeypatch):
    names = ["mvtec", "visa", "btad", "headct", "colondb"]
    fake = plans.Datasets({name: DataSource(name, "generic", f"/nowhere/{name}") for name in names})
    monkeypatch.setattr(plans, "datasets", lambda setup: fake)
    setup = plans.Setup(protocol="paper", image_size=518, epochs=15, winclip_backbone="ViT-B-16-plus-240")
    jobs = plans.PLANS["01_clip_misalignment"](setup)
    assert {j.method for j in jobs} == set(plans.FIGURE1_METHODS)
    for method in plans.FIGURE1_METHODS:
        for name in names:
            testing = [j for j in jobs if j.method == method and name in {t.name for t in j.targets}]
            trained = {j.train.name if j.train else None for j in testing}
            assert len(testing) == 1, (method, name)
            if method in ("coop", "anomalyclip"):
                assert trained == {"visa" if name == "mvtec" else "mvtec"}
            else:
                assert trained == {None}
    assert next(j for j in jobs if j.method == "winclip").config["backbone"] == "ViT-B-16-plus-240"
