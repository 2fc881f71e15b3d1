"""VAND (APRIL-GAN): conformance with the authors' code, the detector contract, configuration, checkpoints, fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalyclip.backbone import uses_quick_gelu
from anomalyclip.conformance_vand import bundle_vand_config, check_vand_bundle
from anomalyclip.data import load_records
from anomalyclip.data.synth import make_synthetic_dataset
from anomalyclip.errors import CheckpointError, ConfigError, DataError, InputSizeError, OutputError
from anomalyclip.methods.vand import (
    CHECKPOINT_KEY,
    VAND,
    VANDConfig,
    checkpoint_config,
    load_checkpoint,
    mosaic,
    resolve_quick_gelu,
    save_checkpoint,
    save_official_checkpoint,
)

SIZE = 56
CATEGORY = "stripes"


def tiny_config(**overrides) -> VANDConfig:
    return VANDConfig(backbone="tiny", pretrained=None, image_size=SIZE, **overrides)


@pytest.fixture(scope="module")
def few_shot_model() -> VAND:
    return VAND.from_config(tiny_config(k_shot=2))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


# --- conformance with the authors' code ----------------------------------------------------------------------------


def test_shared_bundle_passes(conformance_dir):
    bundle = conformance_dir / "vand"
    report = check_vand_bundle(bundle)
    failed = [(c.name, c.max_abs, c.tol) for c in report.checks if not c.ok]
    assert failed == [] and report.passed
    names = {c.name for c in report.checks}
    assert set(np.load(bundle / "expected.npz").files) <= names
    assert {"inputs_images", "inputs_masks", "activation", "model_config", "prompt_sentences_grid"} <= names


def test_an_altered_bundle_fails_naming_the_checks(conformance_dir, tmp_path):
    """An expectation moved by 1e-3, a wrong activation setting and an unknown array each fail, and nothing else."""
    source = conformance_dir / "vand"
    bundle = tmp_path / "vand"
    bundle.mkdir()
    for path in source.iterdir():
        if path.name not in ("expected.npz", "config.json"):
            (bundle / path.name).symlink_to(path)
    data = dict(np.load(source / "expected.npz"))
    data["anomaly_map"] = data["anomaly_map"] + 1e-3
    data["mystery"] = np.zeros(3)
    np.savez(bundle / "expected.npz", **data)
    raw = json.loads((source / "config.json").read_text())
    raw["activation"] = "QuickGELU"
    (bundle / "config.json").write_text(json.dumps(raw))
    report = check_vand_bundle(bundle)
    assert not report.passed
    assert {c.name for c in report.checks if not c.ok} == {"anomaly_map", "activation", "mystery"}


def test_bundle_settings_come_from_its_config(conformance_dir, tmp_path):
    source = conformance_dir / "vand"
    config, raw = bundle_vand_config(source)
    assert (config.image_size, config.features_list, config.k_shot, config.scale) == (518, (6, 12, 18, 24), 1, 100.0)
    assert Path(config.backbone) == source / "clip_tiny_open_clip.pt" and config.betas == (0.5, 0.999)
    bundle = tmp_path / "other"
    bundle.mkdir()
    (bundle / "clip_tiny_open_clip.pt").symlink_to(source / "clip_tiny_open_clip.pt")
    raw.update(image_size=336, features_list=[12, 24], few_shot_features=[24], k_shot=4, scale=50.0, seed=7)
    raw["optimiser"] = {**raw["optimiser"], "lr": 0.01, "betas": [0.9, 0.99]}
    (bundle / "config.json").write_text(json.dumps(raw))
    other, _ = bundle_vand_config(bundle)
    assert (other.image_size, other.features_list, other.few_shot_features, other.k_shot) == (336, (12, 24), (24,), 4)
    assert (other.scale, other.lr, other.betas, other.seed) == (50.0, 0.01, (0.9, 0.99), 7)


# --- the detector contract ---------------------------------------------------------------------------------------


def test_forward_equals_score_of_prepare(few_shot_model, images):
    references = images[:2]
    direct = few_shot_model(images, CATEGORY, references)
    prepared = few_shot_model.prepare(CATEGORY, references)
    staged = few_shot_model.score(images, prepared)
    assert direct.image_scores.shape == (3,) and direct.anomaly_maps.shape == (3, SIZE, SIZE)
    torch.testing.assert_close(direct.image_scores, staged.image_scores, rtol=0, atol=0)
    torch.testing.assert_close(direct.anomaly_maps, staged.anomaly_maps, rtol=0, atol=0)


def test_few_shot_map_is_zero_shot_map_plus_distances(few_shot_model, images):
    """A reference scored against itself has distance ~0, so its few-shot map equals the zero-shot map; other images
    get a positive distance on top, and the zero-shot map sums one probability per block."""
    prepared = few_shot_model.prepare(CATEGORY, images[:2])
    features = few_shot_model.encode(images)
    zero = few_shot_model.zero_shot_map(features, prepared.text)
    combined = few_shot_model.score(images, prepared).anomaly_maps
    blocks = len(few_shot_model.config.features_list)
    assert zero.min() >= 0 and zero.max() <= blocks
    torch.testing.assert_close(combined[:2], zero[:2], rtol=0, atol=1e-5)
    assert (combined[2] - zero[2]).min() > 1e-3


def test_few_shot_needs_enough_references(few_shot_model, images):
    with pytest.raises(DataError, match=r"needs 2 normal reference.*found 0"):
        few_shot_model.prepare(CATEGORY, None)
    with pytest.raises(DataError, match=r"needs 2 normal reference.*found 1"):
        few_shot_model.prepare(CATEGORY, images[:1])


def test_few_shot_image_score_normalises_map_maxima_over_the_category(few_shot_model):
    scores = torch.tensor([0.2, 0.4, 0.6])
    final = few_shot_model.finalize_scores(scores, torch.tensor([1.0, 3.0, 2.0]))
    torch.testing.assert_close(final, torch.tensor([0.1, 0.7, 0.55], dtype=torch.float64))
    flat = few_shot_model.finalize_scores(scores, torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(flat, 0.5 * scores.double())


def test_zero_shot_detector_settings():
    model = VAND.from_config(tiny_config())
    assert model.shots == 0 and model.sigma == 0.0 and model.learns and model.name == "vand"
    scores = torch.tensor([0.3, 0.1])
    assert model.finalize_scores(scores, torch.tensor([5.0, 1.0])) is scores
    described = model.describe()
    assert described["method"] == "vand" and described["config"]["features_list"] == [6, 12, 18, 24]
    assert described["activation"] == "gelu"


def test_image_size_the_backbone_cannot_take_names_the_nearest():
    with pytest.raises(InputSizeError, match=r"520.*patch size 14.*518 and 532"):
        VAND.from_config(VANDConfig(backbone="tiny", pretrained=None, image_size=520))


def test_blocks_beyond_the_backbone_are_rejected():
    with pytest.raises(ConfigError, match=r"features_list has blocks \[25\]"):
        VAND.from_config(tiny_config(features_list=(6, 25)))


# --- activation ----------------------------------------------------------------------------------------------------


def test_activation_follows_the_authors_factory():
    """OpenAI-style weights keep QuickGELU only at their native size; forced choices win; other hub tags keep theirs."""
    assert uses_quick_gelu(VAND.from_config(VANDConfig(backbone="tiny", image_size=336)).clip)
    assert not uses_quick_gelu(VAND.from_config(tiny_config()).clip)
    assert uses_quick_gelu(VAND.from_config(tiny_config(activation="quick_gelu")).clip)
    laion = VANDConfig(backbone="ViT-B-16", pretrained="laion400m_e32", image_size=518)
    assert resolve_quick_gelu(laion, 224, built_quick_gelu=False) is False
    assert resolve_quick_gelu(laion, 224, built_quick_gelu=True) is True
    assert resolve_quick_gelu(VANDConfig(), 336, built_quick_gelu=True) is False
    assert resolve_quick_gelu(VANDConfig(image_size=336), 336, built_quick_gelu=True) is True


# --- configuration -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 0),
        ("features_list", ()),
        ("features_list", (6, 6)),
        ("few_shot_features", (0,)),
        ("k_shot", -1),
        ("activation", "relu"),
        ("scale", 0.0),
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", -1.0),
        ("betas", (0.5,)),
        ("mosaic_rate", 1.5),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"VANDConfig\.{field} = .*expected"):
        VANDConfig(**{field: value})


def test_config_round_trips_and_knows_the_recipes():
    config = VANDConfig(k_shot=4, features_list=[6, 12])
    assert config.features_list == (6, 12)
    assert VANDConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown VANDConfig key"):
        VANDConfig.from_dict({"bogus": 1})
    visa = VANDConfig.recipe("visa")
    assert (visa.epochs, visa.batch_size, visa.mosaic_rate) == (15, 8, 0.0)
    assert VANDConfig.recipe("mvtec").mosaic_rate == 0.2
    with pytest.raises(ConfigError, match="recipe"):
        VANDConfig.recipe("btad")


# --- checkpoints ---------------------------------------------------------------------------------------------------


def _linear_state(model: VAND) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.linear.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_formats_round_trip(tmp_path):
    source = VAND.from_config(tiny_config(seed=1))
    target = VAND.from_config(tiny_config(seed=2))
    assert not torch.equal(source.linear.fc[0].weight, target.linear.fc[0].weight)

    project = save_checkpoint(tmp_path / "project.pt", source, epoch=3)
    raw = torch.load(project, weights_only=True)
    assert raw["method"] == "vand" and raw["epoch"] == 3 and VANDConfig.from_dict(raw["config"]) == source.config
    assert checkpoint_config(project) == source.config
    load_checkpoint(project, target)
    _assert_same(_linear_state(target), _linear_state(source))

    official = save_official_checkpoint(tmp_path / "official.pth", source)
    raw = torch.load(official, weights_only=True)
    assert list(raw) == [CHECKPOINT_KEY] and sorted(raw[CHECKPOINT_KEY]) == sorted(source.linear.state_dict())
    assert checkpoint_config(official) is None
    other = VAND.from_config(tiny_config(seed=3))
    load_checkpoint(official, other)
    _assert_same(_linear_state(other), _linear_state(source))


def test_loads_the_authors_checkpoint_of_the_bundle(conformance_dir):
    path = conformance_dir / "vand" / "linear_layers_vand_format.pth"
    model = VAND.from_config(tiny_config())
    load_checkpoint(path, model)
    _assert_same(_linear_state(model), torch.load(path, weights_only=True)[CHECKPOINT_KEY])


@pytest.mark.parametrize(
    "content",
    [
        {"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 12, 128)}},
        {"method": "anomalyclip", "config": {}, "state_dict": {"ctx_pos": torch.zeros(1)}},
    ],
    ids=["official-anomalyclip", "project-anomalyclip"],
)
def test_another_methods_checkpoint_is_refused_naming_both(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=r"method 'anomalyclip', not of 'vand'"):
        load_checkpoint(path, VAND.from_config(tiny_config()))


def test_mismatched_checkpoints_are_refused(tmp_path):
    two_blocks = VAND.from_config(tiny_config(features_list=(12, 24)))
    path = save_checkpoint(tmp_path / "two.pt", two_blocks)
    with pytest.raises(CheckpointError, match=r"features_list: checkpoint has \(12, 24\)"):
        load_checkpoint(path, VAND.from_config(tiny_config()))
    official = save_official_checkpoint(tmp_path / "two.pth", two_blocks)
    with pytest.raises(CheckpointError, match=r"features_list \[6, 12, 18, 24\]"):
        load_checkpoint(official, VAND.from_config(tiny_config()))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not a VAND checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", two_blocks)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt", two_blocks)


# --- training ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_records(tmp_path_factory):
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("synth") / "data", categories=[CATEGORY], n_train=1, n_test_good=1,
        n_test_defect=3, image_size=64,
    )  # fmt: skip
    return load_records(root, "mvtec", split="test")


def test_fit_lowers_the_loss_and_writes_loadable_checkpoints(train_records, tmp_path):
    model = VAND.from_config(tiny_config(mosaic_rate=0.0))
    before = _linear_state(model)
    result = model.fit(train_records, tmp_path, epochs=3, batch_size=len(train_records), num_workers=0, progress=False)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]
    assert result.checkpoint == tmp_path / "epoch_3.pt"
    assert not torch.equal(before["fc.0.weight"], model.linear.fc[0].weight)
    fresh = VAND.from_config(tiny_config(mosaic_rate=0.0))
    raw = load_checkpoint(result.checkpoint, fresh)
    assert raw["epoch"] == 3 and len(raw["history"]) == 3
    _assert_same(_linear_state(fresh), _linear_state(model))


def test_fit_with_mosaics_runs(train_records, tmp_path):
    model = VAND.from_config(tiny_config(mosaic_rate=1.0))
    result = model.fit(train_records, tmp_path, epochs=1, batch_size=2, num_workers=0, progress=False)
    assert len(result.history) == 2 and all(np.isfinite(row["loss"]) for row in result.history)


def test_fit_without_records_fails(tmp_path):
    with pytest.raises(DataError, match="no training records"):
        VAND.from_config(tiny_config()).fit([], tmp_path)


def test_fit_owns_its_run_folder_and_refuses_what_it_cannot_honour(train_records, tmp_path):
    model = VAND.from_config(tiny_config(mosaic_rate=0.0))
    fit = {"epochs": 1, "batch_size": len(train_records), "num_workers": 0, "progress": False}
    first = model.fit(train_records, tmp_path, **fit).checkpoint.read_bytes()
    with pytest.raises(OutputError, match=r"a previous training run \(epoch_1.pt\); pass --resume .* --overwrite"):
        model.fit(train_records, tmp_path, **fit)
    assert (tmp_path / "epoch_1.pt").read_bytes() == first  # nothing overwritten
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds files that no training run writes \\(notes.txt\\)"):
        model.fit(train_records, tmp_path, overwrite=True, **fit)
    (tmp_path / "notes.txt").unlink()
    assert model.fit(train_records, tmp_path, overwrite=True, **fit).checkpoint == tmp_path / "epoch_1.pt"
    with pytest.raises(ConfigError, match="vand cannot resume"):
        model.fit(train_records, tmp_path, resume=True, **fit)
    with pytest.raises(ConfigError, match=r"cache = 'disk' \(--cache\): vand keeps no feature cache"):
        model.fit(train_records, tmp_path / "other", cache="disk", **fit)
    assert not (tmp_path / "other").exists()


def test_mosaic_places_four_tiles_in_reading_order():
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 90)]
    pairs = []
    for i, colour in enumerate(colours):
        mask = Image.new("L", (4, 3), 255 if i == 1 else 0)
        pairs.append((Image.new("RGB", (4, 3), colour), mask))
    pairs[3] = (pairs[3][0].convert("L"), pairs[3][1])
    image, mask = mosaic(pairs)
    assert image.size == (8, 6) and image.mode == "RGB" and mask.mode == "L"
    pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == colours[0] and tuple(pixels[0, 7]) == colours[1]
    assert tuple(pixels[5, 0]) == colours[2] and tuple(pixels[5, 7]) == colours[3]
    mask_pixels = np.asarray(mask)
    assert mask_pixels[:3, 4:].min() == 255 and mask_pixels.sum() == 255 * 12


def test_training_items_use_the_detectors_transforms(train_records):
    """Mosaic items come out at the detector's size with 0/1 masks covering the tiles' defects."""
    from anomalyclip.data import AnomalyDataset
    from anomalyclip.methods.vand import MosaicDataset

    model = VAND.from_config(tiny_config())
    base = AnomalyDataset(train_records, SIZE, image_transform=model.image_transform(),
                          mask_transform=model.mask_transform())  # fmt: skip
    items = [MosaicDataset(base, 1.0, seed=0, epoch=1)[i] for i in range(len(base))]
    assert all(it["image"].shape == (3, SIZE, SIZE) and it["defect"] == "mosaic" for it in items)
    assert all(set(torch.unique(it["mask"]).tolist()) <= {0.0, 1.0} for it in items)
    again = MosaicDataset(base, 1.0, seed=0, epoch=1)[0]
    assert torch.equal(again["image"], items[0]["image"])


def test_anomalyclip_train_learns_vand_from_the_flags_it_shares(train_records, tmp_path, tmp_path_factory, capsys):
    from anomalyclip.cli import main

    data = train_records[0].image.parents[3]  # <root>/<category>/test/<defect>/<image>
    train = ["train", "--method", "vand", "--data-root", str(data), "--backbone", "tiny", "--image-size", "56",
             "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main([*train, "--epochs", "1", "--batch-size", "2"]) == 0
    saved = torch.load(tmp_path / "epoch_1.pt", weights_only=True)
    assert saved["config"]["epochs"] == 1 and saved["config"]["batch_size"] == 2 and saved["config"]["image_size"] == 56
    for extra, message in ((["--n-ctx", "3"], "--n-ctx: not a setting of vand"),
                           (["--overwrite", "--cache", "disk"], "--cache"),
                           ([], "pass --resume to continue it, --overwrite to replace it"),
                           (["--resume"], "vand cannot resume")):  # fmt: skip
        assert main([*train, *extra]) != 0
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()[-1]) > 20, error
    settings = tmp_path_factory.mktemp("settings") / "vand.yaml"  # not in --out: only run files may be there
    settings.write_text("epochs: 1\nn_ctx: 3\n")
    assert main([*train, "--overwrite", "--config", str(settings)]) != 0
    assert f"{settings}: unknown VANDConfig key(s) ['n_ctx']" in capsys.readouterr().err
