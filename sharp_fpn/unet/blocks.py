"""The layers every UNet-family node is made of.

The seed builds every grid node from the same unit, f^2 in Eq. 1: two conv3x3-BN-ReLU
("VGG block"), and every full-scale branch from one f: a single conv3x3-BN-ReLU ("g").
Resampling is parameter-free: 2x2 max-pooling down (the seed's p), bilinear up (its u).
"""
from typing import Tuple

import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """f in Eq. 1: one 3x3 convolution, BatchNorm and ReLU (the conv keeps its bias, as the
    seed's parameter counts require)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGGBlock(nn.Sequential):
    """f^2 in Eq. 1: the unit of every encoder and decoder node."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))
        self.in_channels = in_channels
        self.out_channels = out_channels


def resample(x: Tensor, scale: int, size: Tuple[int, int]) -> Tensor:
    """Resample by 2**scale onto ``size``: bilinear up for scale > 0, max-pooling down for
    scale < 0. Upsampling targets ``size`` rather than a factor so that inputs whose side is
    not a multiple of 2**(levels-1) still line up with the floor-sized encoder maps."""
    if scale > 0:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if scale < 0:
        return F.max_pool2d(x, 2**-scale)
    return x
