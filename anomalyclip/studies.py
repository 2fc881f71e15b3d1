"""Shared steps of the ablation notebooks: pick the data, train a configuration, evaluate it, tabulate variants.

Every notebook is a thin face on these functions, so a notebook, the CLI and a user's script compute the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from open_clip.model import CLIP

from anomalyclip.attention import attention_weights
from anomalyclip.backbone import load_backbone
from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data import Record, load_records
from anomalyclip.data.adapters.registry import resolve
from anomalyclip.data.specs import ALIASES, PAPER_DATASETS, STAND_INS, name_key
from anomalyclip.data.synth import SYNTH_CATEGORIES, ensure_synthetic_dataset
from anomalyclip.engine.evaluation import evaluate
from anomalyclip.engine.inference import score_categories
from anomalyclip.errors import DataError
from anomalyclip.methods import Detector, DetectorOutput, PromptedDetector, as_detector
from anomalyclip.methods.prompted import method_config
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)


@dataclass
class StudyData:
    """Images to learn prompts on and held-out images to test them on (other categories: zero-shot)."""

    train: list[Record]
    test: list[Record]
    source: str


@dataclass
class Variant:
    """One configuration of a comparison: a prompt-based method (`anomalyclip`, `coop`, `clip`, `clip_ac`) on top of
    `config`; the learned ones are trained first."""

    config: AnomalyCLIPConfig
    method: str = "anomalyclip"

    def detector(self, clip: CLIP) -> PromptedDetector:
        """The variant's detector on `clip` (fresh prompts for the learned methods)."""
        config = method_config(self.method, self.config, len(clip.visual.transformer.resblocks))
        return PromptedDetector(AnomalyCLIP(clip, config).to(clip.text_projection.device), self.method)


def smoke_config(backbone: str = "tiny", pretrained: str | None = None, image_size: int = 224, epochs: int = 8,
                 batch_size: int = 8, seed: int = 111) -> AnomalyCLIPConfig:  # fmt: skip
    """The official recipe at a size and length a CPU runs in seconds (the notebooks' smoke default)."""
    return AnomalyCLIPConfig(
        backbone=backbone,
        pretrained=pretrained,
        vision=VisionConfig(image_size=image_size),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed),
    )


def study_data(
    data_root: str | Path | None = None,
    dataset: str = "auto",
    train_categories: Sequence[str] | None = None,
    test_categories: Sequence[str] | None = None,
) -> StudyData:
    """Train/test records: a dataset's categories split in two, or the synthetic dataset when no root is given.

    The default split trains on every other category and tests on the rest, a zero-shot transfer in miniature
    (the paper trains on one dataset and tests on another).
    """
    root = Path(data_root) if data_root is not None else ensure_synthetic_dataset()
    records = load_records(root, dataset, "test")
    categories = sorted({r.category for r in records})
    if train_categories is None and test_categories is None:
        if data_root is None:
            categories = list(SYNTH_CATEGORIES)
        train_categories, test_categories = categories[0::2], categories[1::2] or categories[0::2]
    train_set = [r for r in records if r.category in set(train_categories or categories)]
    test_set = [r for r in records if r.category in set(test_categories or categories)]
    return StudyData(train_set, test_set, str(root))


def with_prompt(config: AnomalyCLIPConfig, **changes) -> AnomalyCLIPConfig:
    """A copy of `config` with prompt settings changed."""
    return config.replace(prompt=dataclasses.replace(config.prompt, **changes))


def with_vision(config: AnomalyCLIPConfig, **changes) -> AnomalyCLIPConfig:
    """A copy of `config` with vision settings changed."""
    return config.replace(vision=dataclasses.replace(config.vision, **changes))


def train_and_evaluate(
    clip: CLIP,
    variant: Variant | AnomalyCLIPConfig,
    data: StudyData,
    workdir: str | Path,
    *,
    progress: bool = False,
) -> dict:
    """Mean test metrics of one variant (after training its prompts on `data.train`), plus timings."""
    variant = variant if isinstance(variant, Variant) else Variant(variant)
    detector = variant.detector(clip)
    config = detector.config
    row: dict = {"train_seconds": 0.0}
    if detector.learns:
        start = time.perf_counter()
        cache_dir = Path(workdir) / "cache" / _vision_key(config)
        detector.fit(data.train, Path(workdir) / "runs" / _config_key(config), cache="disk", cache_dir=cache_dir,
                     overwrite=True, num_workers=0, progress=progress)  # fmt: skip
        row["train_seconds"] = time.perf_counter() - start
    result = evaluate(detector, data.test, num_workers=0, progress=progress)
    row.update(result.metrics.data.loc["mean"].to_dict())
    row["test_images_per_second"] = result.images_per_second
    return row


def compare_variants(
    clip: CLIP, variants: Mapping[str, Variant | AnomalyCLIPConfig], data: StudyData, workdir: str | Path
) -> pd.DataFrame:
    """One row per variant: mean pixel AUROC/AUPRO and image AUROC/AP on the held-out images, in percent."""
    rows = {}
    for name, variant in variants.items():
        log.info("variant %s", name)
        rows[name] = train_and_evaluate(clip, variant, data, workdir)
    table = pd.DataFrame.from_dict(rows, orient="index")
    metrics = [c for c in ("pixel_auroc", "pixel_aupro", "image_auroc", "image_ap") if c in table.columns]
    table[metrics] = (table[metrics] * 100).round(1)
    table.index.name = "variant"
    return table[metrics + ["train_seconds"]]


