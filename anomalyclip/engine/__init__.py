"""Training, evaluation and prediction at full speed, shared by the Python API, the CLI and the notebooks."""

from anomalyclip.engine.evaluation import EvaluationResult, evaluate
from anomalyclip.engine.features import FeatureCache
from anomalyclip.engine.loading import load_model
from anomalyclip.engine.prediction import Prediction, Thresholds, predict, thresholds_from_normals
from anomalyclip.engine.training import TrainResult, load_history, train

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
