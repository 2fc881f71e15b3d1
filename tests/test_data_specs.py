"""Dataset specifications: every other table of dataset facts is derived from `anomalyclip.data.specs`."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomalyclip import paper, studies
from anomalyclip.data import DATASETS
from anomalyclip.data.download import DATASET_SOURCES, download_dataset, get_source
from anomalyclip.data.specs import (
    ALIASES,
    DATASET_SPECS,
    PAPER_DATASETS,
    SPECS,
    STAND_INS,
    find_spec,
    markdown_table,
    name_key,
    readme_with_table,
)
from anomalyclip.data.synth import make_synthetic_dataset
from anomalyclip.errors import DataError

README = Path(__file__).resolve().parents[1] / "data" / "README.md"


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    assert readme_with_table(text) == text, "run: python -m anomalyclip.data.specs data/README.md"
    assert markdown_table() in text
    for spec in SPECS:
        assert f"| `{spec.name}` | {spec.title}" in text, spec.name


def test_the_readme_check_sees_a_changed_fact() -> None:
    text = README.read_text()
    changed = text.replace("| `covid` | COVID-19 Radiography Database", "| `covid` | COVID-19")
    assert changed != text and readme_with_table(changed) == text


def test_the_registry_downloads_and_paper_are_the_specs() -> None:
    assert DATASETS is DATASET_SPECS
    assert list(PAPER_DATASETS) == list(paper.DATASET_NAMES) and len(PAPER_DATASETS) == 17
    for name in PAPER_DATASETS:
        spec = DATASET_SPECS[name]
        assert DATASET_SOURCES[name] is spec and get_source(spec.title) is spec
        assert paper.DATASET_NAMES[name] == spec.paper_name and get_source(spec.paper_name) is spec
        assert spec.domain in ("industrial", "medical") and spec.licence and spec.homepage.startswith("http")
        assert spec.archives or "{target}" in spec.instructions, name
    assert set(paper.TABLE1["image"]) | set(paper.TABLE2) == set(PAPER_DATASETS)
    assert {n for n in PAPER_DATASETS if DATASET_SPECS[n].domain == "industrial"} == set(paper.TABLE1["image"])
    assert {n for n, (level, _) in paper.TABLE2.items() if level == "image"} == {
        n for n in paper.TABLE2 if not DATASET_SPECS[n].pixel_level
    }, "Table 2 reports image metrics exactly for the medical sets without masks"


def test_every_paper_dataset_has_its_test_split_and_its_categories_add_up_to_it() -> None:
    for name in PAPER_DATASETS:
        spec = DATASET_SPECS[name]
        sizes = spec.test_sizes()
        assert list(sizes) == list(spec.categories), name
        assert tuple(map(sum, zip(*sizes.values(), strict=True))) == spec.test_split, name
        assert not spec.category_split or len(spec.category_split) == len(spec.categories), name
        spread = {sum(pair) for pair in sizes.values()}
        assert spec.category_split or max(spread) - min(spread) <= 2, f"{name}: spread evenly, remainders first"
    assert sum(DATASET_SPECS["mvtec"].test_split) == 1725 and sum(DATASET_SPECS["visa"].test_split) == 2162  # FACTS
    assert not DATASET_SPECS["generic"].test_sizes()


def test_every_name_points_to_one_dataset() -> None:
    names = [key for s in SPECS for key in {name_key(a) for a in s.names}]
    assert len(names) == len(set(names)) == len(ALIASES), "an alias of two datasets"
    assert not set(STAND_INS) & set(ALIASES), "a stand-in folder named like a dataset"


@pytest.mark.parametrize(
    ("folder", "name"),
    [("MVTec_AD", "mvtec"), ("mvtec_anomaly_detection", "mvtec"), ("KolektorSDD", "sdd"), ("COVID-19", "covid"),
     ("COVID-19_Radiography_Dataset", "covid"), ("CVC-ClinicDB", "clinicdb"), ("Kvasir-SEG", "kvasir")],
)  # fmt: skip
def test_folder_names_users_give_their_downloads(folder: str, name: str) -> None:
    assert find_spec(folder).name == name
    assert studies.DATASET_FOLDERS[name_key(folder)] == name


def test_discovery_and_stand_ins(tmp_path: Path) -> None:
    for folder in ("MVTec-AD", "HAM10000", "hazelnut_toy", "mine"):
        make_synthetic_dataset(tmp_path / folder, categories=["disc"], n_train=0, n_test_good=1, n_test_defect=1,
                               image_size=32)  # fmt: skip
    (tmp_path / "empty").mkdir()
    found = studies.discover_datasets(tmp_path)
    assert found == {"HAM10000": "isic", "MVTec-AD": "mvtec", "hazelnut_toy": "generic", "mine": "generic"}
    assert studies.paper_dataset("MVTec-AD", "mvtec") == "mvtec"
    assert studies.paper_dataset("HAM10000", "isic") is None and studies.paper_dataset("mine", "generic") is None


@pytest.mark.parametrize("name", [n for n in PAPER_DATASETS if not DATASET_SPECS[n].archives])
def test_every_manual_dataset_says_how_to_get_it(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        download_dataset(name, tmp_path)
    message = str(caught.value)
    spec = DATASET_SPECS[name]
    assert f"{spec.title} cannot be downloaded automatically" in message and str(tmp_path / name) in message
    assert spec.homepage in message and spec.licence in message and "{target}" not in message
