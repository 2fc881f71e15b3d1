"""Dataset adapters: folder layouts, the SDD thirds, and the registry that ties datasets to layouts.

Names load on first use, so that `anomalyclip.data.specs` (which needs the layouts) and the registry (which needs
the specs) import each other's modules in either order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyclip.lazy import lazy_attributes

if TYPE_CHECKING:
    from anomalyclip.data.adapters.registry import DATASETS, DatasetInfo, list_dataset, load_records, resolve
    from anomalyclip.data.adapters.sdd import prepare_sdd, sdd_boxes

_HOMES = {
    "DATASETS": "registry",
    "DatasetInfo": "registry",
    "list_dataset": "registry",
    "load_records": "registry",
    "resolve": "registry",
    "prepare_sdd": "sdd",
    "sdd_boxes": "sdd",
}

__all__ = ["DATASETS", "DatasetInfo", "list_dataset", "load_records", "prepare_sdd", "resolve", "sdd_boxes"]


__getattr__ = lazy_attributes(__name__, _HOMES)
