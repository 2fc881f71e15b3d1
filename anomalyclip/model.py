"""AnomalyCLIP: a frozen open_clip CLIP, the DPAM vision path, learnable prompts and the similarity head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from open_clip.model import CLIP
from torch import nn

from anomalyclip import head
from anomalyclip.backbone import load_backbone
from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.losses import GlocalLoss, glocal_loss
from anomalyclip.prompts import PromptLearner
from anomalyclip.text import TextEncoder
from anomalyclip.vision import VisionEncoder, VisualFeatures


@dataclass
class AnomalyOutput:
    """Everything the head computes for a batch: scores, maps and the per-layer probability maps."""

    image_scores: torch.Tensor
    """(B,) abnormal probability from the global embedding."""
    anomaly_map: torch.Tensor
    """(B, S, S) smoothed anomaly map."""
    anomaly_map_raw: torch.Tensor
    """(B, S, S) before smoothing."""
    similarity_maps: list[torch.Tensor]
    """One (B, 2, S, S) [S_n, S_a] per layer of `features_list`."""
    global_logits: torch.Tensor
    """(B, 2) cosine / temperature."""


class AnomalyCLIP(nn.Module):
    """The whole model; only `prompt_learner` has trainable parameters."""

    def __init__(self, clip: CLIP, config: AnomalyCLIPConfig | None = None):
        super().__init__()
        self.config = config or AnomalyCLIPConfig()
        self.clip = clip
        self.vision = VisionEncoder(clip, self.config.vision)
        self.text = TextEncoder(clip, self.config.prompt.fp16_deep_tokens)
        self.prompt_learner = PromptLearner(self.text, self.config.prompt, seed=self.config.train.seed).to(
            clip.text_projection.device
        )

    @classmethod
    def from_config(cls, config: AnomalyCLIPConfig, device: str | torch.device = "cpu") -> AnomalyCLIP:
        """Load the configured backbone (hub name, file or `tiny`) and build fresh prompts on `device`."""
        clip = load_backbone(config.backbone, config.pretrained, device=device)
        return cls(clip, config).to(device)

    @property
    def device(self) -> torch.device:
        return self.clip.text_projection.device

    def train(self, mode: bool = True) -> AnomalyCLIP:
        """Only the prompt learner ever trains; the backbone stays in eval mode."""
        super().train(mode)
        self.clip.eval()
        return self

    def text_features(self, categories: Sequence[str] | None = None) -> torch.Tensor:
        """(2, E) normalised [normal, abnormal] features of the learned prompts.

        With object-aware prompts and `categories` (one per image), (B, 2, E): each image gets its class name.
        """
        if not self.config.prompt.object_aware or categories is None:
            return self.prompt_learner.text_features(self.text)
        names = sorted(set(categories))
        features = self.prompt_learner.text_features(self.text, [n.replace("_", " ") for n in names])
        return features[torch.tensor([names.index(c) for c in categories], device=features.device)]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> VisualFeatures:
        """Frozen visual features; computed without gradients since nothing before the prompts trains."""
        return self.vision(images)

    def head(
        self, features: VisualFeatures, text_features: torch.Tensor, image_size: int, smooth: bool = True
    ) -> AnomalyOutput:
        """Scores and maps from visual features and (2, E) text features.

        `smooth=False` skips the Gaussian (training never uses the smoothed map); `anomaly_map` is then the raw one.
        """
        t = self.config.head.temperature
        maps = head.similarity_maps(features.patch_tokens, text_features, image_size, t)
        raw = head.anomaly_map(maps)
        logits = head.global_logits(features.global_embedding, text_features, t)
        return AnomalyOutput(
            image_scores=logits.softmax(dim=-1)[:, 1],
            anomaly_map=head.gaussian_blur(raw.float(), self.config.head.sigma) if smooth else raw,
            anomaly_map_raw=raw,
            similarity_maps=maps,
            global_logits=logits,
        )

    def forward(
        self,
        images: torch.Tensor,
        text_features: torch.Tensor | None = None,
        categories: Sequence[str] | None = None,
    ) -> AnomalyOutput:
        """Score a batch of preprocessed (B, 3, S, S) images; pass `text_features` to reuse them across batches."""
        if text_features is None:
            text_features = self.text_features(categories)
        return self.head(self.encode_image(images), text_features, images.shape[-1])

    def loss(
        self,
        features: VisualFeatures,
        labels: torch.Tensor,
        masks: torch.Tensor,
        image_size: int,
        categories: Sequence[str] | None = None,
    ) -> tuple[GlocalLoss, AnomalyOutput]:
        """The glocal training loss of a batch, with gradients reaching the prompt learner."""
        output = self.head(features, self.text_features(categories), image_size, smooth=False)
        masks = (masks > 0.5).to(output.similarity_maps[0].dtype)
        return glocal_loss(output.global_logits, labels, output.similarity_maps, masks, self.config.loss), output
