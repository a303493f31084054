"""Registered Detectron2 backbones: a bottom-up network under a skip-scheme FPN neck.

Pick one with ``MODEL.BACKBONE.NAME`` and the scheme with ``MODEL.SHARP_FPN.SCHEME``.
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from ..schemes import build_scheme
from .neck import SkipSchemeFPN
from .vgg import VGG


def build_skip_scheme_neck(cfg, bottom_up) -> SkipSchemeFPN:
    """Put the configured skip-scheme FPN on ``bottom_up`` (any Detectron2 Backbone)."""
    in_features = cfg.MODEL.FPN.IN_FEATURES
    sharp = cfg.MODEL.SHARP_FPN
    return SkipSchemeFPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        scheme=build_scheme(sharp.SCHEME, len(in_features)),
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        fusion=sharp.FUSION,
        node_channels=sharp.NODE_CHANNELS,
        branch_channels=sharp.BRANCH_CHANNELS,
        node_norm=sharp.NORM,
        upsample_mode=sharp.UPSAMPLE,
        conv=sharp.CONV,
        conv_strides=tuple(sharp.CONV_STRIDES),
        row_conv_channels=sharp.ROW_CONV_CHANNELS,
    )


def build_vgg_backbone(cfg, input_shape: ShapeSpec) -> VGG:
    return VGG(
        depth=cfg.MODEL.VGG.DEPTH,
        in_channels=input_shape.channels,
        norm=cfg.MODEL.VGG.NORM,
        out_features=cfg.MODEL.VGG.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_sharp_fpn_backbone(cfg, input_shape: ShapeSpec) -> SkipSchemeFPN:
    """ResNet (MODEL.RESNETS.DEPTH 50 or 101) + skip-scheme FPN."""
    return build_skip_scheme_neck(cfg, build_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_vgg_sharp_fpn_backbone(cfg, input_shape: ShapeSpec) -> SkipSchemeFPN:
    """VGG (MODEL.VGG.DEPTH, 16 in the paper) + skip-scheme FPN."""
    return build_skip_scheme_neck(cfg, build_vgg_backbone(cfg, input_shape))
