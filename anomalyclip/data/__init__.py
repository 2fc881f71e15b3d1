"""Data layer: dataset adapters, image/mask reading, official transforms, torch datasets and checks.

Names load on first use (`from anomalyclip.data import load_records` imports only what that needs), so the command
line and the dataset specs do not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyclip.lazy import lazy_attributes

if TYPE_CHECKING:
    from anomalyclip.data.adapters import DATASETS, DatasetInfo, list_dataset, load_records, prepare_sdd
    from anomalyclip.data.check import CheckReport, check_dataset, format_report
    from anomalyclip.data.dataset import AnomalyDataset, load_pair, make_loader
    from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD, OFFICIAL_MASK_THRESHOLD, read_image, read_mask
    from anomalyclip.data.meta_json import read_meta_json, write_meta_json
    from anomalyclip.data.records import Problem, Record
    from anomalyclip.data.transforms import OPENAI_MEAN, OPENAI_STD, ImageTransform, MaskTransform

_HOMES = {
    "DATASETS": "adapters",
    "DatasetInfo": "adapters",
    "list_dataset": "adapters",
    "load_records": "adapters",
    "prepare_sdd": "adapters",
    "CheckReport": "check",
    "check_dataset": "check",
    "format_report": "check",
    "AnomalyDataset": "dataset",
    "load_pair": "dataset",
    "make_loader": "dataset",
    "DEFAULT_MASK_THRESHOLD": "io",
    "OFFICIAL_MASK_THRESHOLD": "io",
    "read_image": "io",
    "read_mask": "io",
    "read_meta_json": "meta_json",
    "write_meta_json": "meta_json",
    "Problem": "records",
    "Record": "records",
    "OPENAI_MEAN": "transforms",
    "OPENAI_STD": "transforms",
    "ImageTransform": "transforms",
    "MaskTransform": "transforms",
}

__all__ = [
    "DATASETS",
    "DEFAULT_MASK_THRESHOLD",
    "OFFICIAL_MASK_THRESHOLD",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "AnomalyDataset",
    "CheckReport",
    "DatasetInfo",
    "ImageTransform",
    "MaskTransform",
    "Problem",
    "Record",
    "check_dataset",
    "format_report",
    "list_dataset",
    "load_pair",
    "load_records",
    "make_loader",
    "prepare_sdd",
    "read_image",
    "read_mask",
    "read_meta_json",
    "write_meta_json",
]


__getattr__ = lazy_attributes(__name__, _HOMES)
