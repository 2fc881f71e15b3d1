"""The methods of the paper's tables behind one detector contract (`Detector`), built by name (`build_detector`)."""

from anomalyclip.methods.base import Detector, DetectorOutput
from anomalyclip.methods.prompted import PromptedDetector
from anomalyclip.methods.registry import METHODS, MethodInfo, as_detector, build_detector, checkpoint_method

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
