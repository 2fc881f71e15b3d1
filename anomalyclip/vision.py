"""The vision side of AnomalyCLIP: resized positional embedding, the DPAM path, global and local features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

from anomalyclip.attention import block_forward, dpam_block_forward
from anomalyclip.config import VisionConfig
from anomalyclip.errors import ConfigError, InputSizeError


@dataclass
class VisualFeatures:
    """What the image encoder gives the head: one global embedding and the patch tokens of each chosen layer."""

    global_embedding: torch.Tensor
    """(B, E): CLS token of the original path, projected (not normalised)."""
    patch_tokens: list[torch.Tensor]
    """One (B, 1 + G*G, E) tensor per layer of `features_list`: `ln_post` then `proj` (CLS first, not normalised)."""


def resize_positional_embedding(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, W) -> (1 + grid*grid, W) by bilinear interpolation of the patch grid, like the official code.

    open_clip's own resize is bicubic with antialiasing; AnomalyCLIP's numbers depend on bilinear.
    """
    old = round((pos.shape[0] - 1) ** 0.5)
    if old == grid:
        return pos
    patches = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], patches.flatten(2).transpose(1, 2)[0]], dim=0)


def dpam_block_indices(num_blocks: int, dpam_blocks: int) -> range:
    """1-indexed blocks that get the DPAM path: the last `dpam_blocks` of `num_blocks`."""
    if not 0 <= dpam_blocks <= num_blocks:
        raise ConfigError(f"dpam_blocks must be between 0 and {num_blocks} (the backbone's depth), got {dpam_blocks}")
    return range(num_blocks - dpam_blocks + 1, num_blocks + 1)


class VisionEncoder(nn.Module):
    """Runs a frozen open_clip ViT with AnomalyCLIP's dual path; holds no trainable state of its own."""

    def __init__(self, clip: CLIP, config: VisionConfig):
        super().__init__()
        self.visual = clip.visual
        self.config = config
        blocks = len(self.visual.transformer.resblocks)
        bad = [layer for layer in config.features_list if not 1 <= layer <= blocks]
        if bad:
            raise ConfigError(f"features_list {list(config.features_list)} has layers {bad} outside 1..{blocks}")
        self.dpam = set(dpam_block_indices(blocks, config.dpam_blocks))
        self._pos_cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def patch_size(self) -> int:
        return self.visual.conv1.kernel_size[0]

    def grid_size(self, image_size: int) -> int:
        """Patches per side for a square input; the size must be a multiple of the patch."""
        if image_size <= 0 or image_size % self.patch_size:
            raise InputSizeError(
                f"image size {image_size} is not a positive multiple of the patch size {self.patch_size}; "
                f"use e.g. {max(1, round(image_size / self.patch_size)) * self.patch_size}"
            )
        return image_size // self.patch_size

    def positional_embedding(self, grid: int) -> torch.Tensor:
        pos = self.visual.positional_embedding
        key = (grid, pos.device, pos.dtype)
        if key not in self._pos_cache:
            self._pos_cache[key] = resize_positional_embedding(pos.detach(), grid)
        return self._pos_cache[key]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, CLS token, resized positional embedding and `ln_pre`: the input of block 1."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise InputSizeError(f"expected images of shape (B, 3, S, S), got {tuple(images.shape)}")
        grid = self.grid_size(images.shape[-1])
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid).to(x.dtype)
        return visual.ln_pre(x)

    @torch.no_grad()
    def block_input(self, images: torch.Tensor, block: int) -> torch.Tensor:
        """The original path's hidden state entering `block` (1-indexed), e.g. to inspect its attention."""
        x = self.embed(images)
        for block_module in self.visual.transformer.resblocks[: block - 1]:
            x = block_forward(block_module, x)
        return x

    def forward(self, images: torch.Tensor) -> VisualFeatures:
        x = self.embed(images)
        visual = self.visual
        dpam_x: torch.Tensor | None = None
        layers: list[torch.Tensor] = []
        for index, block in enumerate(visual.transformer.resblocks, start=1):
            if index in self.dpam:
                x, dpam_x = dpam_block_forward(block, x, x if dpam_x is None else dpam_x, self.config.dpam_mode)
            else:
                x = block_forward(block, x)
            if index in self.config.features_list:
                layers.append(x if dpam_x is None else dpam_x)

        cls_token = x[:, 0]
        if self.config.global_ln_post:
            cls_token = visual.ln_post(cls_token)
        patch_tokens = [visual.ln_post(t) @ visual.proj for t in layers]
        return VisualFeatures(global_embedding=cls_token @ visual.proj, patch_tokens=patch_tokens)
