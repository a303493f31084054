"""VGG bottom-up for Detectron2: five conv blocks, output after each block's max-pool.

``vggK`` is block K's output after its 2x2 max-pool, at stride 2**K, so vgg2..vgg5 give the
strides 4..32 that an FPN expects (the UNet# paper's VGG16 Mask R-CNN). Module names follow
``stage{K}.conv{M}`` so that a torchvision checkpoint maps onto them one to one
(:func:`sharp_fpn.checkpoint.convert_torchvision_vgg`).
"""
from typing import Dict, List, Sequence

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone
from torch import nn

# Convs per block for each depth, and the width of each block (Simonyan & Zisserman, Table 1).
VGG_BLOCKS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)


class VGG(Backbone):
    def __init__(self, depth: int = 16, in_channels: int = 3, norm: str = "",
                 out_features: Sequence[str] = ("vgg2", "vgg3", "vgg4", "vgg5"), freeze_at: int = 0):
        """
        Args:
            depth: 11, 13, 16 or 19.
            norm: norm after each conv ("" as torchvision's vgg16, "BN" as vgg16_bn, "GN", ...).
            out_features: names "vggK" of the blocks to output.
            freeze_at: freeze blocks 1..freeze_at (0: train all).
        """
        super().__init__()
        if depth not in VGG_BLOCKS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_BLOCKS)}, got {depth}")
        valid = [f"vgg{k}" for k in range(1, 6)]
        unknown = [f for f in out_features if f not in valid]
        if unknown:
            raise ValueError(f"Unknown VGG out_features {unknown}; valid: {valid}")
        self._out_features = list(out_features)
        self.num_blocks = max(int(f[3:]) for f in out_features)
        self.stages: List[nn.Sequential] = []
        for k, (n_convs, width) in enumerate(zip(VGG_BLOCKS[depth], VGG_WIDTHS), start=1):
            if k > self.num_blocks:
                break
            stage = nn.Sequential()
            for m in range(1, n_convs + 1):
                conv = Conv2d(in_channels, width, kernel_size=3, padding=1, bias=True,
                              norm=get_norm(norm, width), activation=nn.ReLU(inplace=True))
                weight_init.c2_msra_fill(conv)
                stage.add_module(f"conv{m}", conv)
                in_channels = width
            self.add_module(f"stage{k}", stage)
            self.stages.append(stage)
        self._out_feature_strides = {f"vgg{k}": 2**k for k in range(1, 6)}
        self._out_feature_channels = {f"vgg{k}": w for k, w in enumerate(VGG_WIDTHS, start=1)}
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "VGG":
        for stage in self.stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad = False
        return self

    def forward(self, x) -> Dict[str, "torch.Tensor"]:
        outputs = {}
        for k, stage in enumerate(self.stages, start=1):
            x = F.max_pool2d(stage(x), kernel_size=2, stride=2)
            name = f"vgg{k}"
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }
