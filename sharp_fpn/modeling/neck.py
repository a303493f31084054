"""A feature pyramid whose top-down pathway is any skip scheme of :mod:`sharp_fpn.schemes`.

The neck keeps Detectron2's FPN names (``fpn_lateral{s}``, ``fpn_output{s}``, ``top_block``,
``bottom_up``) and outputs (p2..p6), so RPN/ROI heads and FPN weights fit unchanged. The grid's
encoder column X(i,0) is the 1x1 laterals; the scheme's nodes sit between them and the 3x3
output convs. With the ``plain`` scheme the neck computes exactly what Detectron2's FPN does.
"""
import math
from typing import Dict, List, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone
from torch import nn

from ..schemes import Edge, Node, SkipScheme

FUSIONS = ("concat", "sum")
UPSAMPLE_MODES = ("nearest", "bilinear")
# Forms of the paper's f (every node and branch conv). "3x3" is the paper's; the others keep
# the same nodes and edges at a lower cost (see benchmarks/RESULTS.md).
CONVS = ("3x3", "separable", "pw_dw", "1x1")


def conv_norm_relu(in_channels: int, out_channels: int, norm: str, conv: str = "3x3") -> nn.Module:
    """The paper's f: conv + norm + ReLU. ``conv`` "3x3" is the paper's Conv2d 3x3; "separable"
    is a depthwise 3x3 then a pointwise 1x1 (MobileNet's order); "pw_dw" a pointwise 1x1 to
    ``out_channels`` then a depthwise 3x3 (BSConv-U's order: the depthwise conv runs on the
    narrow side, faster on CPUs); both keep the 3x3 receptive field at about 1/9 of the MACs.
    "1x1" drops the spatial kernel."""
    if conv == "pw_dw":
        pointwise = Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(pointwise.weight, mode="fan_in", nonlinearity="linear")
        depthwise = Conv2d(out_channels, out_channels, kernel_size=3, padding=1, groups=out_channels, bias=not norm,
                           norm=get_norm(norm, out_channels), activation=nn.ReLU(inplace=True))
        nn.init.kaiming_normal_(depthwise.weight, mode="fan_in", nonlinearity="relu")
        if depthwise.bias is not None:
            nn.init.zeros_(depthwise.bias)
        return nn.Sequential(pointwise, depthwise)
    if conv == "separable":
        depthwise = Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels, bias=False)
        nn.init.kaiming_normal_(depthwise.weight, mode="fan_in", nonlinearity="linear")
        return nn.Sequential(depthwise, conv_norm_relu(in_channels, out_channels, norm, "1x1"))
    if conv not in CONVS:
        raise ValueError(f"Unknown conv {conv!r}; valid: {CONVS}")
    k = 3 if conv == "3x3" else 1
    layer = Conv2d(
        in_channels,
        out_channels,
        kernel_size=k,
        padding=k // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=nn.ReLU(inplace=True),
    )
    weight_init.c2_msra_fill(layer)
    return layer


def resample(x: torch.Tensor, scale: int, upsample_mode: str) -> torch.Tensor:
    """Upsample by 2**scale (scale > 0) or max-pool by 2**-scale (scale < 0)."""
    if scale > 0:
        align = False if upsample_mode == "bilinear" else None
        return F.interpolate(x, scale_factor=2.0**scale, mode=upsample_mode, align_corners=align)
    if scale < 0:
        k = 2**-scale
        return F.max_pool2d(x, kernel_size=k, stride=k)
    return x


class FusionNode(nn.Module):
    """One grid node X(i,j): resample its inputs, pass full-scale ones through their branch conv,
    then merge. ``fusion`` "add" merges without a conv (FPN's top-down step); "sum" and "concat"
    merge, then apply one conv-norm-ReLU. ``conv`` is the form of every conv ("3x3", the paper's).
    """

    def __init__(
        self,
        edges: Sequence[Edge],
        in_channels: Sequence[int],
        out_channels: int,
        fusion: str,
        branch_channels: int,
        norm: str,
        upsample_mode: str,
        conv: str = "3x3",
    ):
        super().__init__()
        self.edges = tuple(edges)
        self.upsample_mode = upsample_mode
        self.fusion = fusion
        self.branches = nn.ModuleDict()
        widths = []
        for k, (edge, c) in enumerate(zip(edges, in_channels)):
            if edge.branch:
                self.branches[str(k)] = conv_norm_relu(c, branch_channels, norm, conv)
                c = branch_channels
            widths.append(c)
        if fusion == "concat":
            self.fuse = conv_norm_relu(sum(widths), out_channels, norm, conv)
        else:
            if len(set(widths + [out_channels])) != 1:
                raise ValueError(f"'{fusion}' fusion needs equal widths, got {widths} -> {out_channels}")
            self.fuse = conv_norm_relu(out_channels, out_channels, norm, conv) if fusion == "sum" else None

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        feats = []
        for k, (edge, x) in enumerate(zip(self.edges, inputs)):
            branch = self.branches[str(k)] if str(k) in self.branches else None
            if branch is not None and edge.scale > 0:
                x = branch(x)  # cheaper at the (coarser) source resolution
                branch = None
            x = resample(x, edge.scale, self.upsample_mode)
            if branch is not None:
                x = branch(x)
            feats.append(x)
        if self.fusion == "concat":
            return self.fuse(torch.cat(feats, dim=1))
        merged = feats[0]
        for f in feats[1:]:
            merged = merged + f
        return merged if self.fuse is None else self.fuse(merged)


