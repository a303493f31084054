import torch

from sharp_fpn.unet import UNetOutput, build_unet, combine_heads
from sharp_fpn.unet.cgm import ClassificationGuide, has_object

TINY = [4, 8, 16, 32, 64]


def test_two_cgm_forms_on_the_eight_branches():
    model = build_unet("unet#", filters=TINY, deep_supervision=True, cgm=True)
    assert len(model.cgms) == 8
    linear_layers = {key: sum(isinstance(m, torch.nn.Linear) for m in cgm.modules()) for key, cgm in model.cgms.items()}
    assert linear_layers == {"X0_1": 1, "X0_2": 1, "X0_3": 1, "X0_4": 1, "X1_3": 1, "X2_2": 1, "X3_1": 2, "X4_0": 2}


def test_cgm_pools_avg_and_max():
    cgm = ClassificationGuide(3).eval()
    assert cgm.classifier[0].num_features == 6
    assert cgm(torch.randn(2, 3, 5, 5)).shape == (2, 2)


def test_cgm_decision_gates_the_mask():
    mask = torch.full((2, 1, 2, 2), 3.0)
    objectness = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # image 0: object, image 1: none
    assert has_object(objectness).tolist() == [1.0, 0.0]
    prob = combine_heads(UNetOutput({(0, 1): mask}, {(0, 1): objectness}))
    assert torch.allclose(prob[0], torch.sigmoid(mask[0])) and prob[1].abs().sum() == 0
