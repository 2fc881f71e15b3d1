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

import pandas as pd
import torch
from open_clip.model import CLIP

from anomalyclip.attention import attention_weights
from anomalyclip.backbone import load_backbone
from anomalyclip.config import AnomalyCLIPConfig, TrainConfig, VisionConfig
from anomalyclip.data import AnomalyDataset, Record, load_records
from anomalyclip.data.adapters.registry import resolve
from anomalyclip.data.synth import SYNTH_CATEGORIES, ensure_synthetic_dataset
from anomalyclip.engine.evaluation import category_text_features, evaluate
from anomalyclip.engine.training import train
from anomalyclip.errors import DataError
from anomalyclip.model import AnomalyCLIP
from anomalyclip.prompts import clip_ac_prompt_features, clip_prompt_features

log = logging.getLogger(__name__)

HANDMADE = {"clip": clip_prompt_features, "clip_ac": clip_ac_prompt_features}
"""Hand-made prompt baselines by name; each takes (text encoder, class name)."""


@dataclass
class StudyData:
    """Images to learn prompts on and held-out images to test them on (other categories: zero-shot)."""

    train: list[Record]
    test: list[Record]
    source: str


@dataclass
class Variant:
    """One configuration of a comparison: learned prompts (trained first) or a hand-made baseline."""

    config: AnomalyCLIPConfig
    handmade: str | None = None
    object_aware_handmade: bool = True


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
    config = variant.config
    model = AnomalyCLIP(clip, config).to(clip.text_projection.device)
    row: dict = {"train_seconds": 0.0}
    text: Callable[[str], torch.Tensor] | None = None
    if variant.handmade is not None:
        make_text = HANDMADE[variant.handmade]

        def text(category: str) -> torch.Tensor:
            name = category.replace("_", " ") if variant.object_aware_handmade else "object"
            with torch.no_grad():
                return make_text(model.text, name)

    elif config.train.epochs > 0:
        start = time.perf_counter()
        cache_dir = Path(workdir) / "cache" / _vision_key(config)
        train(model, data.train, Path(workdir) / "runs" / _config_key(config), cache="disk", cache_dir=cache_dir,
              overwrite=True, num_workers=0, progress=progress)  # fmt: skip
        row["train_seconds"] = time.perf_counter() - start
    result = evaluate(model, data.test, text_features=text, num_workers=0, progress=progress)
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


def score_frame(
    model: AnomalyCLIP,
    records: Sequence[Record],
    text: Callable[[str], torch.Tensor] | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Per image: category, label, image score, the two global cosines and the map's maximum.

    `text` gives each category's (2, E) features (default: the model's learned prompts). The cosines show what the
    image score is made of: the class token's similarity to the normal and to the abnormal prompt.
    """
    rows = []
    dataset = AnomalyDataset(records, model.config.vision.image_size)
    per_category: dict[str, torch.Tensor] = {}
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([it["image"] for it in items]).to(model.device)
        categories = [it["category"] for it in items]
        with torch.no_grad():
            features = model.encode_image(images)
            for category in set(categories) - set(per_category):
                per_category[category] = category_text_features(model, text, category)
            per_image = torch.stack([per_category[c] for c in categories])
            output = model.head(features, per_image, images.shape[-1])
            cosines = output.global_logits * model.config.head.temperature
        for i, item in enumerate(items):
            rows.append({
                "image": Path(item["path"]).name, "category": item["category"], "defect": item["defect"],
                "label": item["label"], "score": output.image_scores[i].item(),
                "cos_normal": cosines[i, 0].item(), "cos_abnormal": cosines[i, 1].item(),
                "map_max": output.anomaly_map[i].max().item(),
            })  # fmt: skip
    return pd.DataFrame(rows)


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


DATASET_FOLDERS = {
    "mvtec_ad": "mvtec", "mvtec": "mvtec", "mvtec_anomaly_detection": "mvtec", "visa": "visa", "mpdd": "mpdd",
    "btad": "btad", "kolektorsdd": "sdd", "sdd": "sdd", "dagm": "dagm", "dtd": "dtd", "dtd_synthetic": "dtd",
    "headct": "headct", "brainmri": "brainmri", "br35h": "br35h", "covid": "covid", "covid19": "covid",
    "isic": "isic", "isic2016": "isic", "isic2017": "isic", "ham10000": "isic", "cvc_colondb": "colondb",
    "colondb": "colondb", "cvc_clinicdb": "clinicdb", "clinicdb": "clinicdb", "kvasir_seg": "kvasir",
    "kvasir": "kvasir", "endotect": "endo", "endo": "endo", "tn3k": "tn3k", "hazelnut_toy": "generic",
}  # fmt: skip
"""Folder names users give their downloads, mapped to the data layer's dataset names."""

STAND_INS = {"ham10000", "hazelnut_toy"}
"""Folders read with a paper dataset's loader that are not that dataset: never compared with the paper."""


def paper_dataset(folder: str, name: str) -> str | None:
    """The paper's dataset that `folder` (loaded as `name`) is, or None for a stand-in or a user's own data."""
    return None if folder.lower() in STAND_INS or name in ("generic", "meta_json") else name


def discover_datasets(root: str | Path) -> dict[str, str]:
    """Folder -> dataset name for every folder of `root` that a known name or layout identifies, sorted."""
    found = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        name = DATASET_FOLDERS.get(folder.name.lower())
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
    "HANDMADE",
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
