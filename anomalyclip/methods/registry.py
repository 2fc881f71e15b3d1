"""The methods by name: what each is, what it needs, and how to build one ready to score (`--method`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch

from anomalyclip.checkpoint import checkpoint_method
from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.errors import CheckpointError, ConfigError
from anomalyclip.methods.base import Detector
from anomalyclip.methods.catalog import METHODS, MethodInfo, check_method
from anomalyclip.methods.prompted import PROMPTED, PromptedDetector, method_config
from anomalyclip.methods.vand import VAND, VANDConfig
from anomalyclip.methods.vand import checkpoint_config as vand_checkpoint_config
from anomalyclip.methods.winclip import WinCLIP, WinCLIPConfig
from anomalyclip.model import AnomalyCLIP
from anomalyclip.settings import from_mapping


def method_config_from_dict(method: str, data: Mapping[str, Any] | None) -> Any:
    """The typed configuration of `method` from plain data (None: its paper recipe), validated where it is defined."""
    check_method(method)
    if method in PROMPTED:
        return AnomalyCLIPConfig.from_dict(dict(data or {}))
    if method == "winclip":
        return from_mapping(WinCLIPConfig, dict(data or {}))
    if method == "vand":
        return VANDConfig.from_dict(dict(data or {}))
    raise ConfigError(f"method {method} has no configuration type")  # every method in METHODS is handled above


def as_detector(model: Detector | AnomalyCLIP) -> Detector:
    """A detector as it is, or an `AnomalyCLIP` model scored with its learned prompts."""
    if isinstance(model, Detector):
        return model
    if isinstance(model, AnomalyCLIP):
        return PromptedDetector(model, "anomalyclip")
    raise TypeError(f"expected a Detector or an AnomalyCLIP model, got {type(model).__name__}")


def build_detector(
    method: str,
    *,
    config: Any = None,
    checkpoint: str | os.PathLike | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    image_size: int | None = None,
    shots: int = 0,
    device: str | torch.device = "cpu",
) -> Detector:
    """A ready detector for `method`: its backbone loaded, its learned parameters from `checkpoint` if it learns.

    `config` is the method's configuration (default: its paper recipe); `backbone`/`pretrained` override where the
    CLIP weights come from, `image_size` the input size, `shots` the number of normal references per category.
    """
    check_method(method)
    if checkpoint is not None:
        found = checkpoint_method(checkpoint)
        if found != method:
            raise CheckpointError(
                f"{checkpoint} is a {METHODS.get(found, MethodInfo(found, False, False, '')).title} ({found}) "
                f"checkpoint, but the method is {METHODS[method].title} ({method}); pass --method {found}"
            )
        if not METHODS[method].learns:
            raise ConfigError(f"method {method} learns nothing, so it takes no checkpoint (got {checkpoint})")
    if shots and not METHODS[method].few_shot:
        raise ConfigError(f"method {method} is zero-shot only; got shots={shots}, expected 0")
    if method in PROMPTED:
        return _prompted(method, config, checkpoint, backbone, pretrained, image_size, device)
    if method == "winclip":
        config = _typed(WinCLIPConfig, method, config)
        changes = _backbone_changes(config, backbone, pretrained, image_size) | ({"k_shot": shots} if shots else {})
        return WinCLIP.from_config(dataclasses.replace(config, **changes), device=device)
    if method == "vand":
        saved = vand_checkpoint_config(checkpoint) if checkpoint is not None and config is None else None
        config = _typed(VANDConfig, method, config or saved)
        changes = _backbone_changes(config, backbone, pretrained, image_size) | ({"k_shot": shots} if shots else {})
        return VAND.from_config(dataclasses.replace(config, **changes), device=device, checkpoint=checkpoint)
    raise ConfigError(f"method {method} cannot be built here")  # every method in METHODS is handled above


def _typed(config_type: type, method: str, config: Any) -> Any:
    if config is None:
        return config_type()
    if not isinstance(config, config_type):
        raise ConfigError(f"method {method} takes a {config_type.__name__}, got {type(config).__name__}")
    return config


def _backbone_changes(config: Any, backbone: str | None, pretrained: str | None, image_size: int | None) -> dict:
    """Field changes for a --backbone/--pretrained/--image-size choice (a new backbone drops the old tag)."""
    changes: dict[str, Any] = {}
    if backbone is not None or pretrained is not None:
        changes = {"backbone": backbone or config.backbone, "pretrained": pretrained}
    if image_size is not None:
        changes["image_size"] = image_size
    return changes


def _prompted(method, config, checkpoint, backbone, pretrained, image_size, device) -> PromptedDetector:
    from anomalyclip.engine.loading import load_model

    if checkpoint is not None:
        config = None if config is None else _typed(AnomalyCLIPConfig, method, config)
        model = load_model(checkpoint, config=config, backbone=backbone, pretrained=pretrained,
                           image_size=image_size, device=device)  # fmt: skip
        return PromptedDetector(model, method)
    from anomalyclip.backbone import load_backbone

    config = _typed(AnomalyCLIPConfig, method, config)
    if backbone is not None or pretrained is not None:
        config = config.replace(backbone=backbone or config.backbone, pretrained=pretrained)
    if image_size is not None:
        config = config.replace(vision=dataclasses.replace(config.vision, image_size=image_size))
    clip = load_backbone(config.backbone, config.pretrained, device=device)
    config = method_config(method, config, len(clip.visual.transformer.resblocks))
    return PromptedDetector(AnomalyCLIP(clip, config).to(device).eval(), method)
