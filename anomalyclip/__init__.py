"""AnomalyCLIP: object-agnostic prompt learning for zero-shot anomaly detection, on open_clip."""

from anomalyclip.config import (
    AnomalyCLIPConfig,
    HeadConfig,
    LossConfig,
    PromptConfig,
    TrainConfig,
    VisionConfig,
)
from anomalyclip.errors import AnomalyCLIPError, BackboneError, CheckpointError, ConfigError, DataError, MetricError

__version__ = "0.1.0"

__all__ = [
    "AnomalyCLIPConfig",
    "AnomalyCLIPError",
    "BackboneError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HeadConfig",
    "LossConfig",
    "MetricError",
    "PromptConfig",
    "TrainConfig",
    "VisionConfig",
]
