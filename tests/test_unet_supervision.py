import pytest
import torch

from sharp_fpn.unet import DeepSupervisionLoss, HybridLoss, UNetOutput, build_unet, combine_heads
from sharp_fpn.unet.supervision import pooled_target

TINY = [4, 8, 16, 32, 64]


def test_ground_truth_is_max_pooled_to_each_head():
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 5, 2] = 1  # one pixel: its 2x2, 4x4 and 8x8 cells are foreground
    assert pooled_target(target, (4, 4))[0, 0].nonzero().tolist() == [[2, 1]]
    assert pooled_target(target, (1, 1)).item() == 1
    assert pooled_target(target, (8, 8)) is target


def test_loss_is_the_mean_over_heads():
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    full, half = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)
    losses = DeepSupervisionLoss()(UNetOutput({(0, 1): full, (1, 0): half}), target)
    hybrid = HybridLoss()
    expected = (hybrid(full, target) + hybrid(half, pooled_target(target, (4, 4)))) / 2
    assert losses["loss_seg"].item() == pytest.approx(expected.item())
    assert "loss_cgm" not in losses


def test_accurate_mode_averages_and_fast_mode_picks_one_head():
    a, b = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -2.0)
    out = UNetOutput({(0, 1): a, (0, 2): b, (1, 1): torch.zeros(1, 1, 1, 1)})
    assert torch.allclose(combine_heads(out, "accurate"), torch.full((1, 1, 2, 2), 0.5))
    assert torch.allclose(combine_heads(out, "fast", level=1), torch.sigmoid(a))
    assert torch.allclose(combine_heads(out, "fast"), torch.sigmoid(b))  # default: the last
    with pytest.raises(ValueError, match="valid: accurate, fast"):
        combine_heads(out, "slow")


def test_deeply_supervised_model_trains_every_parameter():
    torch.manual_seed(0)
    model = build_unet("unet#", filters=TINY, deep_supervision=True, cgm=True)
    images, target = torch.randn(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
    target[0, :, 10:30, 20:40] = 1  # the second image is empty: both CGM classes occur
    losses = DeepSupervisionLoss()(model(images), target)
    sum(losses.values()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("name", ["unet", "unet#"])
def test_loss_decreases_on_a_fixed_batch(name):
    from sharp_fpn.unet.data import synthetic_semantic_set

    torch.manual_seed(0)
    data = synthetic_semantic_set(4, 64)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 64 - 1
    target = torch.from_numpy(data.masks)[:, None].float()
    model = build_unet(name, filters=TINY, deep_supervision=name != "unet")
    criterion = DeepSupervisionLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = criterion(model(images), target)["loss_seg"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
