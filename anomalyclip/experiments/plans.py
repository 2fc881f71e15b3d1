"""What a profile fixes for every job (`Setup`), the datasets it evaluates, and the plans of the notebooks.

A notebook builds its `Setup` from its parameters and asks for its jobs here; `anomalyclip reproduce` asks for the
same jobs with the same parameters before it runs the notebooks, so they find their results in the run store.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data import DATASETS, load_records
from anomalyclip.errors import AnomalyCLIPError, ConfigError, DataError
from anomalyclip.experiments.ablations import Ablation, Variant, ablation_jobs, ablations, with_changes
from anomalyclip.experiments.jobs import DataSource, Job
from anomalyclip.experiments.protocol import PROTOCOLS, Protocol, smoke_sources, table_jobs
from anomalyclip.experiments.store import JobResult, RunStore
from anomalyclip.methods.registry import METHODS
from anomalyclip.methods.vand import VANDConfig
from anomalyclip.methods.winclip import WinCLIPConfig
from anomalyclip.paper import DATASET_NAMES, paper_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """The settings every job of a run shares: protocol, weights, sizes, recipe, precision, data and run store."""

    protocol: str = "smoke"
    backbone: str = "tiny"
    pretrained: str | None = None
    weights: str | None = None
    """A local CLIP weights file; overrides `backbone`/`pretrained` for every method but WinCLIP."""
    winclip_backbone: str = "tiny-winclip"
    winclip_pretrained: str | None = None
    image_size: int = 224
    epochs: int = 8
    seed: int = 111
    precision: str = "fp32"
    device: str = "cpu"
    data_root: str | None = None
    """Folder of downloaded datasets, one subfolder each (smoke: optional extra targets; paper: required)."""
    allow_missing: bool = False
    """Paper protocol: skip datasets missing under `data_root` (listed in the scorecard) instead of stopping."""
    run_store: str = "runs"
    methods: tuple[str, ...] | str = "all"
    """Method names, or "all" (the six of the paper's tables)."""
    backbones: Mapping[str, str | None] = field(default_factory=dict, hash=False)
    """Table 13: other open_clip backbones (e.g. ViT-H-14) -> a weights file or pretrained tag; None: not run."""

    def __post_init__(self) -> None:
        if self.methods == "all":
            object.__setattr__(self, "methods", tuple(METHODS))
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol {self.protocol!r}; expected one of {sorted(PROTOCOLS)}")
        if isinstance(self.methods, str):
            raise ConfigError(f"methods={self.methods!r}; expected a list of method names such as ['clip']")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"unknown methods {unknown}; expected some of {list(METHODS)}")
        object.__setattr__(self, "methods", tuple(self.methods))
        if not isinstance(self.backbones, Mapping) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in self.backbones.items()
        ):
            raise ConfigError(f"backbones={self.backbones!r}; expected a mapping such as {{'ViT-H-14': 'FILE or tag'}}")
        if SETUP_BACKBONE in self.backbones:
            raise ConfigError(f"backbones names {SETUP_BACKBONE}: its Table 13 row is the setup's own base job; "
                              "give its weights with `weights` or `backbone`/`pretrained` instead")  # fmt: skip
        object.__setattr__(self, "backbones", dict(self.backbones))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Setup:
        """A setup from the fields present in `values` (e.g. a notebook's parameters), the rest at defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def rules(self) -> Protocol:
        return PROTOCOLS[self.protocol]

    def store(self) -> RunStore:
        return RunStore(self.run_store)

    def config(self, method: str, trained_on: str | None = None) -> dict[str, Any]:
        """The configuration of `method` under this setup (trained on `trained_on`), as plain data for a job."""
        if method == "winclip":
            return dataclasses.asdict(WinCLIPConfig(backbone=self.winclip_backbone, pretrained=self.winclip_pretrained))
        backbone, pretrained = (self.weights, None) if self.weights else (self.backbone, self.pretrained)
        if method == "vand":
            role = "mvtec" if trained_on in (None, self.rules.primary) else "visa"
            recipe = VANDConfig.recipe(role, backbone=backbone, pretrained=pretrained, image_size=self.image_size,
                                       seed=self.seed)  # fmt: skip
            if self.protocol == "smoke":
                recipe = dataclasses.replace(recipe, epochs=min(recipe.epochs, self.epochs))
            return recipe.to_dict()
        return AnomalyCLIPConfig(
            backbone=backbone,
            pretrained=pretrained,
            vision=VisionConfig(image_size=self.image_size),
            train=TrainConfig(epochs=self.epochs, seed=self.seed),
        ).to_dict()


@dataclass
class Datasets:
    """The datasets a setup evaluates, by display name, and those it skipped with the reason."""

    sources: dict[str, DataSource]
    skipped: dict[str, str] = field(default_factory=dict)


def datasets(setup: Setup) -> Datasets:
    """The sources of `setup`: the synthetic domains and any folders under `data_root` (smoke), or the paper's
    datasets under `data_root`, each required unless `allow_missing` (paper).

    Found once per process while the folders are unchanged (every plan of a `reproduce` run asks for them)."""
    found = _datasets(setup.protocol, setup.data_root, setup.allow_missing, _folders_state(setup.data_root))
    return Datasets(dict(found.sources), dict(found.skipped))


def _folders_state(root: str | None) -> tuple:
    """What a change of the data root's folders would change: each subfolder's name and modification time."""
    if root is None or not Path(root).is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in Path(root).iterdir()))


@functools.lru_cache(maxsize=8)
def _datasets(protocol: str, data_root: str | None, allow_missing: bool, _state: tuple) -> Datasets:
    setup = Setup(protocol=protocol, data_root=data_root, allow_missing=allow_missing)
    found = Datasets({})
    if setup.protocol == "smoke":
        found.sources.update(smoke_sources())
    if setup.data_root is not None:
        _discover(Path(setup.data_root), found, paper_only=setup.protocol == "paper")
    elif setup.protocol == "paper":
        raise DataError("the paper protocol needs the downloaded datasets: pass --data-root FOLDER (one subfolder "
                        "per dataset, named as downloaded, e.g. mvtec_anomaly_detection, visa)")  # fmt: skip
    if setup.protocol == "paper":
        missing = [key for key in DATASET_NAMES if key not in found.sources and key not in found.skipped]
        for key in missing:
            found.skipped[key] = f"no folder for {DATASET_NAMES[key]} under {setup.data_root}"
        if found.skipped and not setup.allow_missing:
            listed = "; ".join(f"{k}: {why}" for k, why in found.skipped.items())
            raise DataError(f"the paper protocol evaluates all 17 datasets, but {listed}. Download them into "
                            "--data-root (data/README.md) or pass --allow-missing to run what is there")  # fmt: skip
    return found


def _discover(root: Path, found: Datasets, paper_only: bool) -> None:
    from anomalyclip.studies import discover_datasets, paper_dataset

    if not root.is_dir():
        raise DataError(f"--data-root {root} is not a folder; expected one subfolder per downloaded dataset")
    for folder, name in discover_datasets(root).items():
        key = paper_dataset(folder, name)
        if key is None and paper_only:
            continue
        display = key or folder
        pixel = DATASETS[name].pixel_level if name in DATASETS else True
        source = DataSource(display, name, str(root / folder), pixel_level=pixel)
        try:
            load_records(source.root, source.dataset, source.split)
        except AnomalyCLIPError as err:
            found.skipped[display] = str(err)
            continue
        found.sources.setdefault(display, source)


def tables_plan(setup: Setup) -> list[Job]:
    """Tables 1-2: every method of `setup` on every dataset, learned methods under the protocol's transfers."""
    return table_jobs(setup.rules, datasets(setup).sources, setup.methods, setup.config, precision=setup.precision)


