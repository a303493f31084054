"""Image kinds of nuclei datasets, for reporting accuracy where it differs most.

Dsb2018 mixes fluorescence (bright nuclei on dark), brightfield (dark on bright) and stained
tissue (colour), each at several sizes; a model can be good on average and useless on one kind.
The kind is read off the pixels, so it works on any dataset: colour if the channels differ,
else fluorescence or brightfield by the background (the median) being dark or bright.
"""
from __future__ import annotations

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
