"""The seed's UNet family for semantic nuclei segmentation: UNet, wide UNet, UNet++, UNet 3+
and UNet#, built from the shared skip schemes on the seed's VGG blocks or an ImageNet VGG16 /
ResNet-101 encoder, with deep supervision, pruning, classification-guided modules and the
hybrid loss. Importing it registers ``SemanticUNet`` with Detectron2's META_ARCH_REGISTRY.
"""
from .config import add_unet_config
from .encoders import ENCODERS, load_imagenet_weights
from .losses import HybridLoss, focal_loss, lovasz_hinge_loss, soft_dice_loss
from .meta_arch import SemanticUNet  # noqa: F401  (registers the meta-architecture)
from .model import SchemeUNet, UNetOutput, count_parameters, supervised_nodes
from .pruning import prune, pruned_model
from .supervision import DeepSupervisionLoss, combine_heads
from .zoo import FILTERS, PAPER_MODELS, WIDE_FILTERS, build_unet

__all__ = [
    "add_unet_config",
    "build_unet",
    "combine_heads",
    "count_parameters",
    "DeepSupervisionLoss",
    "ENCODERS",
    "FILTERS",
    "focal_loss",
    "HybridLoss",
    "load_imagenet_weights",
    "lovasz_hinge_loss",
    "PAPER_MODELS",
    "prune",
    "pruned_model",
    "SchemeUNet",
    "SemanticUNet",
    "soft_dice_loss",
    "supervised_nodes",
    "UNetOutput",
    "WIDE_FILTERS",
]
