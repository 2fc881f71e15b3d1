"""The package reproduces the official implementation's outputs on the shared conformance bundles."""

from __future__ import annotations

import json
import shutil

import pytest
from support import require_shared

from anomalyclip.cli import main
from anomalyclip.conformance import bundle_config, run_conformance

EXPECTED_GROUPS = ("preprocessed", "masks", "text_features", "image_features", "patch_tokens_l24", "anomaly_map",
                   "image_scores", "loss_total", "grad_ctx_pos", "grad_compound_0", "ctx_pos_after_step",
                   "metric_pixel_aupro", "metric_image_ap")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", "nodpam"])
def test_conformance_cli_json_passes(name, capsys):
    bundle = require_shared("conformance", name)
    status = main(["conformance", str(bundle), "--json"])
    report = json.loads(capsys.readouterr().out)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [] and report["passed"] and status == 0
    names = {c["name"] for c in report["checks"]}
    assert set(EXPECTED_GROUPS) <= names
    assert all(set(c) >= {"name", "max_abs", "tol", "ok"} for c in report["checks"])


@pytest.mark.slow
def test_every_expected_array_is_checked():
    bundle = require_shared("conformance", "default")
    import numpy as np

    keys = set(np.load(bundle / "expected.npz").files)
    checked = {c.name for c in run_conformance(bundle).checks}
    assert keys <= checked


def test_bundle_settings_are_read_from_config():
    config, _ = bundle_config(require_shared("conformance", "nodpam"))
    assert config.vision.features_list == (24,) and config.vision.dpam_blocks == 0
    config, _ = bundle_config(require_shared("conformance", "default"))
    assert config.vision.features_list == (6, 12, 18, 24) and config.vision.dpam_blocks == 19


@pytest.mark.slow
def test_a_changed_expectation_fails(tmp_path, capsys):
    """A bundle whose expected output was altered must fail, with the altered check named."""
    import numpy as np

    source = require_shared("conformance", "default")
    bundle = tmp_path / "altered"
    shutil.copytree(source, bundle)
    data = dict(np.load(bundle / "expected.npz"))
    data["image_scores"] = data["image_scores"] + 1e-3
    np.savez(bundle / "expected.npz", **data)
    status = main(["conformance", str(bundle)])
    out = capsys.readouterr().out
    assert status == 1
    assert any(line.startswith("image_scores") and line.endswith("FAIL") for line in out.splitlines())


@pytest.mark.slow
def test_every_array_is_compared_or_reported(tmp_path, capsys):
    """An array the checker does not know fails by name; one it expects but the bundle lacks is reported."""
    import numpy as np

    bundle = tmp_path / "edited"
    shutil.copytree(require_shared("conformance", "nodpam"), bundle)
    data = dict(np.load(bundle / "expected.npz"))
    data["mystery_output"] = np.zeros(3)
    del data["image_scores"]
    np.savez(bundle / "expected.npz", **data)
    (bundle / "config.json").write_text((bundle / "config.json").read_text().replace('"../default/', '"' + str(
        require_shared("conformance", "default")) + "/"))  # fmt: skip
    status = main(["conformance", str(bundle), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1 and not report["passed"]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["mystery_output"] and "unknown array" in failed[0]["note"]
    assert report["missing"] == ["image_scores"]
    assert main(["conformance", str(bundle)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("image_scores") and "not in expected.npz" in line for line in lines)
    assert lines[-1].endswith("1 failed, 1 not in the bundle")


def test_missing_bundle_is_a_clear_error(tmp_path, capsys):
    assert main(["conformance", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "nowhere" in err


@pytest.mark.parametrize("name,method", [("default", "anomalyclip"), ("nodpam", "anomalyclip"),
                                         ("winclip", "winclip"), ("vand", "vand")])  # fmt: skip
def test_bundle_method_is_read_from_its_config(name, method):
    from anomalyclip.conformance import bundle_method

    assert bundle_method(require_shared("conformance", name)) == method


def test_a_bundle_of_unknown_reference_code_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"official_code": "someone/else @ 123"}))
    assert main(["conformance", str(tmp_path)]) == 2
    assert "names reference code 'someone/else @ 123'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name,checks", [("winclip", 50), ("vand", 70)])
def test_other_methods_bundles_pass_through_the_cli(name, checks, capsys):
    bundle = require_shared("conformance", name)
    assert main(["conformance", str(bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and len(report["checks"]) >= checks
