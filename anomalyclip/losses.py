"""AnomalyCLIP's glocal loss: cross-entropy on the global logits plus lambda x (focal + dice terms) per layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from anomalyclip.config import LossConfig


@dataclass
class GlocalLoss:
    """The loss parts of one step; `total` is what is back-propagated."""

    total: torch.Tensor
    global_loss: torch.Tensor
    local_loss: torch.Tensor
    focal_per_layer: list[torch.Tensor]


def focal_loss(
    probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5
) -> torch.Tensor:
    """Focal loss on (B, C, H, W) probabilities and (B, H, W) integer targets, mean over pixels.

    As the official loss (Hsuxu/Loss_ToolBox): one-hot labels clamped to [smooth/(C-1), 1-smooth], p_t = sum(label*p)
    + smooth, loss = -(1 - p_t)^gamma log p_t, alpha = 1.
    """
    low, high = smooth / (probabilities.shape[1] - 1), 1.0 - smooth
    # sum over classes of clamp(one_hot, low, high) * p, without building the one-hot tensor
    at_target = probabilities.gather(1, target.long().unsqueeze(1)).squeeze(1)
    pt = low * probabilities.sum(dim=1) + (high - low) * at_target + smooth
    return (-((1 - pt) ** gamma) * pt.log()).mean()


def dice_loss(prediction: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over images of (2|P∩T| + smooth) / (|P| + |T| + smooth), on (B, H, W) soft maps."""
    p = prediction.flatten(1)
    t = target.flatten(1).to(p.dtype)
    dice = (2 * (p * t).sum(dim=1) + smooth) / (p.sum(dim=1) + t.sum(dim=1) + smooth)
    return 1 - dice.mean()


def glocal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    maps: list[torch.Tensor],
    masks: torch.Tensor,
    config: LossConfig,
) -> GlocalLoss:
    """Total = CE(global logits, labels) + lambda * sum over layers of focal + dice(S_a, M) + dice(S_n, 1 - M).

    `logits` (B, 2) already divided by the temperature; `maps` one (B, 2, H, W) [S_n, S_a] per layer; `masks`
    (B, H, W) binary.
    """
    global_loss = F.cross_entropy(logits, labels.long()) if config.use_global else logits.new_zeros(())
    local = logits.new_zeros(())
    focal_terms = []
    for m in maps:
        focal = focal_loss(m, masks, config.focal_gamma, config.focal_smooth)
        focal_terms.append(focal)
        if config.use_focal:
            local = local + focal
        if config.use_dice:
            local = local + dice_loss(m[:, 1], masks, config.dice_smooth)
            local = local + dice_loss(m[:, 0], 1 - masks, config.dice_smooth)
    local = config.lambda_local * local
    return GlocalLoss(total=local + global_loss, global_loss=global_loss, local_loss=local, focal_per_layer=focal_terms)
