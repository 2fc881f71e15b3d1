"""AnomalyCLIP and the baselines that share its frozen CLIP and similarity head: CLIP, CLIP-AC and CoOp.

- `anomalyclip`: object-agnostic learned prompts, deep text tokens, DPAM (the official recipe, `AnomalyCLIPConfig()`).
- `clip`: plain CLIP (the paper's baseline, official issue #25): the standard image embedding (CLS, `ln_post`,
  `proj`), no DPAM, pixel maps from the last block's patch tokens (`ln_post`, `proj`), and the two sentences
  "a photo of a normal [cls]." / "a photo of an anomalous [cls].".
- `clip_ac`: the same model with the CLIP-AC ensemble (7 normal x 5 abnormal state phrases x 35 templates).
- `coop`: plain CLIP with one learned context `[V1..VN]` before "normal [cls]" / "anomalous [cls]" (the paper's
  rebuttal), no deep tokens, trained with AnomalyCLIP's recipe, loss (glocal, `LossConfig`) and auxiliary data:
  the paper does not name CoOp's loss, and the same loss isolates what the prompt design changes.
All four apply the same temperature (0.07) and Gaussian smoothing (sigma 4); maps are `(S_a + 1 - S_n) / 2`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from anomalyclip.config import AnomalyCLIPConfig
from anomalyclip.errors import ConfigError
from anomalyclip.methods.base import Detector, DetectorOutput
from anomalyclip.methods.catalog import LEARNED_PROMPTS
from anomalyclip.model import AnomalyCLIP
from anomalyclip.prompts import clip_ac_prompt_features, clip_prompt_features
from anomalyclip.text import TextEncoder

HANDMADE: dict[str, Callable[[TextEncoder, str], torch.Tensor]] = {
    "clip": clip_prompt_features,
    "clip_ac": clip_ac_prompt_features,
}
"""The hand-made prompt baselines: text features of a class name."""

PROMPTED = (*LEARNED_PROMPTS, *HANDMADE)


def method_config(method: str, config: AnomalyCLIPConfig, depth: int) -> AnomalyCLIPConfig:
    """`config` turned into `method`'s: plain CLIP vision for the baselines (`depth` = the backbone's blocks)."""
    if config.prompt.fixed_class_name and method not in HANDMADE:
        raise ConfigError(f"prompt.fixed_class_name = {config.prompt.fixed_class_name!r} applies to the hand-made "
                          f"prompts of {' and '.join(HANDMADE)}, not to {method}; leave it empty")  # fmt: skip
    if method == "anomalyclip":
        return config
    plain = dataclasses.replace(config.vision, dpam_blocks=0, global_ln_post=True, features_list=(depth,))
    config = config.replace(vision=plain)
    if method == "coop":
        prompt = dataclasses.replace(
            config.prompt,
            object_aware=True,
            deep_tokens=False,
            shared_context=True,
            normal_word="normal",
            state_word="anomalous",
        )
        config = config.replace(prompt=prompt)
    return config


def category_text_features(model: AnomalyCLIP, category: str) -> torch.Tensor:
    """(2, E) learned text features for one category: its class name in object-aware prompts, else the shared ones."""
    if model.config.prompt.object_aware:
        return model.text_features([category])[0]
    return model.text_features()


class PromptedDetector(Detector):
    """An `AnomalyCLIP` model scored with its learned prompts, or with hand-made prompts of the class name."""

    def __init__(self, model: AnomalyCLIP, method: str = "anomalyclip"):
        super().__init__(model.config.vision.image_size, sigma=model.config.head.sigma)
        if method not in PROMPTED:
            raise ValueError(f"{method!r} is not a prompt-based method; expected one of {PROMPTED}")
        self.model = model
        self.name = method
        self.learns = method in LEARNED_PROMPTS

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def config(self) -> AnomalyCLIPConfig:
        return self.model.config

    def prepare(self, category: str, references: torch.Tensor | None = None) -> torch.Tensor:
        """(2, E) text features of the category."""
        if self.name in HANDMADE:
            name = self.config.prompt.fixed_class_name or category.replace("_", " ")
            return HANDMADE[self.name](self.model.text, name)
        return category_text_features(self.model, category)

    def score(self, images: torch.Tensor, prepared: torch.Tensor) -> DetectorOutput:
        output = self.model.head(self.model.encode_image(images), prepared, images.shape[-1], smooth=False)
        cosines = output.global_logits * self.model.config.head.temperature
        return DetectorOutput(
            image_scores=output.image_scores,
            anomaly_maps=output.anomaly_map_raw,
            extras={"cos_normal": cosines[:, 0], "cos_abnormal": cosines[:, 1]},
        )

    def fit(self, records: Sequence[Any], out_dir: str | Path, **options: Any) -> Any:
        """Learn the prompts with the official recipe (`anomalyclip.engine.train`); a `cache_dir` keeps the feature
        cache on disk there. Options given as None take `train`'s defaults."""
        if not self.learns:
            return super().fit(records, out_dir, **options)
        from anomalyclip.engine.training import train

        options = {name: value for name, value in options.items() if value is not None}
        if options.get("cache_dir") is not None:
            options.setdefault("cache", "disk")
        return train(self.model, records, out_dir, method=self.name, **options)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"config": self.model.config.to_dict()}
