"""The seed's Table 1 models by name, with the paper's widths and branch forms as defaults."""
from typing import Optional, Sequence

from ..schemes import build_scheme, canonical_name
from .encoders import VGG_BLOCKS, load_imagenet_weights
from .model import SchemeUNet

FILTERS = (32, 64, 128, 256, 512)
WIDE_FILTERS = (35, 70, 140, 280, 560)  # wide UNet: a plain UNet with UNet++'s parameter budget

# Table 1 name -> (scheme, filters). "wide_unet" is the only one that is not a scheme alias.
PAPER_MODELS = {
    "unet": ("plain", FILTERS),
    "wide_unet": ("plain", WIDE_FILTERS),
    "unet++": ("nested", FILTERS),
    "unet3+": ("full_scale", FILTERS),
    "unet#": ("sharp", FILTERS),
}


def default_branch_channels(scheme: str, filters: Sequence[int]) -> int:
    """The branch form whose parameter count matches the seed's Table 1.

    UNet#: g = conv3x3 to the first-row width (32); UNet 3+: the raw concat (0). Other
    schemes have no branches.
    """
    return filters[0] if canonical_name(scheme) == "sharp" else 0


def build_unet(
    name: str = "unet#",
    filters: Optional[Sequence[int]] = None,
    branch_channels: Optional[int] = None,
    deep_supervision: bool = False,
    cgm: bool = False,
    in_channels: int = 3,
    num_classes: int = 1,
    encoder: str = VGG_BLOCKS,
    encoder_norm: str = "BN",
    encoder_weights: str = "",
) -> SchemeUNet:
    """A UNet-family model by Table 1 name ("unet", "wide_unet", "unet++", "unet3+", "unet#")
    or by any scheme name of ``sharp_fpn.schemes`` ("plain", "nested", "+++", "#", ...).

    ``filters`` sets the widths and, by its length, the number of rows (default: the paper's).
    ``branch_channels`` None picks the paper's form (see ``default_branch_channels``).
    ``encoder`` "VGG16" or "R101" puts an ImageNet encoder under the decoder (Table 2, upper
    part; ``filters`` then sets the decoder only); ``encoder_weights`` is a torchvision
    ImageNet file to start it from (a local path, or a URL fetched once into Detectron2's cache).
    """
    key = str(name).strip().lower()
    if key in PAPER_MODELS:
        scheme, paper_filters = PAPER_MODELS[key]
    else:
        scheme, paper_filters = canonical_name(key), FILTERS
    filters = list(filters if filters is not None else paper_filters)
    if branch_channels is None:
        branch_channels = default_branch_channels(scheme, filters)
    model = SchemeUNet(
        build_scheme(scheme, len(filters)),
        filters,
        in_channels=in_channels,
        num_classes=num_classes,
        branch_channels=branch_channels,
        deep_supervision=deep_supervision,
        cgm=cgm,
        encoder=encoder,
        encoder_norm=encoder_norm,
    )
    if encoder_weights:
        load_imagenet_weights(model.encoder, encoder_weights)
    return model
