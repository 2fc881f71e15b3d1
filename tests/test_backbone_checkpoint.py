"""Backbone loading from every supported source, prompt checkpoints in both formats, and their clear errors."""

from __future__ import annotations

import logging
import os
import stat
import time
import warnings

import pytest
import torch
from support import tiny_model

from anomalyclip.backbone import default_tag, load_backbone
from anomalyclip.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_official_checkpoint,
)
from anomalyclip.cli import main
from anomalyclip.config import PromptConfig, VisionConfig
from anomalyclip.errors import BackboneError, CheckpointError


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory, clip):
    """The tiny CLIP saved as OpenAI does: an fp16 state dict with OpenAI key names."""
    path = tmp_path_factory.mktemp("weights") / "tiny_openai.pt"
    torch.save({k: v.half() for k, v in clip.state_dict().items()}, path)
    return path


@pytest.mark.slow
def test_openai_state_dict_file_builds_the_same_clip(openai_file, clip):
    loaded = load_backbone(str(openai_file))
    assert loaded.visual.proj.dtype == torch.float32
    torch.testing.assert_close(loaded.visual.proj, clip.visual.proj.half().float())
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.slow
def test_open_clip_checkpoint_with_module_prefix(tmp_path, clip):
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    loaded = load_backbone(str(path))
    torch.testing.assert_close(loaded.text_projection, clip.text_projection)


@pytest.mark.slow
def test_openai_jit_archive(tmp_path, clip):
    """A TorchScript archive (OpenAI's released format) is read through its state dict."""
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(clip, {"encode_image": torch.zeros(1, 3, 336, 336)}, check_trace=False)
        traced.save(str(path))
        loaded = load_backbone(str(path))
    torch.testing.assert_close(loaded.visual.proj, clip.visual.proj)


def test_missing_weights_file():
    with pytest.raises(BackboneError, match="weights file .*nope.pt does not exist"):
        load_backbone("/tmp/definitely/nope.pt")


