"""Image kinds of nuclei datasets, for reporting accuracy where it differs most.

Dsb2018 mixes fluorescence (bright nuclei on dark), brightfield (dark on bright) and stained
tissue (colour), each at several sizes; a model can be good on average and useless on one kind.
The kind is read off the pixels, so it works on any dataset: colour if the channels differ,
else fluorescence or brightfield by the background (the median) being dark or bright.
"""
from __future__ import annotations

import collections
import math
from typing import Dict, List, Sequence

import numpy as np

# Below this many pixels an image is "small" (Dsb2018: 256x256 to 360x360; large: 520x696 up).
SMALL_IMAGE_PIXELS = 200_000
KINDS = ("fluorescence", "brightfield", "tissue")


def stain(rgb: np.ndarray) -> str:
    """"tissue" (colour), "fluorescence" (grey, dark background) or "brightfield" (grey, bright)."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim == 3 and rgb.shape[2] >= 3:
        colour = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
        if colour > 4.0:
            return "tissue"
        rgb = rgb[..., :3].mean(axis=2)
    return "fluorescence" if np.median(rgb) < 128 else "brightfield"


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
