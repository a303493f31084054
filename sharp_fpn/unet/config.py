"""add_unet_config(cfg): every config key of the UNet family, with its default."""
from detectron2.config import CfgNode as CN


def add_unet_config(cfg) -> None:
    """Add the keys of ``SemanticUNet`` (model), its data and its loss to ``cfg``."""
    cfg.MODEL.UNET = CN()
    # A Table 1 model ("unet", "wide_unet", "unet++", "unet3+", "unet#") or any skip-scheme
    # name of sharp_fpn.schemes ("plain", "nested", "full_scale", "sharp", "++", "+++", "#").
    cfg.MODEL.UNET.NAME = "unet#"
    # Width of each grid row, finest first; its length is the number of rows L. Empty: the
    # paper's [32, 64, 128, 256, 512], or [35, 70, 140, 280, 560] for "wide_unet".
    cfg.MODEL.UNET.FILTERS = []
    # Column 0 of the grid: "vgg_blocks" (Table 1: one VGG block per row, as wide as FILTERS),
    # or an ImageNet encoder of the seed's Table 2: "VGG16" (its five blocks, strides 1-16) or
    # "R101" (Detectron2's ResNet-101: stem conv, res2..res5, strides 2-32). These keep their
    # own widths; FILTERS then sets only the decoder's.
    cfg.MODEL.UNET.ENCODER = "vgg_blocks"
    # Norm of the VGG16 / R101 encoder: "BN", "FrozenBN", "GN" or "" (none: torchvision's
    # vgg16-*.pth; vgg16_bn-*.pth and resnet101-*.pth need BN or FrozenBN).
    cfg.MODEL.UNET.ENCODER_NORM = "BN"
    # A torchvision ImageNet file for the VGG16 / R101 encoder (vgg16-*.pth, vgg16_bn-*.pth,
    # resnet101-*.pth), a local path or a URL fetched once into Detectron2's cache, loaded when
    # the model is built; "" starts from random weights. MODEL.WEIGHTS stays for whole-model checkpoints.
    cfg.MODEL.UNET.ENCODER_WEIGHTS = ""
    # Channels of the full-scale branch conv ("f" inside Eq. 1's full-scale term, one per source
    # node); 0 concatenates the resampled source unchanged ("raw concat"); -1: the paper's form
    # (UNet#: the first row's width, 32; UNet 3+: raw concat).
    cfg.MODEL.UNET.BRANCH_CHANNELS = -1
    # Deep supervision (seed Sec. 2.2): 1x1 heads on X(0,1..L-1), 3x3 heads on the outputs of
    # rows 1..L-1 against max-pooled ground truth; the loss is the mean over heads.
    cfg.MODEL.UNET.DEEP_SUPERVISION = False
    # How inference reads the heads: "accurate" (mean of the full-resolution heads) or "fast"
    # (one head: X(0, PRUNE_LEVEL), else the last).
    cfg.MODEL.UNET.DS_MODE = "accurate"
    # Pruning level L^i of the seed's Sec. 2.4 at inference (1..L-1; UNet++ and UNet# trained
    # with deep supervision): only the nodes X(r, c), r + c <= i, are computed. 0: no pruning.
    cfg.MODEL.UNET.PRUNE_LEVEL = 0
    # Classification-guided modules (seed Sec. 2.3) beside every head, trained with BCE.
    cfg.MODEL.UNET.CGM = False
    # Weight of the CGMs' mean classification loss against the mean segmentation loss.
    cfg.MODEL.UNET.CGM_LOSS_WEIGHT = 1.0
    # Probability above which a pixel is foreground, for evaluation.
    cfg.MODEL.UNET.SCORE_THRESH = 0.5

    cfg.MODEL.UNET.LOSS = CN()
    # Eq. 2: FOCAL_WEIGHT * focal + DICE_WEIGHT * soft Dice + LOVASZ_WEIGHT * Lovasz hinge.
    cfg.MODEL.UNET.LOSS.FOCAL_WEIGHT = 0.5
    cfg.MODEL.UNET.LOSS.DICE_WEIGHT = 1.0
    cfg.MODEL.UNET.LOSS.LOVASZ_WEIGHT = 0.5
    # Focal loss parameters alpha and beta of Eq. 3 (beta is the usual gamma).
    cfg.MODEL.UNET.LOSS.FOCAL_ALPHA = 0.25
    cfg.MODEL.UNET.LOSS.FOCAL_GAMMA = 2.0

    cfg.INPUT.UNET = CN()
    # Side of the square every image and merged mask is resized to (the seed: 96).
    cfg.INPUT.UNET.SIZE = 96
    # The seed's augmentation: RandomRotate90, flips, one of HSV / brightness-contrast.
    cfg.INPUT.UNET.AUGMENT = True

    cfg.DATASETS.DSB2018_SEMANTIC = CN()
    # A Dsb2018 stage folder (<id>/images, <id>/masks), or "synthetic" for a generated demo set.
    cfg.DATASETS.DSB2018_SEMANTIC.ROOT = "datasets/dsb2018/stage1_train"
    # Fraction of images held out for validation, and the seed of the split.
    cfg.DATASETS.DSB2018_SEMANTIC.VAL_FRACTION = 0.2
    cfg.DATASETS.DSB2018_SEMANTIC.SPLIT_SEED = 0
    # Where the resized set is cached as .npz ("" : no cache, read the folder every run).
    cfg.DATASETS.DSB2018_SEMANTIC.CACHE_DIR = "datasets/cache"
