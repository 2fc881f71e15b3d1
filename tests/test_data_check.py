"""`anomalyclip data check`: every planted problem is reported by file name in one run, with counts by kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_data_layouts import make_mvtec, write_image, write_mask

from anomalyclip.cli import main


def run(capsys, *argv):
    code = main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean(tmp_path):
    return make_mvtec(tmp_path / "ds", "widget", defects=("scratch",))


def plant_truncated(root):
    path = root / "widget" / "test" / "scratch" / "001.png"
    data = path.read_bytes()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: len(data) // 2 + 100])
    return path


def plant_mask_size(root):
    return write_mask(root / "widget" / "ground_truth" / "scratch" / "000_mask.png", size=(16, 16))


def plant_missing_mask(root):
    return write_image(root / "widget" / "test" / "scratch" / "002.png")


def plant_empty_category(root):
    (root / "gadget" / "test" / "good").mkdir(parents=True)
    return root / "gadget"


PLANTS = {
    "unreadable or truncated image": plant_truncated,
    "mask is 16x16 but image": plant_mask_size,
    "anomalous image has no mask": plant_missing_mask,
    "category has no images": plant_empty_category,
}


def test_clean_dataset_passes(clean, capsys):
    code, out, _ = run(capsys, "check", clean, "--dataset", "mvtec")
    assert code == 0 and out.rstrip().endswith("OK")
    assert "widget" in out and "anomalous" in out


@pytest.mark.parametrize("what", list(PLANTS))
def test_each_problem_is_named_and_counted(clean, capsys, what):
    planted = PLANTS[what](clean)
    code, out, err = run(capsys, "check", clean, "--dataset", "mvtec")
    assert code == 1 and err == ""
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1 and what in problems[0] and str(planted) in problems[0]
    assert out.rstrip().splitlines()[-1].startswith("1 problems: 1 ")


def test_every_problem_is_reported_in_one_run(clean, capsys):
    planted = {what: plant(clean) for what, plant in PLANTS.items()}
    code, out, _ = run(capsys, "check", clean, "--dataset", "mvtec")
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    for what, path in planted.items():
        assert any(what in line and str(path) in line for line in problems), what
    skipped = out.split("skipped ")[1].splitlines()
    assert skipped[0] == "3 images:"
    assert {line.strip() for line in skipped[1:4]} == {
        str(planted[k]) for k in ("unreadable or truncated image", "anomalous image has no mask")
    } | {str(clean / "widget" / "test" / "scratch" / "000.png")}
    summary = out.rstrip().splitlines()[-1]
    assert summary.startswith("4 problems: ")
    for kind in ("1 unreadable image", "1 mask size mismatch", "1 missing mask", "1 empty category"):
        assert kind in summary, summary


def test_skip_bad_is_for_the_commands_that_use_the_data(clean, capsys):
    plant_missing_mask(clean)
    with pytest.raises(SystemExit):
        run(capsys, "check", clean, "--skip-bad")
    code, _, err = run(capsys, "meta-json", clean, "--dataset", "mvtec")
    assert code == 2 and "anomalous image has no mask" in err
    code, out, _ = run(capsys, "meta-json", clean, "--dataset", "mvtec", "--skip-bad")
    assert code == 0 and "wrote 6 records" in out


def test_unknown_layout(tmp_path, capsys):
    write_image(tmp_path / "stray.png")
    code, _, err = run(capsys, "check", tmp_path, "--dataset", "mvtec")
    assert code == 2 and "unknown layout" in err and "<category>/ground_truth" in err and "meta.json" in err
    code, _, err = run(capsys, "check", tmp_path)
    assert code == 2 and "tried visa" in err and err.count("\n") == 1


def test_orphan_mask_and_category_filter(clean, capsys):
    write_mask(clean / "widget" / "ground_truth" / "scratch" / "009_mask.png")
    code, out, _ = run(capsys, "check", clean, "--split", "test", "--category", "widget")
    assert code == 1 and "mask without image" in out and "009_mask.png" in out


def test_meta_json_command(clean, capsys):
    code, out, _ = run(capsys, "meta-json", clean, "--dataset", "mvtec")
    meta = json.loads((clean / "meta.json").read_text())
    assert code == 0 and len(meta["test"]["widget"]) == 4 and len(meta["train"]["widget"]) == 2


def test_prepare_sdd_command(tmp_path, capsys):
    (tmp_path / "kos01").mkdir()
    Image.new("L", (20, 90), 120).save(tmp_path / "kos01" / "Part0.jpg")
    Image.new("L", (20, 90), 0).save(tmp_path / "kos01" / "Part0_label.bmp")
    code, _, _ = run(capsys, "prepare-sdd", tmp_path, tmp_path / "out")
    assert code == 0 and len(list((tmp_path / "out" / "electrical commutators" / "test" / "good").iterdir())) == 3


def test_synth_command_makes_a_checkable_dataset(tmp_path, capsys):
    sizes = ["--n-train", 1, "--n-test-good", 1, "--n-test-defect", 2, "--image-size", 32]
    code, _, err = run(capsys, "synth", tmp_path, "--categories", "disc", *sizes)
    assert code == 0, err
    code, out, _ = run(capsys, "check", tmp_path, "--dataset", "generic")
    assert code == 0 and out.rstrip().endswith("OK")


def test_download_list(capsys):
    code, out, _ = run(capsys, "download", "--list")
    assert code == 0 and "mvtec" in out.lower()
