"""Local pretrained weights land where they should: torchvision ResNet/VGG and MSRA R-101.pkl.

Checkpoints are made here with the real key layouts (torchvision's own model definitions;
Caffe2 names for the MSRA file) and random values; nothing downloads.
"""
import pickle
import re

import pytest
import torch
import torchvision
from detectron2.modeling import build_model

from sharp_fpn import get_sharp_cfg
from sharp_fpn.checkpoint import SharpCheckpointer, convert_torchvision_vgg


def bottom_up_state(model):
    return {k[len("backbone.bottom_up."):]: v for k, v in model.state_dict().items()
            if k.startswith("backbone.bottom_up.")}


def load(cfg, path):
    model = build_model(cfg)
    SharpCheckpointer(model).load(str(path))
    return bottom_up_state(model)


def randomized(state_dict):
    torch.manual_seed(1)
    return {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in state_dict.items()}


def test_torchvision_resnet101_lands_everywhere(tmp_path):
    src = randomized(torchvision.models.resnet101().state_dict())
    torch.save(src, tmp_path / "resnet101.pth")
    cfg = get_sharp_cfg("mask_rcnn_plain_R101", ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.DEVICE", "cpu"])
    got = load(cfg, tmp_path / "resnet101.pth")
    assert torch.equal(got["stem.conv1.weight"], src["conv1.weight"])
    assert torch.equal(got["stem.conv1.norm.running_var"], src["bn1.running_var"])
    assert torch.equal(got["res5.2.conv3.norm.bias"], src["layer4.2.bn3.bias"])
    assert torch.equal(got["res3.0.shortcut.norm.weight"], src["layer2.0.downsample.1.weight"])
    wanted = {k for k in src if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert len(got) == len(wanted) == 520  # every tensor has exactly one home


@pytest.mark.parametrize("factory,norm", [(torchvision.models.vgg16, ""), (torchvision.models.vgg16_bn, "BN")])
def test_torchvision_vgg16_lands_everywhere(tmp_path, factory, norm):
    src = randomized(factory().state_dict())
    torch.save(src, tmp_path / "vgg16.pth")
    cfg = get_sharp_cfg("mask_rcnn_sharp_VGG16", ["MODEL.VGG.NORM", norm, "MODEL.DEVICE", "cpu"])
    got = load(cfg, tmp_path / "vgg16.pth")
    convs = [k for k in src if k.startswith("features.") and src[k].dim() == 4]
    ours = sorted((k for k in got if k.endswith("weight") and got[k].dim() == 4),
                  key=lambda k: tuple(map(int, re.findall(r"\d+", k))))
    assert len(convs) == len(ours) == 13
    for theirs, mine in zip(convs, ours):  # the n-th conv of torchvision is our n-th conv
        assert torch.equal(got[mine], src[theirs]), (theirs, mine)
    assert torch.equal(got["stage5.conv3.bias"], src["features.28.bias" if not norm else "features.40.bias"])
    if norm:
        assert torch.equal(got["stage3.conv2.norm.running_mean"], src["features.18.running_mean"])


def test_vgg_conversion_blocks():
    keys = convert_torchvision_vgg(torchvision.models.vgg16().state_dict(), prefix="")
    blocks = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in keys})
    assert blocks == ["stage1.conv1", "stage1.conv2", "stage2.conv1", "stage2.conv2",
                      "stage3.conv1", "stage3.conv2", "stage3.conv3", "stage4.conv1", "stage4.conv2",
                      "stage4.conv3", "stage5.conv1", "stage5.conv2", "stage5.conv3"]


def caffe2_name(d2_name):
    """Detectron2 ResNet name -> the MSRA/Caffe2 name it is converted from."""
    name = d2_name.replace("stem.conv1.norm.", "res_conv1_bn_").replace("stem.conv1.", "conv1_")
    m = re.match(r"res(\d)\.(\d+)\.(conv[123]|shortcut)\.(norm\.)?(\w+)", name)
    if m:
        branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[m[3]]
        name = f"res{m[1]}_{m[2]}_{branch}_" + ("bn_" if m[4] else "") + m[5]
    return name.replace("weight", "s" if "bn_" in name else "w").replace("bn_bias", "bn_b")


def test_msra_r101_pkl_lands_everywhere(tmp_path):
    cfg = get_sharp_cfg("mask_rcnn_sharp_R101", [
        "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.RESNETS.STRIDE_IN_1X1", "True", "MODEL.DEVICE", "cpu"])
    reference = bottom_up_state(build_model(cfg))
    torch.manual_seed(2)
    blobs = {caffe2_name(k): torch.randn_like(v).numpy() for k, v in reference.items()
             if not k.endswith(("running_mean", "running_var"))}
    assert "res4_22_branch2c_bn_s" in blobs and "conv1_w" in blobs and "res_conv1_bn_b" in blobs
    with open(tmp_path / "R-101.pkl", "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    got = load(cfg, tmp_path / "R-101.pkl")
    for k, v in got.items():
        if not k.endswith(("running_mean", "running_var")):
            assert torch.equal(v, torch.as_tensor(blobs[caffe2_name(k)])), k
