"""Every config key sharp_fpn adds to Detectron2, with its default."""
import logging
from pathlib import Path
from typing import Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .schemes import canonical_name


def add_sharp_fpn_config(cfg):
    """Add the keys of the skip-scheme FPN necks and the VGG bottom-up to ``cfg``."""
    cfg.MODEL.SHARP_FPN = CN()
    # Skip scheme between the laterals and the P2-P5 outputs: "plain" (FPN), "nested" (UNet++,
    # "++"), "full_scale" (UNet 3+, "+++") or "sharp" (UNet#, "#", Eq. 1 of the UNet# paper).
    cfg.MODEL.SHARP_FPN.SCHEME = "sharp"
    # How a decoder node merges its inputs before its 3x3 conv: "concat" (the paper's [.]) or
    # "sum" (cheaper). The plain scheme always adds, exactly as Detectron2's FPN (FPN.FUSE_TYPE).
    cfg.MODEL.SHARP_FPN.FUSION = "concat"
    # Channels of the intermediate nodes X(i,j), j >= 1; 0 means MODEL.FPN.OUT_CHANNELS.
    cfg.MODEL.SHARP_FPN.NODE_CHANNELS = 0
    # Channels of each full-scale branch conv ("f" inside Eq. 1's full-scale term; UNet 3+ uses
    # C/L so that the concatenation of L branches is C wide). Ignored with FUSION "sum".
    cfg.MODEL.SHARP_FPN.BRANCH_CHANNELS = 64
    # Norm of the new node and branch convs. GN, since detection batches are too small for BN
    # and new layers cannot start from frozen statistics.
    cfg.MODEL.SHARP_FPN.NORM = "GN"
    # Interpolation of the upsampling edges: "nearest" (as FPN) or "bilinear".
    cfg.MODEL.SHARP_FPN.UPSAMPLE = "nearest"
    # Form of every node and branch conv (the paper's f): "pw_dw" (pointwise 1x1 then depthwise
    # 3x3), "3x3" (the paper's literal Conv2d 3x3), "separable" (depthwise 3x3 then pointwise 1x1)
    # or "1x1". Same nodes and edges; all but "1x1" keep the 3x3 receptive field. "pw_dw" is the
    # default: the literal sharp neck makes the whole R-101 model 1.6x slower than plain FPN on a
    # CPU, pw_dw 1.15x, at the same accuracy on Dsb2018 (benchmarks/RESULTS.md#what-does-the--neck-cost).
    cfg.MODEL.SHARP_FPN.CONV = "pw_dw"
    # Strides of the rows whose nodes use CONV, e.g. [4] for the costly stride-4 row only; the
    # other rows keep "3x3". Empty: every row.
    cfg.MODEL.SHARP_FPN.CONV_STRIDES = []
    # Width of an extra conv3x3-norm-ReLU on each row's output before its output conv; 0: none.
    # With SCHEME "plain" it gives the parameter-matched wide FPN (capacity without topology).
    cfg.MODEL.SHARP_FPN.ROW_CONV_CHANNELS = 0

    # The input pipeline (sharp_fpn/data/augment.py), shared by training, evaluation and
    # prediction. How an image is resized: "shortest_edge" (Detectron2's MIN_SIZE_*/MAX_SIZE_*)
    # or "scale" (a factor of the file's own pixels, so nuclei keep their size in pixels).
    cfg.INPUT.RESIZE = "shortest_edge"
    # With RESIZE "scale": the training factor is drawn uniformly from this range ...
    cfg.INPUT.SCALE_TRAIN = (1.0, 1.0)
    # ... and evaluation and prediction use this one.
    cfg.INPUT.SCALE_TEST = 1.0
    # Vertical flips and transposes besides INPUT.RANDOM_FLIP: microscopy has no up or down.
    cfg.INPUT.DIHEDRAL = False
    # Random brightness, contrast and gamma (factor ranges), grey and inverted images.
    cfg.INPUT.INTENSITY = CN()
    cfg.INPUT.INTENSITY.ENABLED = False
    cfg.INPUT.INTENSITY.BRIGHTNESS = (0.8, 1.2)
    cfg.INPUT.INTENSITY.CONTRAST = (0.8, 1.2)
    cfg.INPUT.INTENSITY.GAMMA = (0.7, 1.4)
    cfg.INPUT.INTENSITY.GREY_PROB = 0.0
    cfg.INPUT.INTENSITY.INVERT_PROB = 0.0
    # HED stain jitter of colour crops (Tellez et al. 2018): each of the haematoxylin, eosin and
    # DAB channels of skimage's rgb2hed scaled by a factor from [1 - s, 1 + s] and shifted by
    # one from [-s/10, s/10], s this value; 0: off. HED_PROB: share of colour crops jittered.
    cfg.INPUT.INTENSITY.HED_JITTER = 0.0
    cfg.INPUT.INTENSITY.HED_PROB = 0.5
    # Make nuclei bright by inverting (255 - value) whole images whose background is bright, in
    # training, evaluation and prediction: "" off, "grey" brightfield only, "all" any bright image.
    cfg.INPUT.BRIGHT_NUCLEI = ""
    # Repeat images of rare stains (sharp_fpn/data/kinds.py: fluorescence, brightfield, tissue)
    # in training: a stain making up a share f < this of the images is repeated sqrt(this / f) times.
    # 0: every image equally often. Reads every training image once when the loader is built.
    cfg.DATALOADER.KIND_REPEAT_THRESHOLD = 0.0

    cfg.MODEL.VGG = CN()
    # VGG depth: 11, 13, 16 or 19 (the UNet# paper's instance experiments use 16).
    cfg.MODEL.VGG.DEPTH = 16
    # Norm after each VGG conv: "" (torchvision vgg16), "BN" (vgg16_bn), "GN", "FrozenBN".
    cfg.MODEL.VGG.NORM = ""
    # Stages to output; "vggK" is the output of block K after its max-pool, at stride 2**K.
    cfg.MODEL.VGG.OUT_FEATURES = ["vgg2", "vgg3", "vgg4", "vgg5"]


