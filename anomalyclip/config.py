"""One typed configuration for the model, its losses and its training recipe.

The defaults are the official recipe of zqhang/AnomalyCLIP at commit 45ed4dd (train.sh / test.sh):
ViT-L/14@336 at 518 px, local features from block 24, DPAM on blocks 6-24, prompt length 12, deep text tokens of
length 4 in text blocks 2-9, temperature 0.07, Gaussian sigma 4, lambda 4, Adam 1e-3 (0.5, 0.999), 15 epochs, batch 8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from anomalyclip.errors import ConfigError

DpamMode = Literal["vv", "qq", "kk"]


@dataclass
class PromptConfig:
    """The object-agnostic prompt learner: `[V1..VE] object.` and `[W1..WE] damaged object.`."""

    n_ctx: int = 12
    depth: int = 9
    t_n_ctx: int = 4
    object_word: str = "object"
    object_aware: bool = False
    """Ablation: put each image's category name where `object_word` stands (per-sample prompts)."""
    state_word: str = "damaged"
    normal_word: str = ""
    """A state word for the normal prompt (empty in AnomalyCLIP; "normal" for the CoOp baseline)."""
    shared_context: bool = False
    deep_tokens: bool = True
    fp16_deep_tokens: bool = True
    """The official code casts the deep tokens with `.half()`; keep it to match its numbers bit for bit."""


@dataclass
class VisionConfig:
    """Which blocks feed the local maps, where DPAM runs, and the input size."""

    image_size: int = 518
    features_list: tuple[int, ...] = (24,)
    dpam_blocks: int = 19
    """How many trailing blocks get the DPAM path (19 = blocks 6-24 of 24, the official `DPAM_layer=20`); 0 = off."""
    dpam_mode: DpamMode = "vv"
    global_ln_post: bool = False
    """The official global embedding skips `ln_post` (official issue #14); True applies it as CLIP does."""


@dataclass
class HeadConfig:
    """Similarity head: temperature and the smoothing of the summed maps."""

    temperature: float = 0.07
    sigma: float = 4.0


@dataclass
class LossConfig:
    """Glocal loss: cross-entropy on the global logits plus lambda x (focal + two dice terms) per layer."""

    lambda_local: float = 4.0
    focal_gamma: float = 2.0
    focal_smooth: float = 1e-5
    dice_smooth: float = 1.0
    use_global: bool = True
    use_focal: bool = True
    use_dice: bool = True


@dataclass
class TrainConfig:
    """The optimiser and schedule of the official train.py."""

    epochs: int = 15
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    seed: int = 111


@dataclass
class AnomalyCLIPConfig:
    """Everything that defines a model run; saved inside every checkpoint the project writes."""

    backbone: str = "ViT-L-14-336"
    pretrained: str | None = "openai"
    prompt: PromptConfig = field(default_factory=PromptConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnomalyCLIPConfig:
        """Build from a (possibly partial) nested dict; unknown keys are an error, not ignored."""
        sections = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in sections:
                raise ConfigError(f"unknown configuration key {key!r}; expected one of {sorted(sections)}")
            section_type = _SECTION_TYPES.get(key)
            kwargs[key] = _build_section(section_type, key, value) if section_type else value
        return cls(**kwargs)

    def replace(self, **sections: Any) -> AnomalyCLIPConfig:
        """A copy with whole sections or top-level fields replaced."""
        return dataclasses.replace(self, **sections)


_SECTION_TYPES: dict[str, type] = {
    "prompt": PromptConfig,
    "vision": VisionConfig,
    "head": HeadConfig,
    "loss": LossConfig,
    "train": TrainConfig,
}


def _build_section(section_type: type, name: str, value: Any) -> Any:
    if isinstance(value, section_type):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"configuration section {name!r} must be a mapping, got {type(value).__name__}")
    known = {f.name: f for f in dataclasses.fields(section_type)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in configuration section {name!r}; expected {sorted(known)}")
    coerced = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return section_type(**coerced)
