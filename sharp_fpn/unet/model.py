"""A UNet whose decoder walks one of the shared skip schemes (sharp_fpn.schemes).

The scheme says which grid nodes exist and which edges feed them; this module only decides
what a node is (a VGG block, width ``filters[row]``), what a full-scale branch is (one
conv3x3-BN-ReLU "g" per source node, or the raw feature map) and where the heads go; the
encoder (column 0) comes from sharp_fpn.unet.encoders. UNet, wide UNet, UNet++, UNet 3+ and
UNet#, on the seed's VGG blocks or on an ImageNet VGG16 / ResNet-101, are therefore the same
class with different data.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..schemes import Edge, Node, SkipScheme
from .blocks import VGGBlock, conv_bn_relu, resample
from .cgm import build_cgm
from .encoders import VGG_BLOCKS, build_encoder


def node_key(node: Node) -> str:
    """Module name of a grid node, stable across pruning levels so weights can be copied."""
    return f"X{node[0]}_{node[1]}"


def supervised_nodes(scheme: SkipScheme, deep_supervision: bool) -> List[Node]:
    """The nodes that get a head (seed §2.2, Fig. 2).

    Without deep supervision only the final output X(0, L-1). With it, the first-row nodes
    X(0, j) (full resolution, "L_In", the ones pruning keeps) and the outputs of the deeper
    rows X(1, L-2), ..., X(L-1, 0) (compared with max-pooled ground truth, "L_De").
    """
    final = scheme.output(0)
    if not deep_supervision:
        return [final]
    first_row = [(0, j) for j in range(1, scheme.levels) if (0, j) in scheme.inputs]
    deeper_rows = [scheme.output(i) for i in range(1, scheme.levels)]
    return first_row + deeper_rows


@dataclass
class UNetOutput:
    """Raw head outputs, keyed by grid node.

    ``logits``: (N, num_classes, h, w): first-row heads at the input's resolution, deeper
    heads at their node's (h = H / 2**row on the seed's encoder, H / 2**(row + 1) on ResNet).
    ``objectness``: (N, 2) CGM class logits (index 1 = "has foreground"), only with CGMs.
    """

    logits: Dict[Node, Tensor]
    objectness: Dict[Node, Tensor] = field(default_factory=dict)


class SchemeUNet(nn.Module):
    """An encoder (column 0) + a decoder wired by ``scheme``.

    Args:
        scheme: the skip scheme; ``scheme.levels`` must equal ``len(filters)``.
        filters: decoder node width per row (the seed: [32, 64, 128, 256, 512]); also the
            encoder's widths with the seed's ``vgg_blocks`` encoder.
        in_channels / num_classes: image channels and output channels (1: foreground).
        branch_channels: width of the full-scale branch conv g; 0 concatenates the resampled
            source as it is ("raw concat", the form of the seed's UNet 3+ count and of its
            pruned UNet# L2/L3 counts).
        deep_supervision: heads on every node of ``supervised_nodes`` instead of the last one.
        cgm: a classification-guided module (seed §2.3) beside every head.
        encoder / encoder_norm: column 0, one of ``sharp_fpn.unet.encoders.ENCODERS``
            ("vgg_blocks", "VGG16", "R101"), and the norm of the ImageNet ones.
    """

    def __init__(
        self,
        scheme: SkipScheme,
        filters: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 1,
        branch_channels: int = 0,
        deep_supervision: bool = False,
        cgm: bool = False,
        encoder: str = VGG_BLOCKS,
        encoder_norm: str = "BN",
    ):
        super().__init__()
        if len(filters) != scheme.levels:
            raise ValueError(f"{len(filters)} filters for a {scheme.levels}-level scheme")
        self.scheme = scheme
        self.filters = list(filters)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.branch_channels = branch_channels
        self.deep_supervision = deep_supervision
        self.has_cgm = cgm
        self.encoder_name = encoder
        self.encoder_norm = encoder_norm

        self.encoder = build_encoder(encoder, self.filters, in_channels, encoder_norm)
        channels: Dict[Node, int] = {(row, 0): width for row, width in enumerate(self.encoder.channels)}

        self.branches = nn.ModuleDict()  # g, one per full-scale source node
        self.decoder = nn.ModuleDict()
        for node, edges in scheme.inputs.items():
            fused = sum(self._edge_channels(edge, channels) for edge in edges)
            self.decoder[node_key(node)] = VGGBlock(fused, self.filters[node[0]])
            channels[node] = self.filters[node[0]]

        self.supervised = supervised_nodes(scheme, deep_supervision)
        self.heads = nn.ModuleDict()
        self.cgms = nn.ModuleDict()
        for node in self.supervised:
            kernel = 1 if node[0] == 0 else 3  # seed §2.2: 1x1 on the first row, 3x3 below
            self.heads[node_key(node)] = nn.Conv2d(channels[node], num_classes, kernel, padding=kernel // 2)
            if cgm:
                self.cgms[node_key(node)] = build_cgm(channels[node], deep=node[0] >= scheme.levels - 2)
        self.out_channels = channels  # width of every node's feature map

    def _edge_channels(self, edge: Edge, channels: Dict[Node, int]) -> int:
        """Channels an edge brings to its node; builds the source's g the first time a branch
        edge needs it (one g per source node, shared by every node it feeds)."""
        if not (edge.branch and self.branch_channels):
            return channels[edge.src]
        key = node_key(edge.src)
        if key not in self.branches:
            self.branches[key] = conv_bn_relu(channels[edge.src], self.branch_channels)
        return self.branch_channels

    def features(self, images: Tensor, level: Optional[int] = None) -> Dict[Node, Tensor]:
        """Every node's feature map, computed in the scheme's order; with ``level``, only the
        nodes X(i, j), i + j <= level, that the pruned model L^level keeps."""
        rows = self.scheme.levels if level is None else level + 1
        maps: Dict[Node, Tensor] = {(row, 0): x for row, x in enumerate(self.encoder(images, rows))}
        branched: Dict[Node, Tensor] = {}  # g runs once per source, at the source's resolution
        for node, edges in self.scheme.inputs.items():
            if level is not None and sum(node) > level:
                continue
            size = maps[(node[0], 0)].shape[-2:]
            parts = []
            for edge in edges:
                src = maps[edge.src]
                if edge.branch and self.branch_channels:
                    if edge.src not in branched:
                        branched[edge.src] = self.branches[node_key(edge.src)](src)
                    src = branched[edge.src]
                parts.append(resample(src, edge.scale, size))
            maps[node] = self.decoder[node_key(node)](torch.cat(parts, dim=1))
        return maps

    def forward(self, images: Tensor, level: Optional[int] = None) -> UNetOutput:
        """All heads; with ``level`` (nested / sharp schemes, trained with deep supervision),
        only head X(0, level), computing only what the pruned model L^level computes."""
        if level is None:
            heads = self.supervised
        else:
            if self.scheme.name not in ("nested", "sharp") or (0, level) not in self.supervised:
                raise ValueError(f"No pruned output at level {level} in {self.extra_repr()}")
            heads = [(0, level)]
        maps = self.features(images, level)
        out = UNetOutput(logits={})
        for node in heads:
            key = node_key(node)
            logits = self.heads[key](maps[node])
            if node[0] == 0 and logits.shape[-2:] != images.shape[-2:]:  # a stride-2 first row (ResNet)
                logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
            out.logits[node] = logits
            if self.has_cgm:
                out.objectness[node] = self.cgms[key](maps[node])
        return out

    def extra_repr(self) -> str:
        return (
            f"encoder={self.encoder_name}, scheme={self.scheme.name}, levels={self.scheme.levels}, "
            f"filters={self.filters}, branch_channels={self.branch_channels}, "
            f"deep_supervision={self.deep_supervision}, cgm={self.has_cgm}"
        )


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, as the seed's Table 1 counts them (BN affine included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
