"""Configuration: one definition per setting checks values, makes the CLI flags and checks config files and profiles."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from anomalyclip.cli import build_parser, main
from anomalyclip.config import AnomalyCLIPConfig, PromptConfig, TrainConfig, VisionConfig
from anomalyclip.engine.cli import config_from_args
from anomalyclip.errors import ConfigError
from anomalyclip.reproduce import ReproduceError, load_profile, parse_profile
from anomalyclip.settings import (
    Settings,
    add_flags,
    cli_leaves,
    from_mapping,
    leaves,
    overrides_from_args,
    setting,
    to_plain,
)

REPO = Path(__file__).resolve().parents[1]
FLAGS_BEFORE_GENERATION = {
    "--image-size", "--features-list", "--dpam-blocks", "--dpam-mode", "--n-ctx", "--depth", "--t-n-ctx",
    "--state-word", "--epochs", "--batch-size", "--lr", "--seed", "--lambda-local", "--sigma",
}  # fmt: skip
"""The train flags the README and scripts use, from when they were written by hand."""


def _train_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def test_every_setting_is_defined_and_its_default_is_valid() -> None:
    found = list(leaves(AnomalyCLIPConfig))
    assert {leaf.dotted for leaf in found} >= {"train.epochs", "vision.dpam_mode", "head.temperature", "backbone"}
    for leaf in found:
        assert leaf.spec.help, leaf.dotted
        assert leaf.check(leaf.default) == leaf.default, leaf.dotted
    names = [leaf.name for leaf in found]
    assert len(names) == len(set(names)), "flat names (flags, profile parameters) must be unique across sections"
    assert AnomalyCLIPConfig.from_dict(AnomalyCLIPConfig().to_dict()) == AnomalyCLIPConfig()


def test_a_field_without_a_definition_is_refused() -> None:
    @dataclass
    class Bare(Settings):
        size: int = 3

    with pytest.raises(TypeError, match=r"Bare.size is declared without setting"):
        Bare()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"vision": {"dpam_mode": "xx"}},
            "vision.dpam_mode = 'xx': expected one of ['vv', 'qq', 'kk', 'qq+kk+vv', 'qk+qq+kk+vv']",
        ),
        ({"head": {"temperature": -1}}, "head.temperature = -1: expected a number > 0"),
        ({"train": {"epochs": "15"}}, "train.epochs = '15': expected an integer >= 1"),
        ({"train": {"epochs": True}}, "train.epochs = True: expected an integer >= 1"),
        ({"train": {"batch_size": 0}}, "train.batch_size = 0: expected an integer >= 1"),
        ({"train": {"lr": float("inf")}}, "train.lr = inf: expected a number > 0"),
        ({"train": {"betas": [0.5]}}, "train.betas = [0.5]: expected a list of 2 numbers each >= 0 and < 1"),
        ({"vision": {"features_list": []}}, "vision.features_list = []: expected a list of integers each >= 1"),
        ({"vision": {"features_list": [6, 0]}}, "vision.features_list = [6, 0]: expected a list of integers"),
        ({"prompt": {"state_word": ""}}, "prompt.state_word = '': expected a string, not empty"),
        ({"pretrained": 3}, "pretrained = 3: expected a string or null"),
        ({"prompt": {"n_ctx": 2}}, "prompt.t_n_ctx = 4: expected at most prompt.n_ctx (2)"),
        ({"prompt": 5}, "prompt: expected a mapping of settings, got int"),
        ({"trian": {}}, "unknown AnomalyCLIPConfig key(s) ['trian']"),
        ({"train": {"epoch": 3}}, "unknown TrainConfig key(s) ['epoch'] in section 'train'"),
    ],
)
def test_bad_values_name_the_field_the_value_and_what_is_allowed(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AnomalyCLIPConfig.from_dict(data)
    assert message in str(caught.value)


def test_values_are_normalised_and_checked_on_replace_too() -> None:
    config = AnomalyCLIPConfig.from_dict({"vision": {"features_list": [6, 12]}, "train": {"lr": 1, "betas": [0, 0.9]}})
    assert config.vision.features_list == (6, 12) and config.train.betas == (0.0, 0.9)
    assert isinstance(config.train.lr, float)
    with pytest.raises(ConfigError, match=r"vision.image_size = -5"):
        dataclasses.replace(config.vision, image_size=-5)
    assert PromptConfig(n_ctx=2, t_n_ctx=4, deep_tokens=False).t_n_ctx == 4, "the bound holds only with deep tokens"


def test_cli_flags_are_the_generated_ones() -> None:
    parser = _train_parser()
    generated = {f"--{leaf.name.replace('_', '-')}" for leaf in cli_leaves(AnomalyCLIPConfig)}
    group = next(g for g in parser._action_groups if g.title.startswith("configuration"))
    assert {s for a in group._group_actions for s in a.option_strings} == generated
    leaf_names = {leaf.name for leaf in leaves(AnomalyCLIPConfig)} - {"backbone", "pretrained"}
    elsewhere = {s for a in parser._actions if a not in group._group_actions and a.dest in leaf_names
                 for s in a.option_strings}  # fmt: skip
    assert not elsewhere, f"hand-written flags for configuration settings: {elsewhere}"
    assert generated >= FLAGS_BEFORE_GENERATION


def test_flags_reach_the_configuration(tmp_path: Path) -> None:
    config_file = tmp_path / "recipe.yaml"
    config_file.write_text("train: {epochs: 3, lr: 1e-4}\nvision: {features_list: [6, 12, 18, 24]}\n")
    argv = ["train", "--data-root", str(tmp_path), "--config", str(config_file), "--epochs", "2", "--dpam-mode", "qq",
            "--features-list", "12", "24", "--backbone", "tiny"]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv))
    assert config.train.epochs == 2 and config.train.lr == 1e-4, "a flag overrides the file; YAML 1e-4 is a float"
    assert config.vision.features_list == (12, 24) and config.vision.dpam_mode == "qq"
    assert config.backbone == "tiny" and config.pretrained is None
    assert config.train.batch_size == TrainConfig().batch_size


def test_a_config_file_written_from_a_config_reads_back_equal(tmp_path: Path) -> None:
    config = AnomalyCLIPConfig(vision=VisionConfig(image_size=224, features_list=(6, 12)), pretrained=None)
    for name, text in (("c.yaml", yaml.safe_dump(to_plain(config))), ("c.json", json.dumps(to_plain(config)))):
        (tmp_path / name).write_text(text)
        assert AnomalyCLIPConfig.from_file(tmp_path / name) == config


@pytest.mark.parametrize(
    ("extra", "content", "expected"),
    [
        (["--epochs", "-1"], None, "train.epochs = -1: expected an integer >= 1"),
        (["--lr", "0"], None, "train.lr = 0.0: expected a number > 0"),
        ([], "train:\n  epochs: '15'\n", "bad.yaml: train.epochs = '15': expected an integer >= 1"),
        ([], "vision: {dpam_mode: xx}\n", "bad.yaml: vision.dpam_mode = 'xx'"),
        ([], "train: [1, 2\n", "bad.yaml is not valid YAML/JSON"),
        ([], "- 1\n", "bad.yaml must hold a mapping of configuration sections, got list"),
    ],
)
def test_configuration_errors_end_the_cli_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], content: str | None, expected: str
) -> None:
    if content is not None:
        (tmp_path / "bad.yaml").write_text(content)
        extra = ["--config", str(tmp_path / "bad.yaml")]
    status = main(["train", "--data-root", str(tmp_path), "--backbone", "tiny", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert status == 2 and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_generic_flags_for_any_settings_class() -> None:
    """What a method's own configuration gets: bools as --x/--no-x, optional values, tuples, a prefix."""

    @dataclass(frozen=True)
    class Window(Settings):
        section: ClassVar[str] = "winclip"
        scales: tuple[int, ...] = setting((2, 3), "window sizes in patches", ge=1, cli=True)
        harmonic: bool = setting(True, "harmonic aggregation", cli=True)
        name: str | None = setting(None, "a label", cli=True)
        hidden: float = setting(0.5, "not on the command line", ge=0, le=1)

    parser = argparse.ArgumentParser()
    add_flags(parser, Window, prefix="win_")
    args = parser.parse_args(["--win-scales", "1", "4", "--no-win-harmonic"])
    overrides = overrides_from_args(args, Window, prefix="win_")
    assert overrides == {"scales": (1, 4), "harmonic": False}
    assert from_mapping(Window, overrides) == Window(scales=(1, 4), harmonic=False)
    assert overrides_from_args(parser.parse_args([]), Window, prefix="win_") == {}
    with pytest.raises(ConfigError, match=r"winclip.scales = \(0,\): expected a list of integers each >= 1"):
        from_mapping(Window, overrides_from_args(parser.parse_args(["--win-scales", "0"]), Window, prefix="win_"))
    with pytest.raises(ConfigError, match=r"winclip.hidden = 2: expected a number >= 0 and <= 1"):
        Window(hidden=2)


def test_profile_parameters_are_checked_as_configuration() -> None:
    base = {"backbone": "tiny", "image_size": 224}
    assert parse_profile({"parameters": base, "notebooks": ["a"]}, "p", "p.yaml").parameters["image_size"] == 224
    with pytest.raises(ReproduceError, match=r"p.yaml: parameter epochs: train.epochs = '8': expected an integer"):
        parse_profile({"parameters": {**base, "epochs": "8"}, "notebooks": ["a"]}, "p", "p.yaml")
    with pytest.raises(ReproduceError, match=r"p.yaml: 06: parameter image_size: vision.image_size = -1"):
        parse_profile({"parameters": base, "notebooks": [{"name": "06", "parameters": {"image_size": -1}}]}, "p",
                      "p.yaml")  # fmt: skip


def test_profiles_read_numbers_as_config_files_do(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("parameters: {backbone: tiny, lr: 1e-3}\nnotebooks: [a]\n")
    assert load_profile(tmp_path / "mine.yaml").parameters["lr"] == 1e-3


def test_notebook_parameters_that_are_settings_have_valid_defaults() -> None:
    import papermill

    by_name = {leaf.name: leaf for leaf in leaves(AnomalyCLIPConfig)}
    checked = 0
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        for name, parameter in papermill.inspect_notebook(str(notebook)).items():
            if name in by_name:
                by_name[name].check(ast.literal_eval(parameter["default"]))
                checked += 1
    assert checked >= len(list((REPO / "notebooks").glob("*.ipynb"))), "each notebook sets at least one setting"


def test_building_the_command_line_loads_no_heavy_module() -> None:
    code = (
        "import sys, anomalyclip.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'open_clip', 'pandas', 'matplotlib', 'papermill') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"