class SkipSchemeFPN(Backbone):
    """FPN with its plain top-down skips replaced by a :class:`SkipScheme`."""

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: Sequence[str],
        out_channels: int,
        scheme: SkipScheme,
        *,
        norm: str = "",
        top_block: nn.Module = None,
        fuse_type: str = "sum",
        fusion: str = "concat",
        node_channels: int = 0,
        branch_channels: int = 64,
        node_norm: str = "GN",
        upsample_mode: str = "nearest",
        conv: str = "3x3",
        conv_strides: Sequence[int] = (),
        row_conv_channels: int = 0,
    ):
        """
        Args:
            bottom_up, in_features, out_channels, norm, top_block, fuse_type: as Detectron2's FPN
                (``norm`` is for the laterals and output convs, ``fuse_type`` for plain nodes).
            scheme: the skip scheme; its ``levels`` must equal ``len(in_features)``.
            fusion: "concat" or "sum", for the nodes of every scheme but plain.
            node_channels: width of the intermediate nodes (0: ``out_channels``).
            branch_channels: width of each full-scale branch conv (concat fusion).
            node_norm: norm of the node and branch convs.
            upsample_mode: "nearest" or "bilinear".
            conv: form of the node and branch convs: "3x3" (the paper's), "separable", "pw_dw"
                or "1x1" (see :func:`conv_norm_relu`).
            conv_strides: strides of the rows whose nodes use ``conv``; other rows use "3x3".
                Empty: every row.
            row_conv_channels: width of an extra conv3x3-norm-ReLU (``fpn_row{s}``) on each row's
                output before its output conv; 0: none. With the plain scheme this is the
                parameter-matched wide FPN: FPN's topology with more capacity.
        """
        super().__init__()
        if scheme.levels != len(in_features):
            raise ValueError(f"Scheme has {scheme.levels} levels but got {len(in_features)} in_features")
        if fusion not in FUSIONS:
            raise ValueError(f"Unknown fusion {fusion!r}; valid: {FUSIONS}")
        if conv not in CONVS:
            raise ValueError(f"Unknown conv {conv!r}; valid: {CONVS}")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"Unknown upsample mode {upsample_mode!r}; valid: {UPSAMPLE_MODES}")
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"Unknown FPN fuse_type {fuse_type!r}; valid: ('sum', 'avg')")
        input_shapes = bottom_up.output_shape()
        strides = [input_shapes[f].stride for f in in_features]
        for fine, coarse in zip(strides, strides[1:]):
            if coarse != 2 * fine:
                raise ValueError(f"Strides {strides} of {list(in_features)} are not log2-contiguous")
        unknown = sorted(set(conv_strides) - set(strides))
        if unknown:
            raise ValueError(f"conv_strides {unknown} are not strides of the neck's rows {strides}")

        self.bottom_up = bottom_up
        self.in_features = tuple(in_features)
        self.scheme = scheme
        self.top_block = top_block
        self._fuse_type = fuse_type
        self.upsample_mode = upsample_mode
        self.conv, self.conv_strides, self.row_conv_channels = conv, tuple(conv_strides), row_conv_channels
        node_channels = node_channels or out_channels
        plain = scheme.name == "plain"

        width: Dict[Node, int] = {}
        use_bias = norm == ""
        stages = [int(math.log2(s)) for s in strides]
        for i, (feature, stage) in enumerate(zip(in_features, stages)):
            lateral = Conv2d(input_shapes[feature].channels, out_channels, kernel_size=1,
                             bias=use_bias, norm=get_norm(norm, out_channels))
            weight_init.c2_xavier_fill(lateral)
            self.add_module(f"fpn_lateral{stage}", lateral)
            width[(i, 0)] = out_channels

        self.nodes = nn.ModuleDict()
        for node, edges in scheme.inputs.items():
            out = out_channels if plain else node_channels
            row_conv = conv if not conv_strides or strides[node[0]] in conv_strides else "3x3"
            self.nodes[_node_key(node)] = FusionNode(
                edges, [width[e.src] for e in edges], out,
                fusion="add" if plain else fusion,
                branch_channels=out if fusion == "sum" else branch_channels,
                norm=node_norm, upsample_mode=upsample_mode, conv=row_conv,
            )
            width[node] = out

        self.row_convs = []
        for i, stage in enumerate(stages):
            if row_conv_channels:
                row = conv_norm_relu(width[scheme.output(i)], row_conv_channels, node_norm)
                self.add_module(f"fpn_row{stage}", row)
                self.row_convs.append(row)
            else:
                self.row_convs.append(None)

        for i, stage in enumerate(stages):
            c = row_conv_channels or width[scheme.output(i)]
            output = Conv2d(c, out_channels, kernel_size=3, padding=1, bias=use_bias,
                            norm=get_norm(norm, out_channels))
            weight_init.c2_xavier_fill(output)
            self.add_module(f"fpn_output{stage}", output)

        self._stages = stages
        self._out_feature_strides = {f"p{s}": 2**s for s in stages}
        if top_block is not None:
            last = stages[-1]
            for s in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2**s
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"square_size": 0}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(x)
        grid = {
            (i, 0): getattr(self, f"fpn_lateral{s}")(bottom_up[f])
            for i, (f, s) in enumerate(zip(self.in_features, self._stages))
        }
        for node, edges in self.scheme.inputs.items():
            out = self.nodes[_node_key(node)]([grid[e.src] for e in edges])
            if self.scheme.name == "plain" and self._fuse_type == "avg":
                out = out / 2
            grid[node] = out
        rows = [grid[self.scheme.output(i)] for i in range(len(self._stages))]
        rows = [x if row is None else row(x) for x, row in zip(rows, self.row_convs)]
        results = [getattr(self, f"fpn_output{s}")(x) for x, s in zip(rows, self._stages)]
        if self.top_block is not None:
            name = self.top_block.in_feature
            source = bottom_up[name] if name in bottom_up else results[self._out_features.index(name)]
            results.extend(self.top_block(source))
        return dict(zip(self._out_features, results))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=stride)
            for name, stride in self._out_feature_strides.items()
        }


def _node_key(node: Node) -> str:
    return f"x{node[0]}_{node[1]}"
