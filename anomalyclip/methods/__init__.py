"""The methods of the paper's tables behind one detector contract (`Detector`)."""

from anomalyclip.methods.base import Detector, DetectorOutput

__all__ = ["Detector", "DetectorOutput"]
