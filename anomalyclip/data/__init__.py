"""Data layer: dataset adapters, image/mask reading, official transforms, torch datasets and checks."""

from anomalyclip.data.adapters import DATASETS, DatasetInfo, list_dataset, load_records, prepare_sdd
from anomalyclip.data.check import CheckReport, check_dataset, format_report
from anomalyclip.data.dataset import AnomalyDataset, load_pair, make_loader
from anomalyclip.data.io import DEFAULT_MASK_THRESHOLD, OFFICIAL_MASK_THRESHOLD, read_image, read_mask
from anomalyclip.data.meta_json import read_meta_json, write_meta_json
from anomalyclip.data.records import Problem, Record
from anomalyclip.data.transforms import OPENAI_MEAN, OPENAI_STD, ImageTransform, MaskTransform

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
