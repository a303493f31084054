"""Image kinds of nuclei datasets, for reporting accuracy where it differs most.

Dsb2018 mixes fluorescence (bright nuclei on dark), brightfield (dark on bright) and stained
tissue (colour), each at several sizes; a model can be good on average and useless on one kind.
The kind is read off the pixels, so it works on any dataset: colour if the channels differ,
else fluorescence or brightfield by the background (the median) being dark or bright.

The same rule can make nuclei bright in every image (``INPUT.BRIGHT_NUCLEI``,
:func:`needs_inversion`): as Cellpose does, an image whose background is bright is inverted, so
that brightfield's dark nuclei on a bright background look like fluorescence.
"""
from __future__ import annotations

import collections
import math
from typing import Dict, List, Sequence

import numpy as np

# Below this many pixels an image is "small" (Dsb2018: 256x256 to 360x360; large: 520x696 up).
SMALL_IMAGE_PIXELS = 200_000
KINDS = ("fluorescence", "brightfield", "tissue")
# INPUT.BRIGHT_NUCLEI: "" (off), "grey" (invert brightfield) or "all" (also bright-background colour).
BRIGHT_NUCLEI_MODES = ("", "grey", "all")


def is_colour(rgb: np.ndarray) -> bool:
    """Whether the colour channels differ: by more than 4 grey levels per pixel, summed over
    the R-G and G-B differences (JPEG noise on a grey image stays below)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        return False
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean() > 4.0)


def background_is_bright(rgb: np.ndarray) -> bool:
    """Whether the median grey level (colour channels averaged) is 128 or more."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim == 3 and rgb.shape[2] >= 3:
        rgb = rgb[..., :3].mean(axis=2)
    return bool(np.median(rgb) >= 128)


def stain(rgb: np.ndarray) -> str:
    """"tissue" (colour), "fluorescence" (grey, dark background) or "brightfield" (grey, bright)."""
    if is_colour(rgb):
        return "tissue"
    return "brightfield" if background_is_bright(rgb) else "fluorescence"


def needs_inversion(rgb: np.ndarray, mode: str) -> bool:
    """Whether ``INPUT.BRIGHT_NUCLEI`` ``mode`` inverts this whole image (HxW or HxWxC uint8,
    RGB or BGR): never with "", brightfield (grey, bright background; :func:`stain`) with
    "grey", any image with a bright background (median grey level >= 128, tissue included) with
    "all". Decide on the whole image, never a crop or tile, so that all parts of it agree."""
    if mode not in BRIGHT_NUCLEI_MODES:
        raise ValueError(f"INPUT.BRIGHT_NUCLEI = {mode!r} is not valid; choose one of {BRIGHT_NUCLEI_MODES}")
    if mode == "all":
        return background_is_bright(rgb)
    return mode == "grey" and stain(rgb) == "brightfield"


def bright_nuclei(image: np.ndarray, mode: str) -> np.ndarray:
    """``image`` (uint8) inverted (255 - value) if :func:`needs_inversion`, else itself."""
    return 255 - image if needs_inversion(image, mode) else image


def image_kind(rgb: np.ndarray) -> str:
    """The stain and a size class, e.g. "fluorescence small" or "brightfield large"."""
    size = "small" if rgb.shape[0] * rgb.shape[1] < SMALL_IMAGE_PIXELS else "large"
    return f"{stain(rgb)} {size}"


def kind_repeat_factors(kinds: Sequence[str], threshold: float) -> List[float]:
    """How often to repeat each image so that rare kinds are seen more: a kind making up a share
    f < threshold of the images gets sqrt(threshold / f), others 1 (LVIS's repeat-factor rule,
    Gupta et al. 2019, applied to image kinds instead of categories). Dsb2018's brightfield
    images are 8 of 480 in training; unrepeated, a model hardly learns them."""
    counts = collections.Counter(kinds)
    factor: Dict[str, float] = {k: max(1.0, math.sqrt(threshold * len(kinds) / n)) for k, n in counts.items()}
    return [factor[k] for k in kinds]
