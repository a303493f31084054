import pytest
import torch

from sharp_fpn.unet.metrics import ForegroundScores


def test_foreground_iou_and_dice_by_hand():
    scores = ForegroundScores()
    prob = torch.tensor([[0.9, 0.9, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]])
    true = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    scores.update(prob, true)
    result = scores.summary()
    # image 0: intersection 1, union 2 -> IoU 1/2, Dice 2/3; image 1: both empty -> 1
    assert result["iou"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert result["dice"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert result["iou_pooled"] == pytest.approx(50) and result["dice_pooled"] == pytest.approx(100 * 2 / 3)


def test_merge_equals_one_accumulator():
    a, b, both = ForegroundScores(), ForegroundScores(), ForegroundScores()
    x, y = torch.rand(4, 9), (torch.rand(4, 9) > 0.5)
    a.update(x[:2], y[:2])
    b.update(x[2:], y[2:])
    both.update(x, y)
    a.merge(b)
    assert a.summary() == both.summary()
