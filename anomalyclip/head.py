"""The similarity head: patch-text probabilities, upsampled maps, the anomaly map and the image score."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def patch_probabilities(patch_tokens: torch.Tensor, text_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, N, E) patch tokens, (2, E) or per-image (B, 2, E) normalised text -> (B, N, 2) softmax of cosine / T.

    The CLS token (position 0) is dropped.
    """
    patches = F.normalize(patch_tokens[:, 1:], dim=-1)
    return (patches @ text_features.transpose(-1, -2) / temperature).softmax(dim=-1)


def upsample(probabilities: torch.Tensor, size: int) -> torch.Tensor:
    """(B, G*G, C) per-patch values -> (B, C, size, size) by bilinear interpolation (align_corners=False)."""
    b, n, c = probabilities.shape
    grid = math.isqrt(n)
    maps = probabilities.transpose(1, 2).reshape(b, c, grid, grid)
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def similarity_maps(
    patch_tokens: list[torch.Tensor], text_features: torch.Tensor, size: int, temperature: float
) -> list[torch.Tensor]:
    """One (B, 2, size, size) map [S_n, S_a] per layer."""
    return [upsample(patch_probabilities(t, text_features, temperature), size) for t in patch_tokens]


def anomaly_map(maps: list[torch.Tensor]) -> torch.Tensor:
    """(B, S, S): sum over layers of (S_a + 1 - S_n) / 2, the official formula (equal to S_a; official issue #68)."""
    return torch.stack([(m[:, 1] + 1 - m[:, 0]) / 2 for m in maps]).sum(dim=0)


def image_scores(global_embedding: torch.Tensor, text_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,) abnormal probability of softmax(cosine(global, text) / temperature)."""
    return global_logits(global_embedding, text_features, temperature).softmax(dim=-1)[:, 1]


def global_logits(global_embedding: torch.Tensor, text_features: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, 2) cosine similarities / temperature between image and [normal, abnormal] text, (2, E) or (B, 2, E)."""
    image = F.normalize(global_embedding, dim=-1)
    if text_features.ndim == 3:
        return torch.einsum("be,bke->bk", image, text_features) / temperature
    return image @ text_features.t() / temperature


def gaussian_kernel(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 1-D kernel of `scipy.ndimage.gaussian_filter`: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def _reflect_indices(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices that pad an axis by `radius` in scipy's 'reflect' mode (d c b a | a b c d | d c b a)."""
    idx = torch.arange(-radius, length + radius, device=device)
    period = 2 * length
    idx = torch.remainder(idx, period)
    return torch.where(idx >= length, period - 1 - idx, idx)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """(B, H, W) -> (B, H, W): separable Gaussian equal to scipy.ndimage.gaussian_filter per image, on any device.

    Axis 0 (rows) first, then axis 1, both with scipy's default 'reflect' boundary. sigma <= 0 returns the input.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma, truncate, maps.dtype).to(maps.device)
    radius = (kernel.numel() - 1) // 2
    x = maps.unsqueeze(1)
    h, w = maps.shape[-2:]
    x = x.index_select(2, _reflect_indices(h, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = x.index_select(3, _reflect_indices(w, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x.squeeze(1)
