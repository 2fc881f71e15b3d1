"""The model's parts behave as specified: equal to open_clip where they should be, DPAM variants, prompts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import tiny_model

from anomalyclip.backbone import load_backbone
from anomalyclip.config import PromptConfig, VisionConfig
from anomalyclip.errors import InputSizeError
from anomalyclip.prompts import clip_ac_prompt_features, clip_prompt_features

SIZE = 112


def images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_backbone_is_frozen_and_tiny_is_seeded(clip):
    assert not any(p.requires_grad for p in clip.parameters())
    again = load_backbone("tiny")
    other = load_backbone("tiny", seed=1)
    assert torch.equal(clip.visual.proj, again.visual.proj)
    assert not torch.equal(clip.visual.proj, other.visual.proj)


def test_without_dpam_global_equals_open_clip(clip):
    """With ln_post on the global token and no DPAM, the vision path is exactly open_clip's encode_image."""
    model = tiny_model(clip, vision=VisionConfig(image_size=336, dpam_blocks=0, global_ln_post=True))
    x = images(2, 336)
    ours = model.encode_image(x).global_embedding
    torch.testing.assert_close(ours, clip.encode_image(x), atol=1e-5, rtol=1e-4)


def test_text_encoder_without_deep_tokens_equals_open_clip(clip):
    model = tiny_model(clip)
    sentences = ["a photo of a damaged object.", "a photo of a normal screw."]
    torch.testing.assert_close(
        model.text.encode_texts(sentences),
        clip.encode_text(model.text.tokenize(sentences)),
        atol=1e-5,
        rtol=1e-4,
    )


def test_dpam_path_changes_local_but_not_global_features(clip):
    plain = tiny_model(clip, vision=VisionConfig(image_size=SIZE, dpam_blocks=0))
    results = {}
    for mode in ("vv", "qq", "kk"):
        model = tiny_model(clip, vision=VisionConfig(image_size=SIZE, dpam_mode=mode))
        results[mode] = model.encode_image(images())
    base = plain.encode_image(images())
    for mode, feats in results.items():
        torch.testing.assert_close(feats.global_embedding, base.global_embedding)
        assert not torch.allclose(feats.patch_tokens[0], base.patch_tokens[0]), mode
    assert not torch.allclose(results["vv"].patch_tokens[0], results["qq"].patch_tokens[0])


def test_features_list_gives_one_tensor_per_layer(clip):
    model = tiny_model(clip, vision=VisionConfig(image_size=SIZE, features_list=(6, 12, 18, 24)))
    feats = model.encode_image(images())
    grid = SIZE // 14
    assert [tuple(t.shape) for t in feats.patch_tokens] == [(2, grid * grid + 1, 64)] * 4
    assert len({float(t.abs().sum()) for t in feats.patch_tokens}) == 4, "layers must not alias each other"


def test_forward_shapes_and_ranges(clip):
    model = tiny_model(clip, vision=VisionConfig(image_size=SIZE))
    out = model(images(3))
    assert out.image_scores.shape == (3,) and out.anomaly_map.shape == (3, SIZE, SIZE)
    assert torch.all((out.image_scores > 0) & (out.image_scores < 1))
    assert torch.all(out.anomaly_map_raw >= 0) and torch.all(out.anomaly_map_raw <= 1)


@pytest.mark.parametrize("size", [100, 0, 13])
def test_image_size_not_multiple_of_patch_is_rejected(clip, size):
    model = tiny_model(clip)
    with pytest.raises(InputSizeError, match=f"image size {size} is not a positive multiple of the patch size 14"):
        model.vision.grid_size(size)


def test_wrong_image_tensor_shape_is_rejected(clip):
    with pytest.raises(InputSizeError, match=r"expected images of shape \(B, 3, S, S\)"):
        tiny_model(clip).encode_image(torch.zeros(1, 3, 112, 98))


def test_bf16_autocast_runs(clip):
    model = tiny_model(clip, vision=VisionConfig(image_size=SIZE))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images())
    assert torch.isfinite(out.anomaly_map).all()
    reference = model(images())
    assert (out.image_scores.float() - reference.image_scores).abs().max() < 0.05


