"""WinCLIP reproduces anomalib 2.7.0's WinClipModel on the shared bundle, and behaves as a detector."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from support import require_shared

from anomalyclip.conformance import _read_json
from anomalyclip.conformance_winclip import bundle_config, check_winclip_bundle
from anomalyclip.errors import BackboneError, ConfigError, DataError, InputSizeError
from anomalyclip.methods.winclip import (
    WinCLIP,
    WinCLIPConfig,
    harmonic_aggregation,
    upsample,
    window_indices,
)


@pytest.fixture(scope="module")
def bundle():
    return require_shared("conformance", "winclip")


@pytest.fixture(scope="module")
def tiny_config(bundle) -> WinCLIPConfig:
    """The bundle's settings: a tiny random CLIP with ViT-B/16+'s 240 px, 15 x 15 grid."""
    return bundle_config(bundle, _read_json(bundle / "config.json"))


@pytest.fixture(scope="module")
def detector(tiny_config) -> WinCLIP:
    return WinCLIP.from_config(tiny_config)


def test_bundle_conformance_passes(conformance_dir):
    report = check_winclip_bundle(conformance_dir / "winclip")
    failed = [c for c in report.checks if not c.ok]
    assert failed == [] and report.passed
    keys = set(np.load(conformance_dir / "winclip" / "expected.npz").files)
    assert keys <= {c.name for c in report.checks}


def test_an_altered_expectation_fails_by_name(bundle, tmp_path):
    altered = tmp_path / "altered"
    altered.mkdir()
    for item in bundle.iterdir():
        if item.name != "expected.npz":
            (altered / item.name).symlink_to(item)
    data = dict(np.load(bundle / "expected.npz"))
    data["fs_k1_map"] = data["fs_k1_map"] + 1e-3
    np.savez(altered / "expected.npz", **data)
    report = check_winclip_bundle(altered)
    assert not report.passed
    assert [c.name for c in report.checks if not c.ok] == ["fs_k1_map"]


def test_bundle_settings_come_from_its_config(bundle, tmp_path):
    raw = _read_json(bundle / "config.json")
    raw.update(scales=[3], temperature=0.05, image_size=[224, 224], clip_weights="other.pt")
    config = bundle_config(tmp_path, raw)
    assert (config.scales, config.temperature, config.image_size) == ((3,), 0.05, 224)
    assert config.pretrained == str(tmp_path / "other.pt") and config.backbone.endswith("model_config.json")


def test_forward_equals_score_of_prepare(detector):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, 240, 240, generator=generator)
    references = torch.randn(1, 3, 240, 240, generator=generator)
    few_shot = WinCLIP(detector.clip, dataclasses.replace(detector.config, k_shot=1))
    scores = {}
    for model, refs in ((detector, None), (few_shot, references)):
        direct = model(images, "screw", refs)
        prepared = model.prepare("screw", refs)
        scored = model.score(images, prepared)
        assert torch.equal(direct.image_scores, scored.image_scores)
        assert torch.equal(direct.anomaly_maps, scored.anomaly_maps)
        assert scored.anomaly_maps.shape == (1, 240, 240) and scored.image_scores.shape == (1,)
        maps = model.grid_maps(model.encode(images), prepared)
        assert torch.equal(upsample(maps.grid_map, 240), scored.anomaly_maps)
        scores[model.shots] = scored.image_scores
    assert prepared.memory.patches.shape == (1, 225, 128)
    assert not torch.equal(scores[0], scores[1])


def test_few_shot_needs_enough_references(detector):
    two_shot = WinCLIP(detector.clip, dataclasses.replace(detector.config, k_shot=2))
    with pytest.raises(DataError, match="needs 2 .*found 0"):
        two_shot.prepare("grid", None)
    with pytest.raises(DataError, match="needs 2 .*found 1"):
        two_shot.prepare("grid", torch.zeros(1, 3, 240, 240))
    assert two_shot.shots == 2 and two_shot.sigma == 0.0


def test_image_sizes_the_backbone_cannot_take(detector):
    with pytest.raises(InputSizeError, match="nearest valid size is 240"):
        WinCLIP(detector.clip, dataclasses.replace(detector.config, image_size=224))
    with pytest.raises(ConfigError, match=r"allowed window sizes are 1\.\.15"):
        WinCLIP(detector.clip, dataclasses.replace(detector.config, scales=(2, 16)))
    with pytest.raises(InputSizeError, match="expected .*240, 240"):
        detector.score(torch.zeros(1, 3, 224, 224), detector.prepare("grid"))


@pytest.mark.parametrize(
    ("field", "value"), [("k_shot", -1), ("temperature", 0.0), ("scales", ()), ("scales", (0, 2)), ("image_size", 0)]
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"winclip.{field}="):
        WinCLIPConfig(**{field: value})


def test_windows_and_harmonic_aggregation_by_hand():
    windows = window_indices((2, 3), 2)
    assert windows.T.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5]]
    maps = harmonic_aggregation(torch.tensor([[1.0, 0.5], [0.0, 0.5]]), windows, (2, 3))
    expected_first = torch.tensor([[1.0, 2 / 3, 0.5], [1.0, 2 / 3, 0.5]])
    torch.testing.assert_close(maps[0], expected_first)
    # a window scored 0 makes every patch it covers 0 (1/0 = inf, then inf -> 0), as in the reference
    assert maps[1].tolist() == [[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]]


def test_describe_records_the_settings(detector):
    described = detector.describe()
    assert described["method"] == "winclip" and described["scales"] == (2, 3) and described["k_shot"] == 0
    json.dumps(described)


def test_a_missing_model_config_is_a_backbone_error(tmp_path):
    with pytest.raises(BackboneError, match="none.json does not exist"):
        WinCLIP.from_config(WinCLIPConfig(backbone=str(tmp_path / "none.json"), pretrained=None))
