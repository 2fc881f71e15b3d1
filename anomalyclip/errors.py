"""Errors the project raises for bad input: each message names the file or value and what was expected."""


class AnomalyCLIPError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class BackboneError(AnomalyCLIPError):
    """A CLIP backbone could not be built or loaded (missing file, not a CLIP, offline hub name)."""


class CheckpointError(AnomalyCLIPError):
    """A prompt checkpoint is missing, malformed or does not match the configuration."""


class InputSizeError(AnomalyCLIPError, ValueError):
    """An image size the backbone cannot take (not a multiple of the patch size)."""


class DataError(AnomalyCLIPError):
    """A dataset folder, image or mask is missing, unreadable or inconsistent."""


class MetricError(AnomalyCLIPError, ValueError):
    """Inputs to a metric have the wrong shape, values or type."""


class OutputError(AnomalyCLIPError):
    """An output folder that cannot be used: a file in the way, no permission, another run's files or lock."""


class ConfigError(AnomalyCLIPError, ValueError):
    """A configuration value out of range or unknown (names the key, the value and what is allowed)."""