def test_prompt_variants(clip):
    base = tiny_model(clip)
    assert base.prompt_learner.tokenized_prompts.shape == (2, 77)
    assert sum(p.numel() for p in base.prompt_learner.parameters()) == 12 * 128 * 2 + 8 * 4 * 128
    shared = tiny_model(clip, prompt=PromptConfig(shared_context=True))
    assert shared.prompt_learner.ctx_neg is None
    normal_ctx, abnormal_ctx = shared.prompt_learner.contexts()
    assert torch.equal(normal_ctx, abnormal_ctx)
    shallow = tiny_model(clip, prompt=PromptConfig(deep_tokens=False, n_ctx=5))
    assert len(shallow.prompt_learner.compound_prompts_text) == 0
    assert shallow.prompt_learner.ctx_pos.shape == (1, 1, 5, 128)
    aware = tiny_model(clip, prompt=PromptConfig(object_word="bottle", state_word="anomalous"))
    text = [aware.text.tokenize(["bottle anomalous"])[0, 1:3].tolist()]
    tokens = aware.prompt_learner.tokenized_prompts[1].tolist()
    assert text[0][0] in tokens and text[0][1] in tokens
    for model in (base, shared, shallow, aware):
        feats = model.text_features()
        assert feats.shape == (2, 64)
        torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))


def test_deep_tokens_overwrite_and_receive_gradients(clip):
    model = tiny_model(clip, vision=VisionConfig(image_size=SIZE))
    before = model.text_features().detach()
    with torch.no_grad():
        model.prompt_learner.compound_prompts_text[0].add_(1.0)
    assert not torch.allclose(model.text_features(), before)
    model.train()
    feats = model.encode_image(images())
    masks = torch.zeros(2, SIZE, SIZE)
    masks[0, 20:60, 20:60] = 1
    loss, _ = model.loss(feats, torch.tensor([1, 0]), masks, SIZE)
    loss.total.backward()
    learner = model.prompt_learner
    grads = [learner.ctx_pos.grad, learner.ctx_neg.grad, *[p.grad for p in learner.compound_prompts_text]]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert not any(p.grad is not None for p in model.clip.parameters())


@pytest.mark.slow
def test_handmade_prompt_baselines(clip):
    model = tiny_model(clip)
    for features in (clip_prompt_features(model.text, "screw"), clip_ac_prompt_features(model.text)):
        assert features.shape == (2, 64)
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    sentences = model.text.encode_texts(["a photo of a normal screw.", "a photo of an anomalous screw."])
    torch.testing.assert_close(clip_prompt_features(model.text, "screw"), F.normalize(sentences, dim=-1))


def test_object_aware_prompts_give_each_image_its_class(clip):
    model = tiny_model(clip, prompt=PromptConfig(object_aware=True))
    feats = model.text_features(["screw", "screw", "metal_nut"])
    assert feats.shape == (3, 2, 64)
    torch.testing.assert_close(feats[0], feats[1])
    assert not torch.allclose(feats[0], feats[2])
    agnostic = model.text_features()
    assert agnostic.shape == (2, 64) and not torch.allclose(agnostic, feats[0])
    out = model(images(3), categories=["screw", "screw", "metal_nut"])
    assert out.image_scores.shape == (3,)
    model.train()
    masks = torch.zeros(3, SIZE, SIZE)
    loss, _ = model.loss(model.encode_image(images(3)), torch.tensor([1, 0, 1]), masks, SIZE, ["a", "b", "a"])
    loss.total.backward()
    assert model.prompt_learner.ctx_pos.grad.abs().sum() > 0


def test_object_word_templates_follow_the_model_to_another_device():
    """Templates cached for a class name move with the model (here to the meta device, as to a GPU)."""
    model = tiny_model(load_backbone("tiny"), prompt=PromptConfig(object_aware=True))
    assert model.text_features(["screw"]).device.type == "cpu"
    model.to("meta")
    feats = model.text_features(["screw", "bottle"])
    assert feats.device.type == "meta" and feats.shape == (2, 2, 64)
