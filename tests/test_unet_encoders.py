"""The ImageNet encoders of the seed's Table 2 under every skip scheme: shapes, a train step,
exact parameter counts, pruning, and torchvision ImageNet files landing where they should."""
import pytest
import torch
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from sharp_fpn.schemes import SCHEMES
from sharp_fpn.unet import DeepSupervisionLoss, build_unet, count_parameters, prune
from sharp_fpn.unet.encoders import VGG16Encoder, build_encoder

TINY = [4, 8, 16, 32, 64]  # decoder widths: the encoder keeps its own
STRIDES = {"VGG16": [1, 2, 4, 8, 16], "R101": [2, 4, 8, 16, 32]}

# The README's and RESULTS.md's table (benchmarks/unet_cost.py): 3 input channels, 1 output,
# Table 1's decoder and branch forms, BN encoders.
ENCODER_COUNTS = {
    ("unet", "VGG16"): 18_642_849,
    ("unet++", "VGG16"): 20_589_537,
    ("unet3+", "VGG16"): 21_223_329,
    ("unet#", "VGG16"): 21_253_665,
    ("unet", "R101"): 51_507_105,
    ("unet++", "R101"): 54_670_305,
    ("unet3+", "R101"): 58_216_353,
    ("unet#", "R101"): 55_997_985,
}


@pytest.mark.parametrize("encoder", ["VGG16", "R101"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_trains_on_every_encoder(encoder, scheme):
    torch.manual_seed(0)
    model = build_unet(scheme, filters=TINY, encoder=encoder, deep_supervision=True, branch_channels=4)
    assert model.encoder.strides == STRIDES[encoder]
    images, masks = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.7).float()
    out = model(images)
    for (row, col), logits in out.logits.items():
        side = 64 if row == 0 else 64 // STRIDES[encoder][row]  # first-row heads at the input's size
        assert logits.shape == (2, 1, side, side), (row, col)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    loss = sum(DeepSupervisionLoss()(out, masks).values())
    loss.backward()
    assert loss.isfinite()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))


@pytest.mark.parametrize("name,encoder,count", [(n, e, c) for (n, e), c in ENCODER_COUNTS.items()])
def test_parameter_counts_are_as_documented(name, encoder, count):
    assert count_parameters(build_unet(name, encoder=encoder)) == count


def test_vgg16_encoder_is_the_mask_rcnn_bottom_up_and_prunes():
    """Its rows are the VGG bottom-up's stages; pruning keeps the first rows' weights."""
    torch.manual_seed(0)
    full = build_unet("unet#", filters=TINY, encoder="VGG16", deep_supervision=True).eval()
    assert [name for name, _ in full.encoder.body.named_children()] == [f"stage{k}" for k in range(1, 6)]
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full(images).logits[(0, 2)]
        small = prune(full, 2)
        assert len(small.encoder.body.stages) == 3
        assert torch.allclose(small(images).logits[(0, 2)], expected, atol=1e-5)


def vgg16_features(batch_norm: bool) -> torch.nn.Module:
    """torchvision's VGG16 without its classifier (102M parameters the encoder drops anyway),
    so its file keeps torchvision's "features.N" names."""
    net = torch.nn.Module()
    net.features = make_layers(cfgs["D"], batch_norm=batch_norm)
    return net


def _rows_of_torchvision_vgg16_bn(net, x):
    rows = []
    for layer in net.features:
        if isinstance(layer, torch.nn.MaxPool2d):
            rows.append(x)
        x = layer(x)
    return rows


def _rows_of_torchvision_resnet(net, x):
    x = net.relu(net.bn1(net.conv1(x)))
    rows = [x]
    x = net.maxpool(x)
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        rows.append(x)
    return rows


@pytest.mark.parametrize("encoder,torchvision_net,rows_of", [
    ("VGG16", lambda: vgg16_features(batch_norm=True), _rows_of_torchvision_vgg16_bn),
    ("R101", torchvision.models.resnet101, _rows_of_torchvision_resnet),
], ids=["VGG16", "R101"])
def test_torchvision_imagenet_file_loads_into_the_encoder(tmp_path, encoder, torchvision_net, rows_of):
    """A torchvision file (random weights here, the same format as ImageNet's) gives rows
    equal to torchvision's own feature maps."""
    torch.manual_seed(0)
    net = torchvision_net().eval()
    with torch.no_grad():  # make the BN statistics non-trivial, so a misplaced one shows
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "imagenet.pth"
    torch.save(net.state_dict(), path)
    model = build_unet("unet", filters=TINY, encoder=encoder, encoder_weights=str(path)).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model.encoder(images), rows_of(net, images)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-4)


def test_wrong_imagenet_files_are_named_errors(tmp_path):
    plain_vgg = tmp_path / "vgg16.pth"
    torch.save(vgg16_features(batch_norm=False).state_dict(), plain_vgg)
    with pytest.raises(ValueError, match=r"vgg16\.pth: does not fit the encoder \(vgg16-\*\.pth needs .*NORM ''"):
        build_unet("unet", filters=TINY, encoder="VGG16", encoder_weights=str(plain_vgg))
    build_unet("unet", filters=TINY, encoder="VGG16", encoder_norm="", encoder_weights=str(plain_vgg))
    with pytest.raises(ValueError, match=r"vgg16\.pth: not a torchvision ResNet ImageNet state dict"):
        build_unet("unet", filters=TINY, encoder="R101", encoder_weights=str(plain_vgg))
    with pytest.raises(FileNotFoundError, match="nowhere.pth: encoder weights not found"):
        build_unet("unet", filters=TINY, encoder="VGG16", encoder_weights=str(tmp_path / "nowhere.pth"))
    with pytest.raises(ValueError, match="vgg_blocks encoder has no ImageNet weights"):
        build_unet("unet", filters=TINY, encoder_weights=str(plain_vgg))


def test_unknown_encoder_and_too_deep_grid_are_refused():
    with pytest.raises(ValueError, match="Unknown UNet encoder 'R50'; valid: vgg_blocks, VGG16, R101"):
        build_encoder("R50", TINY)
    with pytest.raises(ValueError, match="VGG16 encoder has 5 rows; a 6-row grid"):
        VGG16Encoder(levels=6)
