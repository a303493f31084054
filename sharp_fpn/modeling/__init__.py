"""Detectron2 adapters: the skip-scheme FPN neck, the VGG bottom-up, registered backbones.

Importing this also registers Detectron2's own PointRend mask head (``PointRendMaskHead``), one
of the two high-IoU heads a config can put on any neck; the other, ``CascadeROIHeads``, is in
Detectron2's core registry already.
"""
from detectron2.projects import point_rend as _point_rend  # noqa: F401  (only registration)

from .backbones import build_resnet_sharp_fpn_backbone, build_vgg_sharp_fpn_backbone
from .neck import SkipSchemeFPN
from .vgg import VGG

__all__ = ["SkipSchemeFPN", "VGG", "build_resnet_sharp_fpn_backbone", "build_vgg_sharp_fpn_backbone"]
