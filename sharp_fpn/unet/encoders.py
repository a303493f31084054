"""Column 0 of the UNet grid: the encoder whose feature maps are the rows X(i, 0).

``vgg_blocks`` is the seed's Table 1 encoder: one VGG block per row, as wide as the row's
decoder nodes. ``VGG16`` and ``R101`` are the ImageNet encoders of its Table 2 (upper part).
They reuse the Mask R-CNN bottom-ups (this project's VGG, Detectron2's ResNet) with their
module names, so a torchvision ImageNet file loads through the same renaming as
``sharp_fpn.checkpoint``. Their rows keep the networks' own widths; the decoder's widths
stay the ``filters`` of the model, so a pretrained encoder changes only column 0.

Every encoder has ``channels`` and ``strides`` per row and returns the rows' maps, finest
first. The ImageNet encoders import Detectron2 only when built, so the Table 1 models still
run where only PyTorch is installed (benchmarks/unet_imports.py).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import VGGBlock

VGG_BLOCKS = "vgg_blocks"
ENCODERS = (VGG_BLOCKS, "VGG16", "R101")
RESNET_WIDTHS = (64, 256, 512, 1024, 2048)  # stem conv, res2..res5


class VGGBlockEncoder(nn.ModuleDict):
    """The seed's Table 1 encoder: X(i, 0) = VGG block(max-pool(X(i-1, 0))), width filters[i].

    Modules are named after their grid nodes ("X0_0", ...), the names of the weights saved
    before the encoders were separate modules.
    """

    def __init__(self, filters: Sequence[int], in_channels: int = 3):
        super().__init__()
        previous = in_channels
        for row, width in enumerate(filters):
            self[f"X{row}_0"] = VGGBlock(previous, width)
            previous = width
        self.channels = list(filters)
        self.strides = [2**row for row in range(len(filters))]

    def forward(self, x: Tensor, rows: Optional[int] = None) -> List[Tensor]:
        maps = []
        for row, block in enumerate(list(self.values())[:rows]):
            x = block(F.max_pool2d(x, 2) if row else x)
            maps.append(x)
        return maps


class VGG16Encoder(nn.Module):
    """VGG16's five conv blocks as rows 0-4 (64, 128, 256, 512, 512 channels at strides
    1-16): row i is block i + 1 before its max-pool, which is where a UNet taps it."""

    def __init__(self, levels: int = 5, in_channels: int = 3, norm: str = "BN"):
        super().__init__()
        from ..modeling.vgg import VGG, VGG_WIDTHS

        _check_levels("VGG16", levels, len(VGG_WIDTHS))
        self.body = VGG(depth=16, in_channels=in_channels, norm=norm, out_features=(f"vgg{levels}",))
        self.channels = list(VGG_WIDTHS[:levels])
        self.strides = [2**row for row in range(levels)]

    def forward(self, x: Tensor, rows: Optional[int] = None) -> List[Tensor]:
        maps = []
        for row, stage in enumerate(self.body.stages[:rows]):
            x = stage(F.max_pool2d(x, 2) if row else x)
            maps.append(x)
        return maps


class ResNetEncoder(nn.Module):
    """Detectron2's ResNet as rows 0-4: the stem's 7x7 conv (stride 2, before the stem's
    max-pool), then res2..res5 (strides 4-32). The first row is at half the input's
    resolution, so the model upsamples its first-row heads to the input's size."""

    def __init__(self, depth: int = 101, levels: int = 5, in_channels: int = 3, norm: str = "BN"):
        super().__init__()
        from detectron2.modeling.backbone.resnet import BasicStem, ResNet

        _check_levels(f"R{depth}", levels, len(RESNET_WIDTHS))
        stages = ResNet.make_default_stages(depth, norm=norm, stride_in_1x1=False)  # torchvision's layout
        last = ("stem", "res2", "res3", "res4", "res5")[levels - 1]
        self.body = ResNet(BasicStem(in_channels, RESNET_WIDTHS[0], norm=norm), stages, out_features=[last])
        self.channels = list(RESNET_WIDTHS[:levels])
        self.strides = [2 ** (row + 1) for row in range(levels)]

    def forward(self, x: Tensor, rows: Optional[int] = None) -> List[Tensor]:
        x = F.relu(self.body.stem.conv1(x))  # BasicStem.forward without its max-pool
        maps = [x]
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for stage in self.body.stages[: (rows or len(self.channels)) - 1]:
            x = stage(x)
            maps.append(x)
        return maps


