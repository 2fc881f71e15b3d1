"""Training (cache, resume, learning), evaluation, prediction and their command lines on the tiny CLIP."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from support import tiny_model

from anomalyclip.checkpoint import save_checkpoint, save_official_checkpoint
from anomalyclip.cli import main
from anomalyclip.config import TrainConfig, VisionConfig
from anomalyclip.data import load_records
from anomalyclip.engine import FeatureCache, Thresholds, evaluate, load_model, predict, thresholds_from_normals, train
from anomalyclip.engine.training import epoch_order
from anomalyclip.errors import CheckpointError, ConfigError, DataError, OutputError
from anomalyclip.model import AnomalyCLIP

SIZE = 112
make = functools.partial(tiny_model, size=SIZE, epochs=2, batch_size=4)


def params(model: AnomalyCLIP) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.prompt_learner.parameters()]


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_order(10, 111, 3) == epoch_order(10, 111, 3)
    assert epoch_order(10, 111, 3) != epoch_order(10, 111, 4)
    assert sorted(epoch_order(10, 111, 3)) == list(range(10))


@pytest.mark.slow
def test_cached_training_equals_uncached_step_for_step(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["stripes"])[:8]
    runs = {}
    for cache in ("memory", "none"):
        model = make(clip)
        steps = []
        train(model, records, tmp_path / cache, cache=cache, num_workers=0, progress=False,
              on_step=lambda row, m=model, s=steps: s.append(params(m)))  # fmt: skip
        runs[cache] = steps
    assert len(runs["memory"]) == len(runs["none"]) == 4
    for cached, uncached in zip(runs["memory"], runs["none"], strict=True):
        for a, b in zip(cached, uncached, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_resume_after_a_crash_gives_the_uninterrupted_result(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["disc"])[:8]
    straight = make(clip, epochs=3)
    full = train(straight, records, tmp_path / "straight", num_workers=0, progress=False)

    crashing = make(clip, epochs=3)

    def crash(row):
        if row["epoch"] == 2 and row["step"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(crashing, records, tmp_path / "resumed", num_workers=0, progress=False, on_step=crash)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("epoch_*.pt")) == ["epoch_1.pt"]
    resumed = make(clip, epochs=3)
    result = train(resumed, records, tmp_path / "resumed", resume=True, num_workers=0, progress=False)
    for a, b in zip(params(straight), params(resumed), strict=True):
        torch.testing.assert_close(a, b)
    assert [r["total"] for r in result.history] == pytest.approx([r["total"] for r in full.history])
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert {"epoch", "step", "global", "local", "total"} <= set(history[0])


def test_disk_cache_fp16_is_reused_and_rebuilt_on_change(clip, synth, tmp_path):
    from anomalyclip.data import AnomalyDataset

    records = load_records(synth, split="test", categories=["square"])[:6]
    model = make(clip)
    dataset = AnomalyDataset(records, SIZE)
    first = FeatureCache.build(model, dataset, dtype="fp16", directory=tmp_path / "cache", num_workers=0,
                               progress=False)  # fmt: skip
    assert first.global_embedding.dtype == np.float16 and len(first) == 6
    calls = []
    original = model.encode_image
    model.encode_image = lambda x: calls.append(1) or original(x)
    again = FeatureCache.build(model, dataset, dtype="fp16", directory=tmp_path / "cache", progress=False)
    assert calls == [] and np.array_equal(np.asarray(again.patch_tokens[0]), np.asarray(first.patch_tokens[0]))
    FeatureCache.build(model, AnomalyDataset(records[:5], SIZE), dtype="fp16", directory=tmp_path / "cache",
                       num_workers=0, progress=False)  # fmt: skip
    assert calls, "a different image list must rebuild the cache"


@pytest.mark.slow
def test_training_lifts_held_out_pixel_auroc(clip, synth, tmp_path):
    """Random frozen features still carry local information: real gradients through the real loss must use it."""
    train_records = load_records(synth, split="test", categories=["stripes", "disc"])
    held_out = load_records(synth, split="test", categories=["weave", "square"])
    model = make(clip, size=224, epochs=15, batch_size=8)
    before = evaluate(model, held_out, num_workers=0, progress=False).metrics.data.loc["mean", "pixel_auroc"]
    train(model, train_records, tmp_path / "run", num_workers=0, progress=False)
    after = evaluate(model, held_out, num_workers=0, progress=False).metrics.data.loc["mean", "pixel_auroc"]
    assert before < 0.65
    assert after >= 0.75, f"held-out pixel AUROC {after:.3f} (before training {before:.3f})"


def test_evaluation_writes_results_and_figures(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["stripes", "disc"])
    result = evaluate(make(clip), records, out_dir=tmp_path, figures=2, num_workers=0, progress=False)
    assert list(result.metrics.data.index) == ["disc", "stripes", "mean"]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert set(payload["metrics"]["mean"]) >= {"pixel_auroc", "pixel_aupro", "image_auroc", "image_ap"}
    assert (tmp_path / "results.csv").read_text().startswith("category,")
    assert "objects" in (tmp_path / "log.txt").read_text()
    assert len(list((tmp_path / "figures" / "disc").glob("*.png"))) == 2
    image_only = evaluate(make(clip), records, pixel_level=False, num_workers=0, progress=False)
    assert list(image_only.metrics.data.columns) == ["image_auroc", "image_ap"]


def test_predict_writes_overlays_maps_and_scores(clip, synth, tmp_path):
    model = make(clip)
    normals = synth / "disc" / "train" / "good"
    thresholds = thresholds_from_normals(model, [normals])
    predictions = predict(model, [synth / "disc" / "test"], tmp_path, thresholds=thresholds, progress=False)
    test_images = list((synth / "disc" / "test").rglob("*.png"))
    assert len(predictions) == len(test_images)
    first = predictions[0]
    raw = np.load(first.raw_map)
    assert raw.shape == (128, 128) and raw.dtype == np.float32
    assert first.anomalous == (first.score > thresholds.image or first.map_max > thresholds.pixel)
    csv_rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(csv_rows) == len(predictions) + 1
    normal_flags = predict(model, [normals], tmp_path / "normals", thresholds=thresholds, progress=False)
    assert not any(p.anomalous for p in normal_flags), "the max-over-normals rule flags no normal image"


def test_cli_train_test_predict(synth, tmp_path, capsys):
    common = ["--backbone", "tiny", "--num-workers", "0", "--no-progress"]
    assert main(["train", "--data-root", str(synth), "--categories", "stripes", "--image-size", str(SIZE),
                 "--epochs", "1", "--out", str(tmp_path / "run"), *common]) == 0  # fmt: skip
    checkpoint = tmp_path / "run" / "epoch_1.pt"
    assert checkpoint.is_file()
    assert main(["test", "--data-root", str(synth), "--categories", "disc", "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "test"), *common]) == 0  # fmt: skip
    assert "objects" in capsys.readouterr().out
    predict_args = ["--out", str(tmp_path / "pred"), "--threshold", "0.5", "--backbone", "tiny", "--no-progress"]
    assert (
        main(["predict", str(synth / "disc" / "test" / "crack"), "--checkpoint", str(checkpoint), *predict_args]) == 0
    )
    assert (tmp_path / "pred" / "scores.json").is_file()


def test_official_checkpoint_is_usable_by_test_and_predict(clip, synth, tmp_path):
    official = save_official_checkpoint(tmp_path / "epoch_15.pth", make(clip).prompt_learner)
    model = load_model(official, backbone="tiny", image_size=SIZE)
    assert model.config.vision.features_list == (24,) and model.config.vision.dpam_blocks == 19
    options = ["--backbone", "tiny", "--image-size", str(SIZE), "--out", str(tmp_path / "p"), "--no-progress"]
    assert main(["predict", str(synth / "square" / "test" / "spot"), "--checkpoint", str(official), *options]) == 0


def test_checkpoint_that_does_not_match_the_configuration(clip, tmp_path):
    model = make(clip)
    path = save_checkpoint(tmp_path / "c.pt", model.prompt_learner, model.config)
    wanted = model.config.replace(vision=VisionConfig(image_size=SIZE, features_list=(12, 24)))
    with pytest.raises(CheckpointError, match=r"features_list: checkpoint has \(24,\), configuration has \(12, 24\)"):
        load_model(path, config=wanted)


def test_empty_or_bad_data_gives_the_data_layers_error(clip, tmp_path, capsys):
    with pytest.raises(DataError, match="no training images"):
        train(make(clip), [], tmp_path)
    (tmp_path / "empty").mkdir()
    status = main(["train", "--data-root", str(tmp_path / "empty"), "--backbone", "tiny", "--out", str(tmp_path)])
    assert status == 2
    assert "unknown layout" in capsys.readouterr().err


def test_bad_predict_input(clip, tmp_path):
    with pytest.raises(DataError, match="does not exist; expected an image file or a folder"):
        predict(make(clip), [tmp_path / "nope.png"], tmp_path / "out", progress=False)


def test_cli_configuration_errors_are_one_line(synth, tmp_path, capsys):
    status = main(["train", "--data-root", str(synth), "--backbone", "tiny", "--n-ctx", "2", "--t-n-ctx", "4",
                   "--out", str(tmp_path), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and "prompt.t_n_ctx = 4: expected at most prompt.n_ctx (2)" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_disk_cache_follows_file_content_not_names(clip, tmp_path):
    """An image or mask rewritten in place (even with its old size and mtime) rebuilds the cache."""
    from anomalyclip.data import AnomalyDataset, Record

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.bmp", "b.bmp", "other.bmp"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / name)
    mask = folder / "a_mask.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(mask)
    records = [Record(folder / "a.bmp", mask, "thing", "spot", 1, "test"), Record(folder / "b.bmp", None, "thing",
                                                                                  "good", 0, "test")]  # fmt: skip
    model = make(clip)
    calls = []
    original = model.encode_image
    model.encode_image = lambda x: calls.append(1) or original(x)

    def build():
        calls.clear()
        FeatureCache.build(model, AnomalyDataset(records, SIZE), directory=tmp_path / "cache", num_workers=0,
                           progress=False)  # fmt: skip
        return bool(calls)

    assert build() and not build()
    target = folder / "a.bmp"
    before = target.stat()
    target.write_bytes((folder / "other.bmp").read_bytes())  # same size: a BMP of the same shape
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    assert build(), "an image replaced in place must rebuild the cache"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(mask)
    assert build(), "a mask replaced in place must rebuild the cache"
    assert not build()


def test_a_training_run_owns_its_folder(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["disc"])[:4]
    out = tmp_path / "run"
    train(make(clip, epochs=2), records, out, num_workers=0, progress=False)
    with pytest.raises(OutputError, match=r"previous training run \(epoch_1.pt, epoch_2.pt.*--resume.*--overwrite"):
        train(make(clip, epochs=1), records, out, num_workers=0, progress=False)
    train(make(clip, epochs=1), records, out, overwrite=True, num_workers=0, progress=False)
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_1.pt"]
    (out / "notes.txt").write_text("not a training file")
    with pytest.raises(OutputError, match=r"files that no training run writes \(notes.txt\)"):
        train(make(clip, epochs=1), records, out, overwrite=True, num_workers=0, progress=False)
    assert (out / "notes.txt").is_file() and (out / "epoch_1.pt").is_file()
    assert not (out / ".train.lock").exists()


def test_a_second_run_into_the_same_folder_stops_and_a_stale_lock_does_not(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["disc"])[:4]
    out = tmp_path / "run"
    refused = []

    def second_run(row):
        try:
            train(make(clip, epochs=1), records, out, overwrite=True, num_workers=0, progress=False)
        except OutputError as err:
            refused.append(str(err))

    train(make(clip, epochs=2), records, out, num_workers=0, progress=False, on_step=second_run)
    assert len(refused) == 2 and f"in use by a training run (process {os.getpid()}" in refused[0]
    assert torch.load(out / "epoch_2.pt", weights_only=True)["config"]["train"]["epochs"] == 2
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".train.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    train(make(clip, epochs=1), records, out, overwrite=True, num_workers=0, progress=False)
    assert not (out / ".train.lock").exists() and not (out / "epoch_2.pt").exists()


def test_resume_refuses_changed_settings_unless_allowed(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["disc"])[:4]
    out = tmp_path / "run"
    train(make(clip, epochs=1), records, out, num_workers=0, progress=False)
    changed = make(clip, epochs=2, train=TrainConfig(lr=0.5))
    with pytest.raises(ConfigError, match=r"train.lr: run has 0.001, now 0.5\); .*--allow-changes"):
        train(changed, records, out, resume=True, num_workers=0, progress=False)
    assert not (out / "epoch_2.pt").exists()
    result = train(changed, records, out, resume=True, allow_changes=True, num_workers=0, progress=False)
    saved = torch.load(out / "epoch_2.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.5 and saved["config"]["train"]["lr"] == 0.5
    change = {"epoch": 2, "setting": "train.lr", "before": 0.001, "after": 0.5}
    assert result.changes == saved["changes"] == json.loads((out / "changes.json").read_text()) == [change]
    extended = make(clip, epochs=3, train=TrainConfig(lr=0.5))
    assert train(extended, records, out, resume=True, num_workers=0, progress=False).changes == [change]


def test_train_needs_an_epoch_and_a_batch(clip, synth, tmp_path):
    records = load_records(synth, split="test", categories=["disc"])[:4]
    for epochs, batch_size, flag in ((0, 4, "--epochs"), (-1, 4, "--epochs"), (1, 0, "--batch-size")):
        with pytest.raises(ConfigError, match=flag):
            train(make(clip, epochs=epochs, batch_size=batch_size), records, tmp_path, num_workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_figures_have_one_file_per_image(clip, synth, tmp_path):
    """MVTec repeats 000.png in every defect folder; each figure keeps its own file."""
    records = [r for r in load_records(synth, split="test", categories=["disc"]) if r.image.name == "000.png"]
    assert len({r.defect for r in records}) == len(records) > 2
    evaluate(make(clip), records, out_dir=tmp_path, figures=len(records), batch_size=1, num_workers=0, progress=False)
    names = sorted(p.name for p in (tmp_path / "figures" / "disc").glob("*.png"))
    assert len(names) == len(records) and all(any(r.defect in n for n in names) for r in records)


def test_thresholds_are_checked(clip, synth, tmp_path):
    for bad in (dict(image=-5.0), dict(image=7.0), dict(image=float("nan")), dict(pixel=-1.0),
                dict(pixel=float("nan")), dict(pixel=float("inf"))):  # fmt: skip
        with pytest.raises(ConfigError, match="threshold"):
            Thresholds(**bad)
    only_image = Thresholds(image=0.0)
    predictions = predict(make(clip), [synth / "disc" / "test" / "crack"], tmp_path, thresholds=only_image,
                          progress=False)  # fmt: skip
    assert all(p.anomalous == (p.score > 0.0) for p in predictions)
    assert json.loads((tmp_path / "scores.json").read_text())["thresholds"] == {"image": 0.0, "pixel": None}


def test_predict_skip_bad_lists_unreadable_images(clip, synth, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    good = folder / "good.png"
    good.write_bytes((synth / "disc" / "test" / "good" / "000.png").read_bytes())
    bad = folder / "broken.png"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(DataError, match="broken.png: unreadable"):
        predict(make(clip), [folder], tmp_path / "strict", progress=False)
    predictions = predict(make(clip), [folder], tmp_path / "out", skip_bad=True, progress=False)
    assert [p.image for p in predictions] == [str(good)]
    skipped = json.loads((tmp_path / "out" / "scores.json").read_text())["skipped"]
    assert [s["image"] for s in skipped] == [str(bad)] and "unreadable" in skipped[0]["reason"]
    args = ["predict", str(folder), "--checkpoint", str(tmp_path / "c.pt"), "--backbone", "tiny", "--no-progress"]
    model = make(clip)
    save_checkpoint(tmp_path / "c.pt", model.prompt_learner, model.config)
    assert main([*args, "--out", str(tmp_path / "cli")]) == 2
    assert main([*args, "--out", str(tmp_path / "cli"), "--skip-bad"]) == 0
    assert str(good) in capsys.readouterr().out
