"""sharp_fpn: UNet++ / UNet 3+ / UNet# skip connections in Detectron2's feature pyramid.

Importing the package registers its backbones (and, where present, datasets and models)
with Detectron2.
"""
from . import _quiet  # noqa: F401  (first: silences known third-party deprecation noise)
from .config import add_sharp_fpn_config, get_sharp_cfg
from .data import register as _datasets  # noqa: F401  (registers the dsb2018_* datasets)
from .modeling import SkipSchemeFPN  # noqa: F401  (registers the backbones)
from .schemes import SCHEMES, build_scheme, canonical_name
from .unet import meta_arch as _unet  # noqa: F401  (registers the SemanticUNet meta-architecture)
from .unet import trainer as _unet_trainer  # noqa: F401  (registers its trainer for train_net.py)

__version__ = "0.1.0"
__all__ = ["add_sharp_fpn_config", "get_sharp_cfg", "build_scheme", "canonical_name", "SCHEMES", "SkipSchemeFPN"]
