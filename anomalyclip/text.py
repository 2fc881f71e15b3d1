"""The text side: CLIP's text transformer with AnomalyCLIP's deep tokens, EOT pooling, `ln_final`, projection."""

from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
from open_clip.model import CLIP
from torch import nn

from anomalyclip.attention import block_forward


class TextEncoder(nn.Module):
    """Encodes token embeddings, optionally overwriting positions 1..t of blocks 2.. with learnable deep tokens."""

    def __init__(self, clip: CLIP, fp16_deep_tokens: bool = True):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.blocks = clip.transformer.resblocks
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.context_length = clip.context_length
        self.fp16_deep_tokens = fp16_deep_tokens

    @property
    def width(self) -> int:
        return self.ln_final.weight.shape[0]

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP BPE token ids, (N, context_length), on the encoder's device."""
        return open_clip.tokenize(list(texts), context_length=self.context_length).to(
            self.token_embedding.weight.device
        )

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)

    def forward(
        self,
        embeddings: torch.Tensor,
        tokens: torch.Tensor,
        deep_tokens: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """(N, L, W) prompt embeddings -> (N, E) text features (not normalised).

        Block i (0-based, i >= 1) first overwrites positions 1..t with `deep_tokens[i-1]` when there is one: the
        official "overwrite" semantics (official issue #75), not concatenation.
        """
        x = embeddings + self.positional_embedding.to(embeddings.dtype)
        for index, block in enumerate(self.blocks):
            if 1 <= index <= len(deep_tokens):
                x = self._overwrite(x, deep_tokens[index - 1])
            x = block_forward(block, x, causal=True)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection

    def _overwrite(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.fp16_deep_tokens:
            context = context.half()
        context = context.to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], context, x[:, 1 + context.shape[1] :]], dim=1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Plain CLIP text features of sentences (no learnable tokens), (N, E)."""
        tokens = self.tokenize(texts)
        return self(self.embed(tokens), tokens)