# The shipped yaml files live beside the package (editable install / source checkout).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name: str) -> Path:
    """A path as given if it exists, else a bare file name (".yaml" optional) from configs/."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))) or "none"
    raise FileNotFoundError(f"Config {name!r} not found as a file or in {CONFIG_DIR} (shipped: {shipped})")


def get_sharp_cfg(config_file: str = None, opts: Sequence[str] = ()) -> CN:
    """Detectron2's defaults + sharp_fpn's keys (FPN necks and UNet family), merged with a yaml (path or shipped name) and
    ``KEY VALUE`` overrides; checked with :func:`check_config`. Not frozen."""
    from detectron2.projects.point_rend import add_pointrend_config

    from .unet.config import add_unet_config

    cfg = get_cfg()
    add_sharp_fpn_config(cfg)
    add_unet_config(cfg)
    add_pointrend_config(cfg)  # Detectron2's own PointRend keys, for the *_pointrend.yaml heads
    if config_file:
        cfg.merge_from_file(str(resolve_config_path(config_file)))
    cfg.merge_from_list(list(opts))
    check_config(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("CUDA is not available: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def check_config(cfg: CN) -> None:
    """Fail early, with the valid choices, on values that would only break deep in a build."""
    cfg.MODEL.SHARP_FPN.SCHEME = canonical_name(cfg.MODEL.SHARP_FPN.SCHEME)
    from .data.kinds import BRIGHT_NUCLEI_MODES
    from .modeling.neck import CONVS, FUSIONS, UPSAMPLE_MODES

    for key, value, valid in (
        ("MODEL.SHARP_FPN.FUSION", cfg.MODEL.SHARP_FPN.FUSION, FUSIONS),
        ("MODEL.SHARP_FPN.CONV", cfg.MODEL.SHARP_FPN.CONV, CONVS),
        ("MODEL.SHARP_FPN.UPSAMPLE", cfg.MODEL.SHARP_FPN.UPSAMPLE, UPSAMPLE_MODES),
        ("INPUT.RESIZE", cfg.INPUT.RESIZE, ("shortest_edge", "scale")),
        ("INPUT.BRIGHT_NUCLEI", cfg.INPUT.BRIGHT_NUCLEI, BRIGHT_NUCLEI_MODES),
    ):
        if value not in valid:
            raise ValueError(f"{key} = {value!r} is not valid; choose one of {valid}")