MEDICAL_AUXILIARY = "colondb"
"""Table 3 tunes AnomalyCLIP on a ColonDB-derived auxiliary set (its test split here, as MVTec AD's is for Table 1)."""
NOT_IN_TABLE3 = ("colondb", "endo")
"""Not evaluated in the ColonDB-tuned setting (the author, official issue #41)."""


def medical_plan(setup: Setup) -> list[Job]:
    """Table 3: AnomalyCLIP tuned on ColonDB, tested on the other medical datasets present (none without ColonDB),
    plus the Tables 1-2 jobs whose AnomalyCLIP results on the same datasets it is compared with."""
    sources = datasets(setup).sources
    medical = [name for name in sources if name in set(paper_table(2).dataset) and name not in NOT_IN_TABLE3]
    if MEDICAL_AUXILIARY not in sources or not medical:
        return []
    tuned = Job("anomalyclip", setup.config("anomalyclip", MEDICAL_AUXILIARY), tuple(sources[m] for m in medical),
                sources[MEDICAL_AUXILIARY], setup.precision, tags={"table": "3"})  # fmt: skip
    return [tuned, *[j for j in tables_plan(setup) if j.method == "anomalyclip"]]


def ablations_plan(*keys: str) -> Callable[[Setup], list[Job]]:
    """The plan of the ablations `keys` (`experiments.ablations`) under a setup's protocol."""

    def plan(setup: Setup) -> list[Job]:
        sources = datasets(setup).sources
        table = ablations(setup.protocol)
        return [job for key in keys for job in ablation_jobs(setup, table[key], sources)]

    plan.__doc__ = f"The jobs of the ablations {', '.join(keys)}."
    return plan


