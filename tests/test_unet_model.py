import pytest
import torch

from sharp_fpn.schemes import SCHEMES, build_scheme
from sharp_fpn.unet import FILTERS, SchemeUNet, build_unet, count_parameters, supervised_nodes

TINY = [4, 8, 16, 32, 64]

# Table 1 of the seed and its Sec. 3.4.3 (design.md Sec. 5): 3 input channels, 1 output.
PAPER_COUNTS = {
    "unet": 7_852_545,
    "wide_unet": 9_392_916,
    "unet++": 9_163_329,
    "unet3+": 9_787_905,
    "unet#": 9_716_865,
}


@pytest.mark.parametrize("name,count", PAPER_COUNTS.items())
def test_parameter_counts_match_the_paper(name, count):
    assert count_parameters(build_unet(name)) == count


@pytest.mark.parametrize("level,branch_channels,count", [(1, 32, 103_041), (2, 0, 555_969), (3, 0, 2_531_073)])
def test_pruned_sharp_counts_match_the_paper(level, branch_channels, count):
    model = build_unet("unet#", filters=FILTERS[: level + 1], branch_channels=branch_channels)
    assert count_parameters(model) == count


def test_decoder_walks_the_shared_scheme():
    scheme = build_scheme("sharp", 5)
    model = SchemeUNet(scheme, TINY, branch_channels=2)
    assert list(model.decoder) == [f"X{i}_{j}" for i, j in scheme.nodes]
    # g: one per full-scale source node, whatever the number of nodes it feeds
    sources = {edge.src for edges in scheme.inputs.values() for edge in edges if edge.branch}
    assert set(model.branches) == {f"X{i}_{j}" for i, j in sources}
    x04 = model.decoder["X0_4"][0][0]
    assert x04.in_channels == 4 * TINY[0] + TINY[1] + 3 * 2  # X(0,0..3), up X(1,3), 3 branches


@pytest.mark.parametrize("name", SCHEMES)
def test_every_scheme_runs_at_a_size_not_divisible_by_16(name):
    size = 72
    model = SchemeUNet(build_scheme(name, 5), TINY, deep_supervision=True, branch_channels=4)
    out = model(torch.randn(1, 3, size, size))
    assert list(out.logits) == supervised_nodes(model.scheme, True)
    for (row, _), logits in out.logits.items():
        assert logits.shape == (1, 1, size // 2**row, size // 2**row)


def test_deep_supervision_heads_follow_the_paper():
    model = build_unet("unet#", filters=TINY, deep_supervision=True)
    kernels = {key: head.kernel_size for key, head in model.heads.items()}
    assert kernels == {
        "X0_1": (1, 1), "X0_2": (1, 1), "X0_3": (1, 1), "X0_4": (1, 1),
        "X1_3": (3, 3), "X2_2": (3, 3), "X3_1": (3, 3), "X4_0": (3, 3),
    }
    assert list(build_unet("unet#", filters=TINY).heads) == ["X0_4"]


def test_wrong_number_of_filters_is_refused():
    with pytest.raises(ValueError, match="4 filters for a 5-level scheme"):
        SchemeUNet(build_scheme("plain", 5), TINY[:4])
