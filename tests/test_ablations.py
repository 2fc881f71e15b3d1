"""The ablations as data: each variant's job differs from its reference in exactly the settings it names, jobs are
shared between ablations, the protocol's transfers hold, and DPAM's ensembles average the single attentions."""

from __future__ import annotations

import pytest
import torch

from anomalyclip.attention import dual_attention
from anomalyclip.backbone import tiny_clip
from anomalyclip.errors import ConfigError
from anomalyclip.experiments.ablations import (
    METHOD,
    SWEEPS,
    ablation_jobs,
    ablations,
    changed_settings,
    with_changes,
)
from anomalyclip.experiments.jobs import DataSource
from anomalyclip.experiments.plans import Setup
from anomalyclip.experiments.protocol import SMOKE_SOURCE, SMOKE_TARGET


def fake_sources(names):
    return {name: DataSource(name, "generic", f"/nowhere/{name}") for name in names}


SETUPS = {
    "paper": (Setup(protocol="paper", epochs=15, image_size=518), fake_sources(["mvtec", "visa", "btad", "sdd"])),
    "smoke": (Setup(), fake_sources([SMOKE_SOURCE, SMOKE_TARGET])),
}


@pytest.mark.parametrize("protocol", sorted(SETUPS))
def test_each_variant_differs_from_its_reference_in_exactly_the_named_settings(protocol: str) -> None:
    setup, sources = SETUPS[protocol]
    for ablation in ablations(protocol).values():
        jobs = ablation_jobs(setup, ablation, sources)
        assert jobs, ablation.key
        by_transfer: dict[str, dict[str, object]] = {}
        for job in jobs:
            by_transfer.setdefault(job.tags["trained on"], {})[job.tags["variant"]] = job
        for trained_on, variants in by_transfer.items():
            assert list(variants) == [v.label for v in ablation.variants]
            reference = variants[ablation.reference]
            previous = None
            for variant in ablation.variants:
                job = variants[variant.label]
                if ablation.chain:
                    if previous is not None:
                        step = changed_settings(job, previous)
                        assert len(step) == 1, (ablation.key, variant.label, step)
                    previous = job
                    continue
                expected = set(variant.named)
                if not variant.named and variant.label != ablation.reference:
                    pytest.fail(f"{ablation.key}/{variant.label} changes nothing against the reference")
                changed = changed_settings(job, reference)
                if variant.method != "anomalyclip" and job.train is None:
                    expected |= {"train"}  # a method that learns nothing has no training source
                assert changed == expected, (ablation.key, trained_on, variant.label, changed, expected)
            if ablation.chain:
                assert changed_settings(previous, reference) == set()


def test_chain_adds_the_four_modules_in_order() -> None:
    setup, sources = SETUPS["paper"]
    modules = ablations("paper")["modules"]
    jobs = [j for j in ablation_jobs(setup, modules, sources) if j.tags["trained on"] == "mvtec"]
    steps = [changed_settings(b, a) for a, b in zip(jobs, jobs[1:], strict=False)]
    assert steps == [{"vision.dpam_blocks"}, {"prompt.object_aware"}, {"prompt.deep_tokens"},
                     {"vision.features_list"}]  # fmt: skip


def test_the_default_configuration_is_one_job_shared_by_the_ablations() -> None:
    setup, sources = SETUPS["paper"]
    table = ablations("paper")
    defaults = {
        ("modules", "+T3 text-encoder tokens"), ("leave_one_out", "- T4 multi-layer local features"),
        ("losses", "global + local (Focal + Dice)"), ("dpam", "V-V (AnomalyCLIP)"),
        ("prompts", "object-agnostic (AnomalyCLIP)"),
        ("prompt_length", "E=12"), ("lambda", "λ=4.0"), ("state_word", "damaged"),
    }  # fmt: skip
    ids = set()
    for key, label in defaults:
        jobs = [j for j in ablation_jobs(setup, table[key], sources) if j.tags["variant"] == label]
        mvtec = next(j for j in jobs if j.tags["trained on"] == "mvtec")
        # the state word adds BTAD and SDD to the tested datasets; compare the configuration and training only
        ids.add((mvtec.method, str(mvtec.config), mvtec.train))
        assert changed_settings(mvtec, jobs[0]) <= {"targets"}
    assert len(ids) == 1


