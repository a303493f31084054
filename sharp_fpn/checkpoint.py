"""Load local pretrained weights: Detectron2/MSRA formats as Detectron2 does, plus torchvision.

Nothing here downloads: every path is a local file the user passes as ``MODEL.WEIGHTS``.
The MSRA ``R-101.pkl`` (Caffe2 names) goes through Detectron2's own conversion. A torchvision
ImageNet state dict (``resnet101-*.pth``, ``vgg16-*.pth``, ``vgg16_bn-*.pth``) is renamed to
this project's module names first.
"""
import re
from typing import Dict

import torch
from detectron2.checkpoint import DetectionCheckpointer

BOTTOM_UP = "backbone.bottom_up."
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def is_torchvision_resnet(state_dict: Dict[str, torch.Tensor]) -> bool:
    return "layer1.0.conv1.weight" in state_dict and "conv1.weight" in state_dict


def is_torchvision_vgg(state_dict: Dict[str, torch.Tensor]) -> bool:
    return "features.0.weight" in state_dict


def convert_torchvision_resnet(state_dict: Dict[str, torch.Tensor], prefix: str = BOTTOM_UP):
    """torchvision ResNet names -> Detectron2 ResNet names (``layer1`` is ``res2``, ...).

    The converted model expects RGB input with ImageNet mean/std and ``STRIDE_IN_1X1 False``.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        name = re.sub(r"^conv1\.", "stem.conv1.", key)
        name = re.sub(r"^bn1\.", "stem.conv1.norm.", name)
        name = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", name)
        name = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", name)
        name = name.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        converted[prefix + name] = value
    return converted


def convert_torchvision_vgg(state_dict: Dict[str, torch.Tensor], prefix: str = BOTTOM_UP):
    """torchvision VGG ``features.N`` -> this project's ``stage{K}.conv{M}`` (see modeling/vgg.py).

    Works for plain VGG (conv, ReLU, ..., pool) and ``_bn`` VGG (conv, BN, ReLU); the VGG
    must be built with the same depth and ``MODEL.VGG.NORM`` "" or "BN" respectively. The
    classifier is dropped.
    """
    indices = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("features.")})
    convs = [i for i in indices if state_dict[f"features.{i}.weight"].dim() == 4]
    batch_norm = any(i + 1 in indices for i in convs)
    # Inside a block convs are `step` apart (conv, [BN,] ReLU); a max-pool between two convs
    # makes the gap one longer, which is where a new block starts.
    step = min(b - a for a, b in zip(convs, convs[1:]))
    converted, block, conv_in_block = {}, 1, 0
    for n, i in enumerate(convs):
        if n > 0 and i - convs[n - 1] > step:
            block, conv_in_block = block + 1, 0
        conv_in_block += 1
        base = f"{prefix}stage{block}.conv{conv_in_block}."
        converted[base + "weight"] = state_dict[f"features.{i}.weight"]
        converted[base + "bias"] = state_dict[f"features.{i}.bias"]
        if batch_norm:
            for k in _BN_KEYS:
                converted[base + "norm." + k] = state_dict[f"features.{i + 1}.{k}"]
    return converted


class SharpCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that also reads torchvision ResNet/VGG ImageNet state dicts."""

    def _torch_load(self, f):
        loaded = torch.load(f, map_location="cpu", weights_only=True)
        state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
        if is_torchvision_resnet(state):
            return {"model": convert_torchvision_resnet(state), "__author__": "torchvision"}
        if is_torchvision_vgg(state):
            return {"model": convert_torchvision_vgg(state), "__author__": "torchvision"}
        return loaded
