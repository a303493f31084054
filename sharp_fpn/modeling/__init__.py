"""Detectron2 adapters: the skip-scheme FPN neck, the VGG bottom-up, registered backbones."""
from .backbones import build_resnet_sharp_fpn_backbone, build_vgg_sharp_fpn_backbone
from .neck import SkipSchemeFPN
from .vgg import VGG

__all__ = ["SkipSchemeFPN", "VGG", "build_resnet_sharp_fpn_backbone", "build_vgg_sharp_fpn_backbone"]