FIGURE1_METHODS = ("clip", "winclip", "coop", "anomalyclip")
"""Fig. 1 sets the similarity maps of these methods side by side."""


FIXED_CLASS_NAME = "object"
"""Notebook 01 holds CLIP's text fixed with this word in place of every class name (the object-agnostic prompt's)."""


def fixed_text_job(clip_job: Job) -> Job:
    """`clip_job` with every class name replaced by `FIXED_CLASS_NAME`: the same text for all categories."""
    config = with_changes(clip_job.config, {"prompt.fixed_class_name": FIXED_CLASS_NAME})
    return dataclasses.replace(clip_job, config=config, tags={"text": "fixed"})


def figure1_plan(setup: Setup) -> list[Job]:
    """Notebook 01: the Tables 1-2 jobs of CLIP (its analysis, beside the same job with its text held fixed) and of
    the methods Fig. 1 draws (shared with 06)."""
    jobs = [job for job in tables_plan(setup) if job.method in FIGURE1_METHODS]
    return jobs + [fixed_text_job(job) for job in jobs if job.method == "clip"]


TEST_SPEED_METHODS = ("clip", "winclip", "anomalyclip")
"""Table 8 compares the test-time speed of these methods; their Tables 1-2 jobs store their images per second."""
COMPUTE_VARIANTS = {
    "AnomalyCLIP": ("losses", "global + local (Focal + Dice)"),
    "AnomalyCLIP without DPAM": ("dpam", "off (plain CLIP path)"),
    "CoOp": ("prompts", "CoOp ([V][normal|anomalous][cls], plain CLIP)"),
}
"""Table 8's training rows (the paper's names) -> the ablation variant whose job's training time each reads."""


def compute_jobs(setup: Setup) -> list[Job]:
    """Table 8's training jobs: the `COMPUTE_VARIANTS` trained on the protocol's primary dataset (the same jobs as
    those ablations'), tagged with their row under `compute`."""
    sources = datasets(setup).sources
    table = ablations(setup.protocol)
    jobs = []
    for row, (key, label) in COMPUTE_VARIANTS.items():
        for job in ablation_jobs(setup, table[key], sources):
            if job.tags["variant"] == label and job.tags["trained on"] == setup.rules.primary:
                jobs.append(dataclasses.replace(job, tags={**job.tags, "compute": row}))
    return jobs


def training_plan(setup: Setup) -> list[Job]:
    """Notebook 05: the loss ablation, Table 8's training jobs and the Tables 1-2 jobs of the methods it times at
    test time."""
    speed = [job for job in tables_plan(setup) if job.method in TEST_SPEED_METHODS]
    return [*ablations_plan("losses")(setup), *compute_jobs(setup), *speed]


SETUP_BACKBONE = "ViT-L-14-336"
"""Table 13's row that the setup's own base job gives (whatever its backbone: `tiny` on the smoke protocol)."""
TABLE13_BACKBONES = {"ViT-B-16-plus-240": "ViT-B-16-plus", SETUP_BACKBONE: "ViT-L-14", "ViT-H-14": "ViT-H-14"}
"""The backbones of revised Table 13 (open_clip names) -> the names of `paper.ABLATIONS["backbone"]`."""
DPAM_FIRST_BLOCK = 6
"""DPAM runs from block 6 to the last block (blocks 6-24 of ViT-L's 24, FACTS §1.3)."""


def backbone_settings(name: str, image_size: int) -> dict[str, Any]:
    """AnomalyCLIP's settings that assume ViT-L's 24 blocks and patch 14, scaled to the open_clip ViT `name`: DPAM
    from block 6 to the last, local features from the last block, the image size rounded to a multiple of the patch
    size. Our reading: the paper does not say how it ran the other backbones."""
    import open_clip

    vision = (open_clip.get_model_config(name) or {}).get("vision_cfg", {})
    depth, patch = vision.get("layers"), vision.get("patch_size")
    if not isinstance(depth, int) or not isinstance(patch, int):
        raise ConfigError(f"backbones: {name!r} is not an open_clip ViT model name; expected e.g. ViT-B-16-plus-240 "
                          "or ViT-H-14 (open_clip.list_models())")  # fmt: skip
    if depth < DPAM_FIRST_BLOCK:
        raise ConfigError(f"backbones: {name} has {depth} blocks; DPAM from block {DPAM_FIRST_BLOCK} needs more")
    return {
        "vision.dpam_blocks": depth - DPAM_FIRST_BLOCK + 1,
        "vision.features_list": (depth,),
        "vision.image_size": max(patch, round(image_size / patch) * patch),
    }