def test_state_dict_that_is_not_a_clip(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(BackboneError, match=r"resnet.pt is not a CLIP checkpoint: missing \['visual.conv1.weight'"):
        load_backbone(str(path))


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(BackboneError, match="notes.pt is not a readable torch checkpoint"):
        load_backbone(str(path))


def test_hub_name_offline_fails_fast_with_local_file_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(BackboneError, match="--weights"):
        load_backbone("ViT-B-32", "openai")
    assert time.monotonic() - start < 30


def test_a_bare_hub_name_means_its_default_pretrained_weights(caplog):
    """Without a tag, a hub name loads its pretrained weights (offline: fails), never random ones in silence."""
    assert default_tag("ViT-L-14-336") == "openai" and default_tag("ViT-B-16-SigLIP") == "webli"
    with pytest.raises(BackboneError, match="could not load pretrained weights 'ViT-B-32'/'openai'"):
        load_backbone("ViT-B-32", None)
    with pytest.raises(BackboneError, match="no pretrained weights for 'ViT-S-32'.*--pretrained none"):
        load_backbone("ViT-S-32")
    with caplog.at_level(logging.WARNING):
        random = load_backbone("ViT-S-32", "none")
    assert not any(p.requires_grad for p in random.parameters())
    assert "RANDOM WEIGHTS (ViT-S-32, no pretrained weights)" in caplog.text


def test_cli_backbone_without_pretrained_keeps_the_openai_tag(synth, tmp_path, capsys):
    status = main(["train", "--data-root", str(synth), "--backbone", "ViT-B-32", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and "'ViT-B-32'/'openai'" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "epoch_1.pt").exists()


def test_unknown_backbone_name():
    with pytest.raises(BackboneError, match="unknown backbone 'ViT-Q-99'"):
        load_backbone("ViT-Q-99", "openai")


def test_project_checkpoint_round_trip_and_config(tmp_path, clip):
    model = tiny_model(clip)
    path = save_checkpoint(tmp_path / "ckpt.pt", model.prompt_learner, model.config, epoch=3)
    other = tiny_model(clip)
    obj = load_checkpoint(path, other.prompt_learner, other.config)
    assert obj["epoch"] == 3
    torch.testing.assert_close(other.prompt_learner.ctx_neg, model.prompt_learner.ctx_neg)
    assert checkpoint_config(path) == model.config


def test_project_checkpoint_mismatch_names_both_values(tmp_path, clip):
    model = tiny_model(clip)
    path = save_checkpoint(tmp_path / "ckpt.pt", model.prompt_learner, model.config)
    other = tiny_model(clip, vision=VisionConfig(features_list=(6, 12, 18, 24)))
    with pytest.raises(CheckpointError, match=r"vision.features_list: checkpoint has \(24,\), configuration has \(6"):
        load_checkpoint(path, other.prompt_learner, other.config)


def test_official_format_round_trip(tmp_path, clip):
    model = tiny_model(clip)
    path = save_official_checkpoint(tmp_path / "epoch_15.pth", model.prompt_learner)
    raw = torch.load(path, weights_only=True)["prompt_learner"]
    assert raw["compound_prompt_projections.7.weight"].shape == (896, 128)
    assert raw["token_suffix_neg"].shape == (1, 1, 64, 128)
    assert checkpoint_config(path) is None
    other = tiny_model(clip)
    load_checkpoint(path, other.prompt_learner)
    torch.testing.assert_close(other.text_features(), model.text_features())


def test_official_checkpoint_of_another_shape(tmp_path, clip):
    path = save_official_checkpoint(tmp_path / "epoch_15.pth", tiny_model(clip).prompt_learner)
    shorter = tiny_model(clip, prompt=PromptConfig(n_ctx=8))
    with pytest.raises(CheckpointError, match=r"ctx_pos has shape \(1, 1, 12, 128\), the configuration expects "
                                              r"\(1, 1, 8, 128\) \(prompt length n_ctx=8"):  # fmt: skip
        load_checkpoint(path, shorter.prompt_learner)
    shallow = tiny_model(clip, prompt=PromptConfig(depth=5))
    with pytest.raises(CheckpointError, match="has 8 deep-token layers"):
        load_checkpoint(path, shallow.prompt_learner)


def test_not_a_prompt_checkpoint(tmp_path, clip):
    path = tmp_path / "weights.pt"
    torch.save({"model": 1}, path)
    with pytest.raises(CheckpointError, match="is not a prompt checkpoint"):
        load_checkpoint(path, tiny_model(clip).prompt_learner)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth", tiny_model(clip).prompt_learner)


class _Payload:
    """Unpickling this object calls open(sentinel, "w"): a checkpoint that runs code when it loads."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return open, (self.sentinel, "w")


def test_a_malicious_checkpoint_runs_nothing(tmp_path, clip, synth, capsys):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": {"ctx_pos": _Payload(sentinel)}}, path)
    with pytest.raises(CheckpointError, match=r"epoch_15.pth refers to io.open, not only tensors.*could run code"):
        load_checkpoint(path, tiny_model(clip).prompt_learner)
    image = synth / "disc" / "test" / "good" / "000.png"
    assert main(["predict", str(image), "--checkpoint", str(path), "--backbone", "tiny", "--out", str(tmp_path)]) == 2
    assert "epoch_15.pth refers to io.open" in capsys.readouterr().err
    assert not sentinel.exists()


def test_checkpoints_hold_only_plain_values_and_get_the_users_umask(tmp_path, clip):
    """Everything train saves loads under weights_only; the file is whole and readable by others (umask 022)."""
    model = tiny_model(clip)
    optimizer = torch.optim.Adam(model.prompt_learner.parameters(), lr=1e-3, betas=(0.5, 0.999))
    model.text_features().sum().backward()
    optimizer.step()
    history = [{"epoch": 1, "step": 0, "global": 0.5, "local": 1.5, "total": 2.0}]
    previous = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "epoch_1.pt", model.prompt_learner, model.config, epoch=1,
                               optimizer=optimizer.state_dict(), history=history)  # fmt: skip
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_1.pt"]
    obj = read_checkpoint(path)
    assert obj["history"] == history and obj["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.999)
    assert checkpoint_config(path) == model.config


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["conformance", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anomalyclip conformance: error:") and "Traceback" not in err
