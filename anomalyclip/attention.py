"""Transformer blocks of an open_clip CLIP run with `scaled_dot_product_attention`, including DPAM's dual attention.

These functions reuse the parameters of open_clip 3.3.0's `ResidualAttentionBlock` (`ln_1`, `attn.in_proj_*`,
`attn.out_proj`, `ln_2`, `mlp`), which is why the package pins that version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from anomalyclip.config import DpamMode


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, D/H)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D/H) -> (B, L, D)."""
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


def qkv(attn: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head queries, keys and values of `x` with the block's packed input projection."""
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return split_heads(q, attn.num_heads), split_heads(k, attn.num_heads), split_heads(v, attn.num_heads)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Plain multi-head self-attention, equal to `attn(x, x, x)` of CLIP."""
    q, k, v = qkv(attn, x)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return attn.out_proj(merge_heads(out))


def dual_attention(attn: nn.MultiheadAttention, x: torch.Tensor, mode: DpamMode) -> tuple[torch.Tensor, torch.Tensor]:
    """DPAM: the original Q-K attention and the diagonally prominent one (V-V, Q-Q or K-K) on the same input.

    Both use the same scale (head_dim^-0.5) and out-projection; the second replaces queries and keys by the chosen
    projection, so each token attends most to itself. An ensemble mode ("qq+kk+vv", revised Table 12) averages the
    outputs of the listed attentions (the paper gives no formula; this is our reading). Returns (original, dpam).
    """
    q, k, v = qkv(attn, x)
    pairs = {"qk": (q, k), "vv": (v, v), "qq": (q, q), "kk": (k, k)}
    chosen = [pairs[name] for name in mode.split("+")]
    queries = torch.cat([q, *(left for left, _ in chosen)])
    keys = torch.cat([k, *(right for _, right in chosen)])
    out = F.scaled_dot_product_attention(queries, keys, v.repeat(1 + len(chosen), 1, 1, 1))
    original, *dpam = attn.out_proj(merge_heads(out)).chunk(1 + len(chosen), dim=0)
    return original, dpam[0] if len(dpam) == 1 else torch.stack(dpam).mean(dim=0)


def block_forward(block: ResidualAttentionBlock, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """One pre-norm CLIP block: x + attn(ln_1 x), then + mlp(ln_2 x)."""
    x = x + block.ls_1(self_attention(block.attn, block.ln_1(x), causal))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def dpam_block_forward(
    block: ResidualAttentionBlock, x: torch.Tensor, dpam_x: torch.Tensor, mode: DpamMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """A DPAM block: the original path stays plain CLIP; the DPAM path adds only the DPAM attention (no MLP).

    Both attentions read `ln_1` of the original path's hidden state, as in the official code.
    """
    original, dpam = dual_attention(block.attn, block.ln_1(x), mode)
    x = x + block.ls_1(original)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, dpam_x + block.ls_1(dpam)


def attention_weights(attn: nn.MultiheadAttention, x: torch.Tensor, mode: str = "qk") -> torch.Tensor:
    """(B, L, L) head-averaged attention probabilities of `x` for 'qk' (CLIP) or a DPAM mode ('vv', 'qq', 'kk', or an
    ensemble such as 'qq+kk+vv': the mean of their probabilities)."""
    q, k, v = qkv(attn, x)
    pairs = {"qk": (q, k), "vv": (v, v), "qq": (q, q), "kk": (k, k)}
    chosen = [pairs[name] for name in mode.split("+")]
    weights = [(a @ b.transpose(-1, -2) * a.shape[-1] ** -0.5).softmax(dim=-1) for a, b in chosen]
    return torch.stack(weights).mean(dim=0).mean(dim=1)