def backbone_ablation(setup: Setup) -> Ablation:
    """Table 13 as an ablation: the setup's base job as the ViT-L-14-336 row, and each other backbone (the paper's
    and any in `setup.backbones`) with its weights and its scaled settings (`backbone_settings`)."""
    variants = [Variant(SETUP_BACKBONE, paper=TABLE13_BACKBONES[SETUP_BACKBONE])]
    for name in dict.fromkeys([*TABLE13_BACKBONES, *setup.backbones]):
        if name != SETUP_BACKBONE:
            weights = {"backbone": name, "pretrained": setup.backbones.get(name)}
            changes = weights | backbone_settings(name, setup.image_size)
            variants.append(Variant(name, changes, paper=TABLE13_BACKBONES.get(name)))
    return Ablation("backbones", "Backbones (revised Table 13)", "table13", tuple(variants), SETUP_BACKBONE,
                    numbers="backbone")  # fmt: skip


def backbone_jobs(setup: Setup) -> list[Job]:
    """Table 13's jobs: the setup's base job and, for each backbone given weights in `setup.backbones`, AnomalyCLIP's
    base job on it, under the ablation transfers."""
    ablation = backbone_ablation(setup)
    runnable = tuple(v for v in ablation.variants if v.label == SETUP_BACKBONE or setup.backbones.get(v.label))
    return ablation_jobs(setup, dataclasses.replace(ablation, variants=runnable), datasets(setup).sources)


def backbone_status(setup: Setup, jobs: list[Job], results: Mapping[str, JobResult]) -> pd.DataFrame:
    """One row per backbone of Table 13 (never none): what it ran as, its scaled settings and its status (`ok`,
    `failed: ...`, or `not run` and why)."""
    from anomalyclip.experiments.results import job_status

    ablation = backbone_ablation(setup)
    store = setup.store()
    rows = []
    for variant in ablation.variants:
        config = with_changes(setup.config("anomalyclip"), variant.changes)
        mine = [j for j in jobs if j.tags.get("ablation") == ablation.key and j.tags.get("variant") == variant.label]
        failed = [f"trained on {j.tags['trained on']}: {job_status(j, results, store)}" for j in mine
                  if j.id not in results]  # fmt: skip
        if variant.label != SETUP_BACKBONE and not setup.backbones.get(variant.label):
            status = "not run: no weights given (parameter `backbones`)"
        elif not mine:
            status = f"not run: needs both auxiliary datasets ({setup.rules.primary}, {setup.rules.secondary})"
        else:
            status = "; ".join(f"failed ({why})" for why in failed) or "ok"
        vision = config["vision"]
        rows.append({"backbone": variant.label, "run as": _weights(config),
                     "DPAM blocks": vision["dpam_blocks"], "local features": tuple(vision["features_list"]),
                     "image size": vision["image_size"], "status": status})  # fmt: skip
    return pd.DataFrame(rows)


def _weights(config: Mapping[str, Any]) -> str:
    return config["backbone"] + (f" ({config['pretrained']})" if config["pretrained"] else "")


def modules_plan(setup: Setup) -> list[Job]:
    """Notebook 08: the module ablations (Table 4, leave-one-out) and the backbones of Table 13."""
    return [*ablations_plan("modules", "leave_one_out")(setup), *backbone_jobs(setup)]


PLANS: dict[str, Callable[[Setup], list[Job]]] = {
    "01_clip_misalignment": figure1_plan,
    "02_prompt_design": ablations_plan("prompts", "state_word"),
    "03_deep_text_prompting": ablations_plan("prompt_length", "token_depth", "token_length", "lambda"),
    "04_vv_attention_ablation": ablations_plan("dpam", "dpam_blocks"),
    "05_training": training_plan,
    "06_evaluation_17_datasets": tables_plan,
    "07_medical_tuning": medical_plan,
    "08_module_ablation": modules_plan,
}
"""Notebook -> the jobs it reads; `reproduce` runs their union before executing the notebooks."""
