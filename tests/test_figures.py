"""The figures' helpers: CLIP with its class name held fixed across categories, failure-case selection, the images of
Fig. 1 and maps of chosen images re-scored with a job's detector."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from anomalyclip.config import AnomalyCLIPConfig, VisionConfig
from anomalyclip.errors import ConfigError, DataError
from anomalyclip.experiments import DataSource, Job, JobResult, plans, results
from anomalyclip.experiments.ablations import changed_settings
from anomalyclip.experiments.results import FAILURE_CASES, example_maps, failure_cases, figure_images
from anomalyclip.methods import PromptedDetector
from anomalyclip.methods.prompted import method_config
from anomalyclip.model import AnomalyCLIP
from anomalyclip.studies import score_frame

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


def test_a_fixed_class_name_prepares_every_category_with_the_same_prompts(clip, plain, source):
    depth = len(clip.visual.transformer.resblocks)
    config = CONFIG.replace(prompt=dataclasses.replace(CONFIG.prompt, fixed_class_name="object"))
    fixed = PromptedDetector(AnomalyCLIP(clip, method_config("clip", config, depth)), "clip")
    torch.testing.assert_close(fixed.prepare("disc"), fixed.prepare("stripes"), rtol=0, atol=0)
    torch.testing.assert_close(fixed.prepare("disc"), plain.prepare("object"), rtol=0, atol=0)
    assert not torch.allclose(plain.prepare("disc"), plain.prepare("stripes"))
    assert not torch.allclose(fixed.prepare("disc"), plain.prepare("disc"))

    records = [r for r in source.records() if r.category in ("disc", "stripes")][::8]
    own, same = score_frame(plain, records), score_frame(fixed, records)
    assert list(own.image) == list(same.image) and list(own.label) == list(same.label)
    assert not own.score.equals(same.score)


@pytest.mark.parametrize("method", ["anomalyclip", "coop"])
def test_a_fixed_class_name_is_refused_where_prompts_are_learned(method):
    config = CONFIG.replace(prompt=dataclasses.replace(CONFIG.prompt, fixed_class_name="object"))
    with pytest.raises(ConfigError, match=f"prompt.fixed_class_name = 'object' applies to .* not to {method}"):
        method_config(method, config, 12)


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


def test_example_maps_come_back_for_exactly_the_chosen_images_in_their_order(source, tmp_path):
    job = Job("clip", CONFIG.to_dict(), (source,))
    result = JobResult(job, tmp_path, {})
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


def test_example_maps_are_kept_in_the_job_folder_and_read_back_unchanged(source, tmp_path, monkeypatch):
    result = JobResult(Job("clip", CONFIG.to_dict(), (source,)), tmp_path, {})
    chosen = [r.name for r in source.records()[::7]][:3]
    drawn = example_maps(result, "synthetic", paths=chosen)
    assert [p.parent.name for p in tmp_path.glob("maps/*.npz")] == ["maps"]

    def no_scoring(*args, **kwargs):
        raise AssertionError("the kept maps were scored again")

    monkeypatch.setattr(results, "_score_examples", no_scoring)
    kept = example_maps(result, "synthetic", paths=chosen)
    assert [sorted(e) for e in kept] == [sorted(e) for e in drawn]
    for again, first in zip(kept, drawn, strict=True):
        assert (again["path"], again["category"], again["defect"]) == (first["path"], first["category"],
                                                                     first["defect"])  # fmt: skip
        torch.testing.assert_close(again["image"], first["image"], rtol=0, atol=0)
        assert np.array_equal(again["mask"], first["mask"]) and np.array_equal(again["map"], first["map"])
    with pytest.raises(AssertionError, match="scored again"):
        example_maps(result, "synthetic", paths=chosen[:2])  # other images: not kept yet


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
    planned = plans.PLANS["01_clip_misalignment"](setup)
    jobs = [j for j in planned if j.tags.get("text") != "fixed"]
    assert {j.method for j in jobs} == set(plans.FIGURE1_METHODS)
    clip_job = next(j for j in jobs if j.method == "clip")
    fixed = [j for j in planned if j not in jobs]
    assert fixed == [plans.fixed_text_job(clip_job)]
    assert changed_settings(fixed[0], clip_job) == {"prompt.fixed_class_name"}
    assert fixed[0].config["prompt"]["fixed_class_name"] == plans.FIXED_CLASS_NAME
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