def score_frame(detector: Detector | AnomalyCLIP, records: Sequence[Record], batch_size: int = 8) -> pd.DataFrame:
    """Per image: category, label, image score, the map's maximum and what else the method exposes.

    For the prompt-based methods that is the two global cosines (`cos_normal`, `cos_abnormal`): what the image score
    is made of, the class token's similarity to the normal and to the abnormal prompt.
    """
    rows = []
    for _, batches in score_categories(as_detector(detector), records, batch_size=batch_size, num_workers=0,
                                       progress=False):  # fmt: skip
        for batch in batches:
            for i, path in enumerate(batch.items["path"]):
                row = {"image": Path(path).name, "category": batch.category, "defect": batch.items["defect"][i],
                       "label": int(batch.labels[i]), "score": float(batch.image_scores[i]),
                       "map_max": float(batch.maps[i].max())}  # fmt: skip
                rows.append(row | {k: float(v[i]) for k, v in batch.extras.items()})
    return pd.DataFrame(rows)


class FixedText(Detector):
    """`detector` with every category prepared under one fixed `word` in place of its class name: the same text for
    all categories, so that what still follows the category in its scores comes from the images alone."""

    def __init__(self, detector: Detector, word: str = "object"):
        super().__init__(detector.image_size, detector.sigma, detector.shots)
        self.detector = detector
        self.word = word
        self.name = detector.name

    @property
    def device(self) -> torch.device:
        return self.detector.device

    def image_transform(self) -> Callable:
        return self.detector.image_transform()

    def mask_transform(self) -> Callable:
        return self.detector.mask_transform()

    def prepare(self, category: str, references: torch.Tensor | None = None) -> Any:
        return self.detector.prepare(self.word, references)

    def score(self, images: torch.Tensor, prepared: Any) -> DetectorOutput:
        return self.detector.score(images, prepared)

    def finalize_scores(self, image_scores: torch.Tensor, map_maxima: torch.Tensor) -> torch.Tensor:
        return self.detector.finalize_scores(image_scores, map_maxima)

    def describe(self) -> dict[str, Any]:
        return self.detector.describe() | {"fixed_text": self.word}


def variance_explained(frame: pd.DataFrame, value: str, factor: str) -> float:
    """Share of the variance of `value` explained by the groups of `factor` (eta squared, between 0 and 1)."""
    total = ((frame[value] - frame[value].mean()) ** 2).sum()
    group_means = frame.groupby(factor)[value].transform("mean")
    between = ((group_means - frame[value].mean()) ** 2).sum()
    return float(between / total) if total > 0 else float("nan")


def attention_maps(model: AnomalyCLIP, image: torch.Tensor, block: int, modes: Sequence[str] = ("qk", "vv", "qq", "kk")
                   ) -> dict[str, torch.Tensor]:  # fmt: skip
    """Head-averaged (L, L) attention of one preprocessed image at `block` for each mode (CLIP's Q-K and DPAM's)."""
    block_module = model.vision.visual.transformer.resblocks[block - 1]
    with torch.no_grad():
        x = block_module.ln_1(model.vision.block_input(image[None].to(model.device), block))
        return {mode: attention_weights(block_module.attn, x, mode)[0].cpu() for mode in modes}


def diagonal_prominence(weights: torch.Tensor) -> float:
    """Mean attention a patch token pays to itself, relative to a uniform 1/L (1 = no preference for itself)."""
    patches = weights[1:, 1:]
    return float(patches.diagonal().mean() * weights.shape[-1])


DATASET_FOLDERS = ALIASES | STAND_INS
"""Folder names users give their downloads (in `name_key` form: lower case, letters and digits) -> the data layer's
dataset names: each dataset's name, paper name and aliases, and the stand-ins (`data.specs`)."""


def paper_dataset(folder: str, name: str) -> str | None:
    """The paper's dataset that `folder` (loaded as `name`) is, or None for a stand-in or a user's own data."""
    return None if name_key(folder) in STAND_INS or name not in PAPER_DATASETS else name


def discover_datasets(root: str | Path) -> dict[str, str]:
    """Folder -> dataset name for every folder of `root` that a known name or layout identifies, sorted."""
    found = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        name = DATASET_FOLDERS.get(name_key(folder.name))
        if name is None:
            try:
                name = resolve(folder)[0].name
            except DataError:
                log.info("%s: no known dataset layout, skipped", folder)
                continue
        found[folder.name] = name
    return found


def load_clip(backbone: str = "tiny", pretrained: str | None = None, weights: str | None = None,
              device: str = "cpu") -> CLIP:  # fmt: skip
    """The frozen backbone a notebook uses: a weights file if given, else `backbone` with `pretrained`."""
    if weights:
        return load_backbone(str(weights), None, device=device)
    return load_backbone(backbone, pretrained, device=device)


def _config_key(config: AnomalyCLIPConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _vision_key(config: AnomalyCLIPConfig) -> str:
    payload = {"backbone": config.backbone, "vision": dataclasses.asdict(config.vision)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


__all__ = [
    "DATASET_FOLDERS",
    "FixedText",
    "StudyData",
    "Variant",
    "attention_maps",
    "compare_variants",
    "diagonal_prominence",
    "discover_datasets",
    "load_clip",
    "paper_dataset",
    "score_frame",
    "smoke_config",
    "study_data",
    "train_and_evaluate",
    "variance_explained",
    "with_prompt",
    "with_vision",
]
