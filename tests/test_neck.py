import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from sharp_fpn import add_sharp_fpn_config, build_scheme
from sharp_fpn.modeling import SkipSchemeFPN, VGG
from sharp_fpn.schemes import SCHEMES

FEATURES = ["vgg2", "vgg3", "vgg4", "vgg5"]


def small_vgg():
    return VGG(depth=11, norm="GN", out_features=FEATURES)


def neck(scheme, bottom_up=None, **kwargs):
    kwargs.setdefault("node_norm", "GN")
    return SkipSchemeFPN(bottom_up or small_vgg(), FEATURES, 64, build_scheme(scheme, 4),
                         top_block=LastLevelMaxPool(), branch_channels=32, **kwargs)


@pytest.mark.parametrize("norm,fuse_type", [("", "sum"), ("GN", "avg")])
def test_plain_equals_detectron2_fpn(norm, fuse_type):
    torch.manual_seed(0)
    bottom_up = small_vgg()
    reference = FPN(bottom_up, FEATURES, 64, norm=norm, top_block=LastLevelMaxPool(), fuse_type=fuse_type)
    ours = SkipSchemeFPN(bottom_up, FEATURES, 64, build_scheme("plain", 4), norm=norm,
                         top_block=LastLevelMaxPool(), fuse_type=fuse_type)
    # Same names, so Detectron2 FPN weights load strictly; perturb GN so norms matter too.
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert set(ours.state_dict()) == set(reference.state_dict())
    x = torch.randn(2, 3, 96, 128)
    expected, got = reference.eval()(x), ours.eval()(x)
    assert list(got) == list(expected) == ["p2", "p3", "p4", "p5", "p6"]
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert ours.output_shape() == reference.output_shape()
    assert ours.size_divisibility == reference.size_divisibility == 32


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_every_parameter_gets_a_gradient(scheme, fusion):
    torch.manual_seed(0)
    model = neck(scheme, fusion=fusion).train()
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("scheme", SCHEMES)
def test_outputs_have_fpn_names_strides_and_channels(scheme):
    model = neck(scheme, upsample_mode="bilinear").eval()
    out = model(torch.randn(1, 3, 128, 192))
    shapes = model.output_shape()
    assert list(out) == list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    for name, t in out.items():
        assert t.shape[1] == shapes[name].channels == 64
        assert (128 // t.shape[2], 192 // t.shape[3]) == (shapes[name].stride,) * 2


def test_fpn_weights_fit_every_scheme():
    """Laterals and output convs keep FPN's names and shapes, so FPN checkpoints still fit."""
    fpn_keys = set(FPN(small_vgg(), FEATURES, 64, top_block=LastLevelMaxPool()).state_dict())
    for scheme in SCHEMES:
        keys = set(neck(scheme).state_dict())
        assert fpn_keys <= keys


def test_new_parameters_per_scheme_are_ordered():
    def extra(scheme):
        n = sum(p.numel() for k, p in neck(scheme).named_parameters() if not k.startswith("bottom_up"))
        return n - sum(p.numel() for k, p in neck("plain").named_parameters() if not k.startswith("bottom_up"))

    assert extra("plain") == 0
    assert 0 < extra("full_scale") < extra("nested") < extra("sharp")


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown fusion 'mean'"):
        neck("sharp", fusion="mean")
    with pytest.raises(ValueError, match="needs equal widths"):
        neck("sharp", fusion="sum", node_channels=32)
    with pytest.raises(ValueError, match="levels"):
        SkipSchemeFPN(small_vgg(), FEATURES, 64, build_scheme("sharp", 3))


def test_resnet_bottom_up_from_config():
    cfg = get_cfg()
    add_sharp_fpn_config(cfg)
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    model = SkipSchemeFPN(bottom_up, cfg.MODEL.RESNETS.OUT_FEATURES, 256, build_scheme("#", 4))
    out = model(torch.randn(1, 3, 64, 64))
    assert [tuple(v.shape) for v in out.values()] == [(1, 256, 16, 16), (1, 256, 8, 8), (1, 256, 4, 4), (1, 256, 2, 2)]


@pytest.mark.parametrize("scheme", ["nested", "full_scale", "sharp"])
@pytest.mark.parametrize("conv,conv_strides", [("separable", ()), ("pw_dw", ()), ("1x1", ()), ("separable", (4,))])
def test_cheaper_convs_keep_the_grid_and_train(scheme, conv, conv_strides):
    torch.manual_seed(0)
    literal = neck(scheme)
    model = neck(scheme, conv=conv, conv_strides=conv_strides).train()
    assert list(model.nodes) == list(literal.nodes)  # same nodes
    for key, node in model.nodes.items():  # same edges, same branches
        assert node.edges == literal.nodes[key].edges and list(node.branches) == list(literal.nodes[key].branches)
    count = lambda m: sum(p.numel() for p in m.nodes.parameters())  # noqa: E731
    assert count(model) < count(literal)
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_conv_strides_pick_rows():
    model = neck("sharp", conv="separable", conv_strides=(4,))
    for key, node in model.nodes.items():
        separable = isinstance(node.fuse, torch.nn.Sequential)
        assert separable == key.startswith("x0_"), key


def test_wide_plain_keeps_fpn_topology_and_trains():
    torch.manual_seed(0)
    model = neck("plain", row_conv_channels=96).train()
    plain = neck("plain")
    assert list(model.nodes) == list(plain.nodes)
    assert [n for n in dict(model.named_children()) if n.startswith("fpn_row")] == ["fpn_row2", "fpn_row3", "fpn_row4", "fpn_row5"]
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 4 * (64 * 96 * 9 + 2 * 96 + 9 * 96 * 64 - 9 * 64 * 64)  # conv + GN; wider output conv
    out = model(torch.randn(2, 3, 64, 64))
    assert [t.shape[1] for t in out.values()] == [64] * 5
    sum(v.square().mean() for v in out.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_conv_options_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown conv '5x5'"):
        neck("sharp", conv="5x5")
    with pytest.raises(ValueError, match=r"conv_strides \[2\]"):
        neck("sharp", conv="separable", conv_strides=(2,))
