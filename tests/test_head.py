"""Head, smoothing and losses agree with their reference definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomalyclip.config import LossConfig
from anomalyclip.head import anomaly_map, gaussian_blur, patch_probabilities, upsample
from anomalyclip.losses import dice_loss, focal_loss, glocal_loss


@pytest.mark.parametrize("shape,sigma", [((2, 64, 64), 4), ((1, 518, 518), 4), ((3, 20, 37), 4), ((1, 9, 9), 4),
                                         ((2, 30, 30), 1.5)])  # fmt: skip
def test_gaussian_blur_equals_scipy(shape, sigma):
    rng = np.random.default_rng(0)
    maps = rng.random(shape).astype(np.float32)
    expected = np.stack([gaussian_filter(m, sigma=sigma) for m in maps])
    actual = gaussian_blur(torch.from_numpy(maps), sigma).numpy()
    np.testing.assert_allclose(actual, expected, atol=2e-6)


def test_patch_probabilities_drop_cls_and_sum_to_one():
    tokens = torch.randn(2, 1 + 16, 8)
    text = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    probs = patch_probabilities(tokens, text, 0.07)
    assert probs.shape == (2, 16, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 16))
    maps = upsample(probs, 32)
    assert maps.shape == (2, 2, 32, 32)
    torch.testing.assert_close(anomaly_map([maps]), maps[:, 1])


def _focal_reference(p: torch.Tensor, target: torch.Tensor, gamma: float, smooth: float) -> torch.Tensor:
    total = []
    for b in range(p.shape[0]):
        for i in range(p.shape[2]):
            for j in range(p.shape[3]):
                label = int(target[b, i, j])
                weights = [smooth if c != label else 1 - smooth for c in range(p.shape[1])]
                pt = sum(w * p[b, c, i, j] for c, w in enumerate(weights)) + smooth
                total.append(-((1 - pt) ** gamma) * torch.log(pt))
    return torch.stack(total).mean()


def test_focal_loss_matches_elementwise_definition():
    torch.manual_seed(0)
    p = torch.rand(2, 2, 5, 6).softmax(dim=1)
    target = (torch.rand(2, 5, 6) > 0.7).long()
    torch.testing.assert_close(focal_loss(p, target), _focal_reference(p, target, 2.0, 1e-5))


def test_dice_loss_is_zero_for_perfect_and_large_for_disjoint():
    mask = torch.zeros(1, 8, 8)
    mask[0, :4] = 1
    assert dice_loss(mask, mask, smooth=0).item() == pytest.approx(0.0)
    assert dice_loss(1 - mask, mask, smooth=0).item() == pytest.approx(1.0)


def test_glocal_loss_switches_and_lambda():
    torch.manual_seed(0)
    maps = [torch.rand(2, 2, 8, 8).softmax(dim=1) for _ in range(2)]
    masks = (torch.rand(2, 8, 8) > 0.5).float()
    logits, labels = torch.randn(2, 2), torch.tensor([0, 1])
    full = glocal_loss(logits, labels, maps, masks, LossConfig())
    half = glocal_loss(logits, labels, maps, masks, LossConfig(lambda_local=2.0))
    torch.testing.assert_close(full.local_loss, 2 * half.local_loss)
    no_global = glocal_loss(logits, labels, maps, masks, LossConfig(use_global=False))
    torch.testing.assert_close(no_global.total, full.local_loss)
    focal_only = glocal_loss(logits, labels, maps, masks, LossConfig(use_dice=False))
    torch.testing.assert_close(focal_only.local_loss, 4 * sum(focal_only.focal_per_layer))
