"""Ordinary mistakes end with exit status 2 and one line naming the value or file, before any work; -v adds the
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import require_shared, tiny_model

from anomalyclip.checkpoint import save_checkpoint
from anomalyclip.cli import main
from anomalyclip.data.synth import make_synthetic_dataset


@pytest.fixture(scope="module")
def checkpoint(clip, tmp_path_factory):
    model = tiny_model(clip)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "c.pt", model.prompt_learner, model.config)


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("file") / "results.txt"
    path.write_text("not a folder")
    return path


def one_line_error(capsys, argv, *expected: str) -> str:
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_training_values(synth, tmp_path, capsys):
    common = ["train", "--data-root", synth, "--categories", "disc", "--backbone", "tiny", "--no-progress"]
    for flag, value in (("--epochs", 0), ("--epochs", -1), ("--batch-size", 0)):
        one_line_error(capsys, [*common, flag, value, "--out", tmp_path / "run"], flag, str(value))
    assert not (tmp_path / "run" / "epoch_0.pt").exists()


def test_inference_values(synth, checkpoint, tmp_path, capsys):
    image = synth / "disc" / "test" / "crack" / "000.png"
    predict = ["predict", image, "--checkpoint", checkpoint, "--backbone", "tiny", "--out", tmp_path / "p"]
    bad = [("--threshold", "-5"), ("--threshold", "7"), ("--threshold", "nan")]
    bad += [("--pixel-threshold", "-1"), ("--pixel-threshold", "nan"), ("--pixel-threshold", "inf")]
    for flag, value in bad:
        one_line_error(capsys, [*predict, flag, value], flag, str(float(value)))
    one_line_error(capsys, [*predict, "--normal", image, "--threshold", "0.5"], "--normal", "--threshold")
    one_line_error(capsys, [*predict, "--batch-size", "0"], "--batch-size", "0")
    test = ["test", "--data-root", synth, "--categories", "disc", "--checkpoint", checkpoint, "--backbone", "tiny"]
    one_line_error(capsys, [*test, "--batch-size", "0", "--out", tmp_path / "t"], "--batch-size", "0")


def test_an_output_that_is_a_file_or_not_writable(synth, checkpoint, a_file, tmp_path, capsys, monkeypatch):
    image = synth / "disc" / "test" / "crack" / "000.png"
    data = ["--data-root", synth, "--categories", "disc", "--backbone", "tiny", "--no-progress"]
    for argv in (
        ["train", *data],
        ["test", *data, "--checkpoint", checkpoint],
        ["predict", image, "--checkpoint", checkpoint, "--backbone", "tiny"],
        ["reproduce", "--notebooks", "01"],
    ):
        one_line_error(capsys, [*argv, "--out", a_file], "--out", str(a_file), "a file is in the way")
        one_line_error(capsys, [*argv, "--out", a_file / "sub"], f"({a_file} is a file)")
    read_only = tmp_path / "read_only"

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "touch", denied)  # a folder the user may not write to (the tests may run as root)
    for argv in (["train", *data], ["predict", image, "--checkpoint", checkpoint, "--backbone", "tiny"]):
        one_line_error(capsys, [*argv, "--out", read_only], f"--out {read_only} is not writable (Permission denied)")


@pytest.mark.slow
def test_a_bad_image_inside_a_loader_worker(checkpoint, tmp_path, capsys):
    root = make_synthetic_dataset(tmp_path / "ds", categories=["disc"], n_train=1, n_test_good=1, n_test_defect=2,
                                  image_size=32)  # fmt: skip
    broken = root / "disc" / "test" / "good" / "000.png"
    broken.write_bytes(broken.read_bytes()[:60])
    argv = ["test", "--data-root", root, "--checkpoint", checkpoint, "--backbone", "tiny", "--image-size", "112",
            "--num-workers", "1", "--no-progress", "--out", tmp_path / "out"]  # fmt: skip
    err = one_line_error(capsys, argv, str(broken), "unreadable or truncated image")
    assert err.startswith(f"anomalyclip test: error: {broken}: ")
    assert main(["-v", *map(str, argv)]) == 2
    verbose = capsys.readouterr().err
    assert "Traceback" in verbose and "DataLoader worker" in verbose


def test_a_corrupt_expected_npz(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_bytes(require_shared("conformance", "nodpam", "config.json").read_bytes())
    (bundle / "expected.npz").write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(capsys, ["conformance", bundle], str(bundle / "expected.npz"), "not a readable .npz")
