import pytest
import torch

from sharp_fpn.unet.metrics import SEED_BATCH_SIZE, ForegroundScores, iou_batch_pooled, soft_dice

# Three 4-pixel images, worked by hand below.
PROB = torch.tensor([[0.9, 0.8, 0.2, 0.1], [0.6, 0.6, 0.6, 0.4], [0.1, 0.1, 0.1, 0.1]])
TRUE = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
# binary at 0.5: image 0 predicts 2 px, hits 1 of 1 (IoU 1/2, Dice 2/3); image 1 predicts 3 px,
# hits 2 of 2 (IoU 2/3, Dice 4/5); image 2 predicts none of none (IoU = Dice = 1).


def scores(batch_size=SEED_BATCH_SIZE):
    result = ForegroundScores(batch_size=batch_size)
    result.update(PROB, TRUE)
    return result


def test_every_definition_by_hand():
    result = scores(batch_size=2).summary()
    assert result["iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert result["dice"] == pytest.approx((2 / 3 + 4 / 5 + 1) / 3)
    assert result["iou_pooled"] == pytest.approx(3 / 5)  # intersection 3, union 5
    assert result["dice_pooled"] == pytest.approx(6 / 8)
    # batches {0, 1}: 3/5, weight 2; {2}: empty, 1, weight 1
    assert result["iou_batch2"] == pytest.approx((2 * 3 / 5 + 1) / 3)
    # background: 12 px, union of foregrounds 5 -> 7 px in both backgrounds, 9 in either
    assert result["miou_fg_bg"] == pytest.approx((3 / 5 + 7 / 9) / 2)
    # soft: sum(p * y), sum(p), sum(y) = (0.9, 2.0, 1), (1.2, 2.2, 2), (0, 0.4, 0); Laplace +1
    assert result["soft_dice"] == pytest.approx((2.8 / 4 + 3.4 / 5.2 + 1 / 1.4) / 3)
    assert result["images"] == 3


def test_values_are_fractions_and_the_seed_batch_is_the_default():
    result = scores().summary()
    assert f"iou_batch{SEED_BATCH_SIZE}" in result and SEED_BATCH_SIZE == 128
    # one batch holds the whole set: pooled per batch is pooled over the set
    assert result["iou_batch128"] == pytest.approx(result["iou_pooled"])
    assert all(0 <= value <= 1 for name, value in result.items() if name != "images")


def test_batch_pooling_is_pytorch_nested_unets_weighted_average():
    """Its validation: per batch (I + 1e-5) / (U + 1e-5), averaged with the batch size as weight."""
    torch.manual_seed(0)
    prob, true = torch.rand(10, 1, 8, 8), torch.rand(10, 1, 8, 8) > 0.6
    accumulated = ForegroundScores(batch_size=4)
    total, weight = 0.0, 0
    for start in range(0, 10, 4):
        p, t = prob[start : start + 4] > 0.5, true[start : start + 4]
        total += ((p & t).sum().item() + 1e-5) / ((p | t).sum().item() + 1e-5) * len(p)
        weight += len(p)
        accumulated.update(prob[start : start + 4], true[start : start + 4])
    assert iou_batch_pooled(accumulated.counts(), 4) == pytest.approx(total / weight, abs=1e-6)


def test_soft_dice_falls_below_binary_iou_on_unsure_probabilities():
    """The seed's Dice is below its IoU: possible for a soft Dice, never for a binary one."""
    result = ForegroundScores()
    result.update(torch.tensor([[0.6, 0.6, 0.4, 0.4]]), torch.tensor([[1, 1, 0, 0]]))
    assert result.summary()["iou"] == 1 and soft_dice(result.counts()) == pytest.approx(3.4 / 5)


def test_merge_equals_one_accumulator():
    a, b, both = ForegroundScores(), ForegroundScores(), ForegroundScores()
    x, y = torch.rand(4, 9), (torch.rand(4, 9) > 0.5)
    a.update(x[:2], y[:2])
    b.update(x[2:], y[2:])
    both.update(x, y)
    a.merge(b)
    assert a.summary() == both.summary()
