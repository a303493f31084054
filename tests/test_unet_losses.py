import math

import pytest
import torch

from sharp_fpn.unet.losses import HybridLoss, focal_loss, lovasz_hinge_loss, soft_dice_loss


def as_map(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_focal_loss_by_hand():
    # logit 0 -> p = 0.5 for both pixels; positive: 0.25 * 0.5^2 * ln 2, negative: 0.75 * 0.5^2 * ln 2
    loss = focal_loss(as_map([0.0, 0.0]), as_map([1, 0]))
    assert loss.item() == pytest.approx((0.25 + 0.75) * 0.25 * math.log(2) / 2)
    # a confident right answer costs almost nothing, a confident wrong one a lot
    assert focal_loss(as_map([8.0]), as_map([1])) < 1e-6 < focal_loss(as_map([-8.0]), as_map([1]))


def test_soft_dice_loss_by_hand():
    logit = math.log(3)  # p = 0.75
    loss = soft_dice_loss(as_map([logit, -logit]), as_map([1, 0]))  # p = (0.75, 0.25)
    assert loss.item() == pytest.approx(1 - (2 * 0.75 + 1) / (1.0 + 1 + 1))
    # Laplace smoothing: an empty prediction of an empty mask is perfect, not 0 / 0
    assert soft_dice_loss(as_map([-30.0, -30.0]), as_map([0, 0])).item() == pytest.approx(0, abs=1e-6)


def test_lovasz_hinge_by_hand():
    # one positive (logit 0.5) and one negative (logit 0.2): errors 0.5 and 1.2, sorted
    # (1.2 neg, 0.5 pos). Jaccard loss after 1 error: 1 - 1/2 = 0.5; after 2: 1 -> weights (0.5, 0.5)
    loss = lovasz_hinge_loss(as_map([0.5, 0.2]), as_map([1, 0]))
    assert loss.item() == pytest.approx(0.5 * 1.2 + 0.5 * 0.5)
    # margins >= 1 on every pixel: no loss
    assert lovasz_hinge_loss(as_map([2.0, -3.0]), as_map([1, 0])).item() == 0


def test_lovasz_hinge_is_per_image_mean():
    logits = torch.tensor([[0.5, 0.2], [2.0, -3.0]]).view(2, 1, 1, 2)
    target = torch.tensor([[1, 0], [1, 0]]).view(2, 1, 1, 2)
    assert lovasz_hinge_loss(logits, target).item() == pytest.approx((0.85 + 0) / 2)


def test_hybrid_loss_is_eq_2():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    expected = 0.5 * focal_loss(logits, target) + soft_dice_loss(logits, target) + 0.5 * lovasz_hinge_loss(logits, target)
    assert HybridLoss()(logits, target).item() == pytest.approx(expected.item())
