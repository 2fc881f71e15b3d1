"""Dataset adapters: folder layouts, the SDD thirds, and the registry that ties datasets to layouts."""

from anomalyclip.data.adapters.registry import DATASETS, DatasetInfo, list_dataset, load_records, resolve
from anomalyclip.data.adapters.sdd import prepare_sdd, sdd_boxes

__all__ = ["DATASETS", "DatasetInfo", "list_dataset", "load_records", "prepare_sdd", "resolve", "sdd_boxes"]
