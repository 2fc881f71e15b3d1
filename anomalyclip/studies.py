"""Analysis steps of the notebooks beyond the jobs: per-image score frames, variance shares, attention maps and
their diagonal prominence; and which dataset a downloaded folder holds.

The ablations themselves are jobs (`anomalyclip.experiments`); these functions read what the jobs' detectors compute.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from anomalyclip.attention import attention_weights
from anomalyclip.data import Record
from anomalyclip.data.adapters.registry import resolve
from anomalyclip.data.specs import ALIASES, PAPER_DATASETS, STAND_INS, name_key
from anomalyclip.engine.inference import score_categories
from anomalyclip.errors import DataError
from anomalyclip.methods import Detector, as_detector
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)


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


__all__ = [
    "DATASET_FOLDERS",
    "attention_maps",
    "diagonal_prominence",
    "discover_datasets",
    "paper_dataset",
    "score_frame",
    "variance_explained",
]