def _check_levels(name: str, levels: int, available: int) -> None:
    if not 1 <= levels <= available:
        raise ValueError(f"The {name} encoder has {available} rows; a {levels}-row grid cannot use it")


def build_encoder(name: str, filters: Sequence[int], in_channels: int = 3, norm: str = "BN") -> nn.Module:
    """The encoder ``name`` (one of ``ENCODERS``) for a grid of ``len(filters)`` rows.

    ``filters`` are the widths of the Table 1 encoder; the ImageNet encoders take only their
    length. ``norm`` is the ImageNet encoders' norm (Detectron2 names: "BN", "FrozenBN",
    "GN", "" for none); Table 1's VGG blocks always use BatchNorm.
    """
    if name == VGG_BLOCKS:
        return VGGBlockEncoder(filters, in_channels)
    if name == "VGG16":
        return VGG16Encoder(len(filters), in_channels, norm)
    if name == "R101":
        return ResNetEncoder(101, len(filters), in_channels, norm)
    raise ValueError(f"Unknown UNet encoder {name!r}; valid: {', '.join(ENCODERS)}")


def load_imagenet_weights(encoder: nn.Module, path: str) -> None:
    """Load a torchvision ImageNet file (``vgg16-*.pth``, ``vgg16_bn-*.pth``, ``resnet101-*.pth``)
    into ``encoder``, through sharp_fpn.checkpoint's renaming. ``path`` is a local file or a URL
    (``https://``, ``http://``, ``detectron2://``), fetched once into Detectron2's cache.

    Every encoder weight must come from the file and every file weight must be used, so a
    wrong depth or norm is an error that says which, not a silently half-loaded encoder.
    """
    from ..checkpoint import (
        convert_torchvision_resnet,
        convert_torchvision_vgg,
        is_torchvision_resnet,
        is_torchvision_vgg,
        local_weights,
    )

    kinds = {VGG16Encoder: ("VGG", is_torchvision_vgg, convert_torchvision_vgg),
             ResNetEncoder: ("ResNet", is_torchvision_resnet, convert_torchvision_resnet)}
    if type(encoder) not in kinds:
        raise ValueError(f"{path}: the {VGG_BLOCKS} encoder has no ImageNet weights; use VGG16 or R101")
    kind, recognise, convert = kinds[type(encoder)]
    local = local_weights(path)  # a URL's cached copy; WeightsUnavailable names the URL
    try:
        loaded = torch.load(local, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: encoder weights not found") from None
    except Exception as error:  # a corrupt or non-PyTorch file: say which file and why
        raise ValueError(f"{path}: cannot read encoder weights ({type(error).__name__}: {error})") from None
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else {}
    if not (isinstance(state, dict) and recognise(state)):
        raise ValueError(f"{path}: not a torchvision {kind} ImageNet state dict, which this encoder needs")
    converted = convert(state, prefix="")
    expected = encoder.body.state_dict()
    built = {key.split(".")[0] for key in expected}  # blocks of a shallower grid skip the deeper ones
    missing = [k for k in expected if k not in converted and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in converted if k not in expected and k.split(".")[0] in built]
    wrong_shape = [k for k in converted if k in expected and converted[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        hint = " (vgg16-*.pth needs MODEL.UNET.ENCODER_NORM '', vgg16_bn-*.pth 'BN')" if kind == "VGG" else ""
        raise ValueError(
            f"{path}: does not fit the encoder{hint}: {len(missing)} weights missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unused (e.g. {unexpected[:2]}), {len(wrong_shape)} of another shape "
            f"(e.g. {wrong_shape[:2]})"
        )
    encoder.body.load_state_dict({k: v for k, v in converted.items() if k in expected}, strict=False)