def test_transfers_follow_the_protocol() -> None:
    setup, sources = SETUPS["paper"]
    state = ablation_jobs(setup, ablations("paper")["state_word"], sources)
    targets = {(j.tags["trained on"], tuple(t.name for t in j.targets)) for j in state}
    assert targets == {("mvtec", ("visa", "btad", "sdd")), ("visa", ("mvtec",))}
    smoke, smoke_sources = SETUPS["smoke"]
    jobs = ablation_jobs(smoke, ablations("smoke")["dpam"], smoke_sources)
    assert {(j.train.name, j.targets[0].name) for j in jobs} == {(SMOKE_SOURCE, SMOKE_TARGET)}
    partial = {k: v for k, v in sources.items() if k != "visa"}
    assert ablation_jobs(setup, ablations("paper")["dpam"], partial) == []


def test_sweeps_cover_the_default_and_go_beyond_the_paper() -> None:
    for protocol in SWEEPS:
        table = ablations(protocol)
        assert "E=12" in [v.label for v in table["prompt_length"].variants]
        assert max(v.changes.get("prompt.n_ctx", 12) for v in table["prompt_length"].variants) == 24
    assert len(ablations("paper")["prompt_length"].variants) > len(ablations("smoke")["prompt_length"].variants)


def test_other_methods_are_named_as_a_method_change() -> None:
    prompts = ablations("smoke")["prompts"]
    assert {v.label for v in prompts.variants if METHOD in v.named} == {
        "CoOp ([V][normal|anomalous][cls], plain CLIP)", "CLIP (hand-made, object-aware)",
        "CLIP-AC (hand-made ensemble)"}  # fmt: skip


def test_with_changes_rejects_a_setting_that_does_not_exist() -> None:
    config = Setup().config("anomalyclip")
    assert with_changes(config, {"vision.dpam_mode": "qq"})["vision"]["dpam_mode"] == "qq"
    assert config["vision"]["dpam_mode"] == "vv"
    with pytest.raises(ConfigError, match="vision.dpam_mod"):
        with_changes(config, {"vision.dpam_mod": "qq"})


def test_invalid_variant_values_fail_when_the_job_is_built() -> None:
    from anomalyclip.experiments.ablations import Ablation, Variant

    setup, sources = SETUPS["smoke"]
    bad = Ablation("bad", "bad", "fig7", (Variant("E=0", {"prompt.n_ctx": 0}),), "E=0")
    with pytest.raises(ConfigError, match="n_ctx"):
        ablation_jobs(setup, bad, sources)


def test_dpam_ensembles_average_the_single_attentions() -> None:
    block = tiny_clip().visual.transformer.resblocks[5]
    x = torch.randn(2, 17, 128)
    singles = {mode: dual_attention(block.attn, x, mode) for mode in ("vv", "qq", "kk")}
    original, ensemble = dual_attention(block.attn, x, "qq+kk+vv")
    torch.testing.assert_close(ensemble, torch.stack([singles[m][1] for m in ("qq", "kk", "vv")]).mean(0))
    torch.testing.assert_close(original, singles["vv"][0])
    _, with_qk = dual_attention(block.attn, x, "qk+qq+kk+vv")
    expected = torch.stack([original, *(singles[m][1] for m in ("qq", "kk", "vv"))]).mean(0)
    torch.testing.assert_close(with_qk, expected)
    # the single V-V path is the official formula: softmax(v v^T * scale) v through the out-projection
    packed = torch.nn.functional.linear(x, block.attn.in_proj_weight, block.attn.in_proj_bias)
    v = packed.chunk(3, -1)[2].view(2, 17, 2, 64).transpose(1, 2)
    vv = ((v @ v.transpose(-1, -2)) * 64**-0.5).softmax(-1) @ v
    torch.testing.assert_close(singles["vv"][1], block.attn.out_proj(vv.transpose(1, 2).reshape(2, 17, 128)))
