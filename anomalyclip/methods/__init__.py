"""The methods of the paper's tables behind one detector contract (`Detector`), built by name (`build_detector`).

Names load on first use, so that the command line can list the methods (`catalog`) without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyclip.lazy import lazy_attributes

if TYPE_CHECKING:
    from anomalyclip.checkpoint import checkpoint_method
    from anomalyclip.methods.base import Detector, DetectorOutput
    from anomalyclip.methods.catalog import METHODS, MethodInfo
    from anomalyclip.methods.prompted import PromptedDetector
    from anomalyclip.methods.registry import as_detector, build_detector

_HOMES = {
    "Detector": "base",
    "DetectorOutput": "base",
    "METHODS": "catalog",
    "MethodInfo": "catalog",
    "PromptedDetector": "prompted",
    "as_detector": "registry",
    "build_detector": "registry",
    "checkpoint_method": "registry",
}

__all__ = [
    "METHODS",
    "Detector",
    "DetectorOutput",
    "MethodInfo",
    "PromptedDetector",
    "as_detector",
    "build_detector",
    "checkpoint_method",
]


__getattr__ = lazy_attributes(__name__, _HOMES)
