"""Training, evaluation and prediction at full speed, shared by the Python API, the CLI and the notebooks.

Names load on first use, so that `anomalyclip.engine.cli` (the command line) does not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyclip.lazy import lazy_attributes

if TYPE_CHECKING:
    from anomalyclip.engine.evaluation import EvaluationResult, evaluate
    from anomalyclip.engine.features import FeatureCache
    from anomalyclip.engine.loading import load_model
    from anomalyclip.engine.prediction import Prediction, Thresholds, predict, thresholds_from_normals
    from anomalyclip.engine.training import TrainResult, load_history, train

_HOMES = {
    "EvaluationResult": "evaluation",
    "evaluate": "evaluation",
    "FeatureCache": "features",
    "load_model": "loading",
    "Prediction": "prediction",
    "Thresholds": "prediction",
    "predict": "prediction",
    "thresholds_from_normals": "prediction",
    "TrainResult": "training",
    "load_history": "training",
    "train": "training",
}

__all__ = [
    "EvaluationResult",
    "FeatureCache",
    "Prediction",
    "Thresholds",
    "TrainResult",
    "evaluate",
    "load_history",
    "load_model",
    "predict",
    "thresholds_from_normals",
    "train",
]


__getattr__ = lazy_attributes(__name__, _HOMES)
