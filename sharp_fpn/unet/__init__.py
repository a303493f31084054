"""The seed's UNet family for semantic nuclei segmentation: UNet, wide UNet, UNet++, UNet 3+
and UNet#, built from the shared skip schemes, with deep supervision, pruning,
classification-guided modules and the hybrid loss.
"""
from .losses import HybridLoss, focal_loss, lovasz_hinge_loss, soft_dice_loss
from .model import SchemeUNet, UNetOutput, count_parameters, supervised_nodes
from .pruning import prune, pruned_model
from .supervision import DeepSupervisionLoss, combine_heads
from .zoo import FILTERS, PAPER_MODELS, WIDE_FILTERS, build_unet
