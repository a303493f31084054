import pytest
import torch

from sharp_fpn.unet import build_unet, count_parameters, prune, pruned_model

TINY = [4, 8, 16, 32, 64]


@pytest.mark.parametrize("name", ["unet++", "unet#"])
def test_pruned_models_reproduce_the_full_models_heads(name):
    """Embedded training: L^i cut from the trained L^4 gives X(0, i)'s output unchanged."""
    torch.manual_seed(0)
    full = build_unet(name, filters=TINY, deep_supervision=True).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full(images).logits
        for level in (1, 2, 3, 4):
            small = prune(full, level)
            assert torch.allclose(small(images).logits[(0, level)], expected[(0, level)], atol=1e-6)
            assert torch.allclose(full(images, level=level).logits[(0, level)], expected[(0, level)], atol=1e-6)
            assert list(small.heads) == [f"X0_{level}"]
            assert count_parameters(small) < count_parameters(full)


def test_pruned_level_1_is_unet_plus_plus_l1():
    """Fig. 4 (d): UNet# L^1 has the structure of UNet++ L^1."""
    sharp, nested = (prune(build_unet(n, deep_supervision=True), 1) for n in ("unet#", "unet++"))
    assert count_parameters(sharp) == count_parameters(nested) == 103_041


def test_isolated_training_builds_a_small_model_of_its_own():
    model = pruned_model(build_unet("unet#", filters=TINY), 2, deep_supervision=True)
    assert model.scheme.levels == 3 and model.filters == TINY[:3]
    assert set(model.heads) == {"X0_1", "X0_2", "X1_1", "X2_0"}


def test_pruning_needs_deep_supervision_and_a_prunable_scheme():
    with pytest.raises(ValueError, match="train with deep supervision"):
        prune(build_unet("unet#", filters=TINY), 2)
    with pytest.raises(ValueError, match="no intermediate first-row nodes"):
        prune(build_unet("unet3+", filters=TINY, deep_supervision=True), 2)
    with pytest.raises(ValueError, match="level must be in 1..4"):
        prune(build_unet("unet#", filters=TINY, deep_supervision=True), 5)
