"""Text prompts: AnomalyCLIP's learnable object-agnostic prompts and the hand-made CLIP / CLIP-AC baselines."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomalyclip.config import PromptConfig
from anomalyclip.errors import ConfigError
from anomalyclip.text import TextEncoder

CLIP_TEMPLATES = ("a photo of a normal {}.", "a photo of an anomalous {}.")
"""The plain CLIP baseline of the paper's tables (official issue #25)."""

CLIP_AC_NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
CLIP_AC_ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
CLIP_AC_TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a bright photo of a {}.", "a dark photo of the {}.", "a photo of my {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "a low resolution photo of a {}.", "a photo of a large {}.", "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a photo of the small {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "a dark photo of a {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "there is a {} in the scene.", "there is the {} in the scene.",
    "this is a {} in the scene.", "this is the {} in the scene.", "this is one {} in the scene.",
)  # fmt: skip
"""The CLIP-AC ensemble: 7 normal x 5 abnormal state phrases x 35 templates (the official `prompt_ensemble.py`)."""


class PromptLearner(nn.Module):
    """Learnable prompts `[V1..VE] object.` / `[W1..WE] damaged object.` plus deep text tokens.

    Parameters are named as in the official checkpoints (`ctx_pos`, `ctx_neg`, `compound_prompts_text.i`) so that
    released `epoch_15.pth` files load directly.
    """

    def __init__(self, text_encoder: TextEncoder, config: PromptConfig, seed: int | None = None):
        """Vectors are drawn from N(0, 0.02) as in the official code; `seed` makes them reproducible."""
        super().__init__()
        if config.deep_tokens and not 1 <= config.depth <= len(text_encoder.blocks):
            raise ConfigError(f"depth must be in 1..{len(text_encoder.blocks)} (text blocks), got {config.depth}")
        self.config = config
        width = text_encoder.width
        generator = torch.Generator().manual_seed(seed) if seed is not None else None

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).normal_(std=0.02, generator=generator))

        self.ctx_pos = init(1, 1, config.n_ctx, width)
        self.ctx_neg = None if config.shared_context else init(1, 1, config.n_ctx, width)
        n_deep = config.depth - 1 if config.deep_tokens else 0
        self.compound_prompts_text = nn.ParameterList(init(config.t_n_ctx, width) for _ in range(n_deep))
        tokens, prefix, suffix = self._templates(text_encoder, config.object_word)
        self.register_buffer("tokenized_prompts", tokens, persistent=False)
        self.register_buffer("token_prefix", prefix, persistent=False)
        self.register_buffer("token_suffix", suffix, persistent=False)
        self._word_templates: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _templates(self, text_encoder: TextEncoder, word: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (2, L) of `X..X word.` / `X..X state word.`, and the embeddings before and after the X slots."""
        placeholder = " ".join(["X"] * self.config.n_ctx)
        normal = f"{self.config.normal_word} {word}".strip()
        texts = [f"{placeholder} {normal}.", f"{placeholder} {self.config.state_word} {word}."]
        tokens = text_encoder.tokenize(texts)
        with torch.no_grad():
            embedded = text_encoder.embed(tokens)
        return tokens, embedded[:, :1], embedded[:, 1 + self.config.n_ctx :]

    def _word_template(self, text_encoder: TextEncoder, word: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_templates` of one object word, cached, and moved to wherever the model went since it was cached."""
        device = self.ctx_pos.device
        cached = self._word_templates.get(word)
        if cached is None:
            cached = self._templates(text_encoder, word)
        if cached[0].device != device:
            cached = tuple(t.to(device) for t in cached)
        self._word_templates[word] = cached
        return cached

    def contexts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (E, W) context vectors of the normal and the abnormal prompt."""
        ctx_neg = self.ctx_pos if self.ctx_neg is None else self.ctx_neg
        return self.ctx_pos.reshape(self.config.n_ctx, -1), ctx_neg.reshape(self.config.n_ctx, -1)

    def _assemble(self, prefix: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        ctx = torch.stack(self.contexts()).to(prefix.dtype)
        return torch.cat([prefix, ctx.expand(prefix.shape[0] // 2, -1, -1, -1).flatten(0, 1), suffix], dim=1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(2, L, W) prompt embeddings [normal, abnormal], their token ids, and the deep tokens."""
        return (
            self._assemble(self.token_prefix, self.token_suffix),
            self.tokenized_prompts,
            list(self.compound_prompts_text),
        )

    def text_features(self, text_encoder: TextEncoder, object_words: Sequence[str] | None = None) -> torch.Tensor:
        """(2, E) L2-normalised [normal, abnormal] features, or (K, 2, E) with each of `object_words` in the prompt."""
        if object_words is None:
            prompts, tokens, deep = self()
            return F.normalize(text_encoder(prompts, tokens, deep), dim=-1)
        templates = [self._word_template(text_encoder, word) for word in object_words]
        tokens, prefix, suffix = (torch.cat(parts) for parts in zip(*templates, strict=True))
        features = text_encoder(self._assemble(prefix, suffix), tokens, list(self.compound_prompts_text))
        return F.normalize(features, dim=-1).view(len(object_words), 2, -1)


def ensemble_text_features(text_encoder: TextEncoder, normal: list[str], abnormal: list[str]) -> torch.Tensor:
    """(2, E): each class is the normalised mean of its normalised sentence embeddings."""
    features = []
    for sentences in (normal, abnormal):
        embedded = F.normalize(text_encoder.encode_texts(sentences), dim=-1)
        features.append(F.normalize(embedded.mean(dim=0), dim=-1))
    return torch.stack(features)


def clip_prompt_features(text_encoder: TextEncoder, class_name: str = "object") -> torch.Tensor:
    """Plain CLIP: 'a photo of a normal [cls].' vs 'a photo of an anomalous [cls].'."""
    normal, abnormal = (t.format(class_name) for t in CLIP_TEMPLATES)
    return ensemble_text_features(text_encoder, [normal], [abnormal])


def clip_ac_sentences(class_name: str = "object") -> tuple[list[str], list[str]]:
    """The normal (7 x 35) and abnormal (5 x 35) CLIP-AC sentences, state-major as the official ensemble builds them."""

    def sentences(states: tuple[str, ...]) -> list[str]:
        return [t.format(s.format(class_name)) for s in states for t in CLIP_AC_TEMPLATES]

    return sentences(CLIP_AC_NORMAL_STATES), sentences(CLIP_AC_ABNORMAL_STATES)


def clip_ac_prompt_features(text_encoder: TextEncoder, class_name: str = "object") -> torch.Tensor:
    """CLIP-AC: the state-phrase x template ensemble of the official `encode_text_with_prompt_ensemble`."""
    return ensemble_text_features(text_encoder, *clip_ac_sentences(class_name))
