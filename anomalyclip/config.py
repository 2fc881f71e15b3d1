"""One typed configuration for the model, its losses and its training recipe.

The defaults are the official recipe of zqhang/AnomalyCLIP at commit 45ed4dd (train.sh / test.sh):
ViT-L/14@336 at 518 px, local features from block 24, DPAM on blocks 6-24, prompt length 12, deep text tokens of
length 4 in text blocks 2-9, temperature 0.07, Gaussian sigma 4, lambda 4, Adam 1e-3 (0.5, 0.999), 15 epochs, batch 8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from anomalyclip.errors import ConfigError
from anomalyclip.settings import Settings, from_mapping, load_settings, setting

DpamMode = Literal["vv", "qq", "kk", "qq+kk+vv", "qk+qq+kk+vv"]
"""V-V is the paper's; the ensembles (revised Table 12) average the listed attentions."""


@dataclass
class PromptConfig(Settings):
    """The object-agnostic prompt learner: `[V1..VE] object.` and `[W1..WE] damaged object.`."""

    section: ClassVar[str] = "prompt"

    n_ctx: int = setting(12, "learnable context vectors E per prompt", ge=1, cli=True)
    depth: int = setting(9, "text blocks that get learnable deep tokens (the first keeps the prompt)", ge=1, cli=True)
    t_n_ctx: int = setting(4, "length of the deep text tokens (at most n_ctx)", ge=1, cli=True)
    object_word: str = setting("object", "the word after the context vectors", nonempty=True)
    object_aware: bool = setting(False, "put each image's category name where object_word stands (ablation)")
    fixed_class_name: str = setting("", "one word in place of every class name in the hand-made prompts of CLIP and "
                                    "CLIP-AC (empty: each category's own; the text held fixed)")  # fmt: skip
    state_word: str = setting("damaged", "the anomaly state word of the abnormal prompt", nonempty=True, cli=True)
    normal_word: str = setting("", 'a state word for the normal prompt (empty in AnomalyCLIP; "normal" for CoOp)')
    shared_context: bool = setting(False, "one set of context vectors for both prompts (ablation)")
    deep_tokens: bool = setting(True, "learnable tokens in the text encoder's blocks 2..depth")
    fp16_deep_tokens: bool = setting(True, "cast deep tokens with .half() as the official code does (bit-exact)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.deep_tokens and self.t_n_ctx > self.n_ctx:
            raise ConfigError(
                f"prompt.t_n_ctx = {self.t_n_ctx}: expected at most prompt.n_ctx ({self.n_ctx}); the deep tokens "
                "cannot exceed the prompt length"
            )


@dataclass
class VisionConfig(Settings):
    """Which blocks feed the local maps, where DPAM runs, and the input size."""

    section: ClassVar[str] = "vision"

    image_size: int = setting(518, "input size in pixels (a multiple of the patch size)", ge=1, cli=True)
    features_list: tuple[int, ...] = setting((24,), "1-indexed blocks whose patch tokens give the local maps", ge=1,
                                             nonempty=True, cli=True)  # fmt: skip
    dpam_blocks: int = setting(19, "trailing blocks with the DPAM path (19 = blocks 6-24 of 24); 0 = off", ge=0,
                               cli=True)  # fmt: skip
    dpam_mode: DpamMode = setting("vv", "the DPAM attention: V-V (the paper), Q-Q, K-K or an ensemble", cli=True)
    global_ln_post: bool = setting(False, "apply ln_post to the global embedding as CLIP does (official: skipped)")


@dataclass
class HeadConfig(Settings):
    """Similarity head: temperature and the smoothing of the summed maps."""

    section: ClassVar[str] = "head"

    temperature: float = setting(0.07, "softmax temperature of the text-image similarities", gt=0)
    sigma: float = setting(4.0, "Gaussian smoothing of the anomaly maps in pixels (0 = none)", ge=0, cli=True)


@dataclass
class LossConfig(Settings):
    """Glocal loss: cross-entropy on the global logits plus lambda x (focal + two dice terms) per layer."""

    section: ClassVar[str] = "loss"

    lambda_local: float = setting(4.0, "weight of the local (focal + dice) loss", ge=0, cli=True)
    focal_gamma: float = setting(2.0, "focal loss exponent", ge=0)
    focal_smooth: float = setting(1e-5, "focal loss label smoothing", ge=0, lt=1)
    dice_smooth: float = setting(1.0, "dice loss smoothing term", ge=0)
    use_global: bool = setting(True, "the global cross-entropy term")
    use_focal: bool = setting(True, "the focal term of the local loss")
    use_dice: bool = setting(True, "the dice terms of the local loss")


@dataclass
class TrainConfig(Settings):
    """The optimiser and schedule of the official train.py."""

    section: ClassVar[str] = "train"

    epochs: int = setting(15, "training epochs", ge=1, cli=True)
    batch_size: int = setting(8, "training batch size", ge=1, cli=True)
    lr: float = setting(1e-3, "Adam learning rate", gt=0, cli=True)
    betas: tuple[float, float] = setting((0.5, 0.999), "Adam betas", ge=0, lt=1)
    seed: int = setting(111, "seed of the prompt initialisation and the epoch order", ge=0, cli=True)


@dataclass
class AnomalyCLIPConfig(Settings):
    """Everything that defines a model run; saved inside every checkpoint the project writes."""

    backbone: str = setting("ViT-L-14-336", "open_clip model name, 'tiny', or a CLIP weights file", nonempty=True)
    pretrained: str | None = setting("openai", "open_clip pretrained tag or weights file; null for random weights")
    prompt: PromptConfig = field(default_factory=PromptConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnomalyCLIPConfig:
        """Build from a (possibly partial) nested dict; unknown keys are an error, not ignored; lists become tuples."""
        return from_mapping(cls, data)

    @classmethod
    def from_file(cls, path: str | Path) -> AnomalyCLIPConfig:
        """Build from a YAML or JSON file holding a (partial) nested mapping; errors name the file."""
        return load_settings(cls, path)

    def replace(self, **sections: Any) -> AnomalyCLIPConfig:
        """A copy with whole sections or top-level fields replaced."""
        return dataclasses.replace(self, **sections)
