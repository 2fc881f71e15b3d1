"""The detector contract and the one inference loop: every method through the loop equals the method on its own."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from support import SHARED

from anomalyclip.checkpoint import save_official_checkpoint
from anomalyclip.cli import main
from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data import load_records, read_image
from anomalyclip.engine.inference import score_categories
from anomalyclip.errors import CheckpointError, ConfigError
from anomalyclip.head import gaussian_blur
from anomalyclip.methods import METHODS, build_detector
from anomalyclip.methods.prompted import PROMPTED, PromptedDetector, method_config
from anomalyclip.methods.vand import VANDConfig
from anomalyclip.methods.vand import save_checkpoint as save_vand_checkpoint
from anomalyclip.model import AnomalyCLIP
from anomalyclip.studies import score_frame

SIZE = 112


def config(size: int = SIZE, epochs: int = 1) -> AnomalyCLIPConfig:
    return AnomalyCLIPConfig(
        backbone="tiny",
        pretrained=None,
        vision=VisionConfig(image_size=size),
        train=TrainConfig(epochs=epochs, batch_size=4),
    )


@pytest.fixture(scope="module")
def records(synth):
    return load_records(synth, split="test", categories=["disc", "square"])[::3]


def prompted(config: AnomalyCLIPConfig, clip, method: str = "anomalyclip") -> PromptedDetector:
    """A prompt-based method on an already built CLIP (fresh prompts for the learned methods)."""
    blocks = len(clip.visual.transformer.resblocks)
    return PromptedDetector(AnomalyCLIP(clip, method_config(method, config, blocks)), method)


def detector_for(method: str, clip, shots: int = 0):
    """A small detector of `method`: prompted ones on the tiny CLIP, WinCLIP on its cheap tiny variant."""
    if method in PROMPTED:
        return prompted(config(), clip, method)
    if method == "vand":
        vand = VANDConfig(backbone="tiny", pretrained=None, image_size=SIZE, epochs=1, k_shot=shots)
        return build_detector(method, config=vand)
    return build_detector(method, backbone=f"tiny-{method}", shots=shots)


@pytest.mark.parametrize(
    "method,shots", [(m, 0) for m in PROMPTED] + [("winclip", 0), ("winclip", 2), ("vand", 0), ("vand", 1)]
)
def test_loop_gives_exactly_what_the_method_computes_on_its_own(clip, synth, records, method, shots):
    detector = detector_for(method, clip, shots)
    transform = detector.image_transform()
    normal = load_records(synth, split="train", categories=["disc", "square"])
    references = {c: [r for r in normal if r.category == c] for c in ("disc", "square")}
    seen = 0
    batches = score_categories(detector, records, references=references, batch_size=3, num_workers=0,
                               progress=False)  # fmt: skip
    for category, scored in batches:
        refs = torch.stack([transform(read_image(r.image)) for r in references[category][:shots]]) if shots else None
        for batch in scored:
            images = torch.stack([transform(read_image(path)) for path in batch.items["path"]])
            with torch.no_grad():
                direct = detector(images, category, refs)
            np.testing.assert_array_equal(batch.image_scores, direct.image_scores.numpy())
            np.testing.assert_array_equal(batch.maps, gaussian_blur(direct.anomaly_maps, detector.sigma).numpy())
            seen += len(images)
    assert seen == len(records)


def test_clip_baseline_is_plain_open_clip(clip, records):
    """At the backbone's native size, `clip` equals open_clip's own encoders: pooled CLS with ln_post, last tokens."""
    size = clip.visual.image_size[0]
    detector = prompted(config(size), clip, "clip")
    images = torch.stack([detector.image_transform()(read_image(r.image)) for r in records[:4]])
    with torch.no_grad():
        ours = detector(images, "disc")
        clip.visual.output_tokens = True
        try:
            pooled, tokens = clip.visual(images)
        finally:
            clip.visual.output_tokens = False
        sentences = ["a photo of a normal disc.", "a photo of an anomalous disc."]
        text = F.normalize(clip.encode_text(open_clip.tokenize(sentences)), dim=-1)
        score = (F.normalize(pooled, dim=-1) @ text.T / 0.07).softmax(-1)[:, 1]
        patches = F.normalize(tokens @ clip.visual.proj, dim=-1) @ text.T / 0.07
        grid = size // 14
        probs = patches.softmax(-1).transpose(1, 2).reshape(len(images), 2, grid, grid)
        maps = F.interpolate(probs, size=(size, size), mode="bilinear", align_corners=False)[:, 1]
    torch.testing.assert_close(ours.image_scores, score, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.anomaly_maps, maps, atol=1e-5, rtol=0)


def test_coop_learns_one_context_before_state_and_class_on_plain_clip(clip):
    detector = prompted(config(), clip, "coop")
    prompt, vision = detector.config.prompt, detector.config.vision
    assert (prompt.deep_tokens, prompt.shared_context, vision.dpam_blocks, vision.global_ln_post) == (
        False, True, 0, True)  # fmt: skip
    learner = detector.model.prompt_learner
    assert learner.ctx_neg is None and len(learner.compound_prompts_text) == 0
    tokens = learner._templates(detector.model.text, "disc")[0]
    placeholder = " ".join(["X"] * prompt.n_ctx)
    expected = open_clip.tokenize([f"{placeholder} normal disc.", f"{placeholder} anomalous disc."])
    assert torch.equal(tokens.cpu(), expected)


def test_score_frame_exposes_the_global_cosines_of_any_prompted_method(clip, records):
    learned = score_frame(prompted(config(), clip), records)
    handmade = score_frame(prompted(config(), clip, "clip"), records)
    assert list(learned.category) == [r.category for r in records]
    assert {"cos_normal", "cos_abnormal", "map_max"} <= set(handmade.columns)
    assert not np.allclose(learned.score, handmade.score)


def test_checkpoint_of_one_method_is_refused_by_another(clip, records, tmp_path):
    detector = prompted(config(), clip, "coop")
    result = detector.fit(records, tmp_path / "coop", num_workers=0, progress=False)
    with pytest.raises(CheckpointError, match=r"CoOp \(coop\) checkpoint, but the method is AnomalyCLIP"):
        build_detector("anomalyclip", checkpoint=result.checkpoint, backbone="tiny")
    loaded = build_detector("coop", checkpoint=result.checkpoint, backbone="tiny")
    assert loaded.name == "coop" and torch.equal(
        loaded.model.prompt_learner.ctx_pos, detector.model.prompt_learner.ctx_pos
    )
    with pytest.raises(ConfigError, match="zero-shot only; got shots=2"):
        build_detector("clip", backbone="tiny", shots=2)
    vand = detector_for("vand", clip)
    vand_checkpoint = save_vand_checkpoint(tmp_path / "vand.pt", vand)
    with pytest.raises(CheckpointError, match=r"VAND \(vand\) checkpoint, but the method is AnomalyCLIP"):
        build_detector("anomalyclip", checkpoint=vand_checkpoint, backbone="tiny")
    with pytest.raises(CheckpointError, match=r"AnomalyCLIP \(anomalyclip\) checkpoint, but the method is VAND"):
        official = save_official_checkpoint(tmp_path / "ac.pth", prompted(config(), clip).model.prompt_learner)
        build_detector("vand", checkpoint=official)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_through_test_and_predict(method, clip, synth, tmp_path, capsys):
    backbone, size = ("tiny-winclip", 160) if method == "winclip" else ("tiny", SIZE)
    common = ["--backbone", backbone, "--method", method, "--image-size", str(size), "--no-progress"]
    if METHODS[method].learns:
        detector = detector_for(method, clip)
        train_records = load_records(synth, split="test", categories=["stripes"])[::4]
        common += ["--checkpoint", str(detector.fit(train_records, tmp_path / "fit", num_workers=0,
                                                    progress=False).checkpoint)]  # fmt: skip
    roots = [(synth, "generic", "disc")]
    if SHARED.joinpath("datasets", "mvtec_ad").is_dir():
        roots.append((SHARED / "datasets" / "mvtec_ad", "mvtec", "grid"))
    for root, dataset, category in roots:
        status = main(["test", "--data-root", str(root), "--dataset", dataset, "--categories", category, "--out",
                       str(tmp_path / "t" / dataset), "--num-workers", "0", *common])  # fmt: skip
        out = capsys.readouterr().out
        assert status == 0 and category in out and f"{method}:" in out
    images = synth / "disc" / "test"
    status = main(["predict", str(images), "--out", str(tmp_path / "p"), "--category", "disc", *common])
    assert status == 0 and len(list((tmp_path / "p").glob("*_overlay.png"))) == len(list(images.rglob("*.png")))
