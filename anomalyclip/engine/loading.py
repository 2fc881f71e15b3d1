"""Build a ready model from a prompt checkpoint of either format, with the backbone it needs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from anomalyclip.checkpoint import checkpoint_config, load_checkpoint
from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.model import AnomalyCLIP

log = logging.getLogger(__name__)


def load_model(
    checkpoint: str | Path | None,
    *,
    config: AnomalyCLIPConfig | None = None,
    backbone: str | None = None,
    pretrained: str | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
) -> AnomalyCLIP:
    """A model with prompts from `checkpoint` (project or official `epoch_15.pth` format), or fresh ones if None.

    Without `config`, a project checkpoint brings its own configuration and an official one gets the official
    recipe; with `config`, a project checkpoint must agree with it (a mismatch names both values). `backbone` and
    `pretrained` override where the weights come from (e.g. a local file instead of the `openai` tag); `image_size`
    the input size (any multiple of the patch).
    """
    saved = checkpoint_config(checkpoint) if checkpoint is not None else None
    config = config or saved or AnomalyCLIPConfig()
    if backbone is not None:
        config = config.replace(backbone=backbone, pretrained=pretrained)
    elif pretrained is not None:
        config = config.replace(pretrained=pretrained)
    if image_size is not None:
        config = config.replace(vision=dataclasses.replace(config.vision, image_size=image_size))
    model = AnomalyCLIP.from_config(config, device=device)
    model.vision.grid_size(config.vision.image_size)
    if checkpoint is not None:
        expected = saved and config.replace(backbone=saved.backbone, pretrained=saved.pretrained)
        load_checkpoint(checkpoint, model.prompt_learner, expected)
        log.info("prompts loaded from %s", checkpoint)
    return model.eval()
