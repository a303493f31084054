"""Image kinds are read off the pixels: stain by colour and background, size by area."""
import numpy as np

from sharp_fpn.data.kinds import image_kind, stain


def test_stains():
    dark = np.full((64, 64, 3), 10, np.uint8)
    dark[20:30, 20:30] = 200  # bright nucleus on a dark background
    assert stain(dark) == "fluorescence"
    assert stain(255 - dark) == "brightfield"
    tissue = np.dstack([np.full((64, 64), v, np.uint8) for v in (200, 150, 210)])  # pink-purple
    assert stain(tissue) == "tissue"
    assert stain(dark[..., 0]) == "fluorescence"  # a grey HxW array


def test_size_class():
    assert image_kind(np.zeros((256, 320, 3), np.uint8)) == "fluorescence small"
    assert image_kind(np.full((520, 696, 3), 230, np.uint8)) == "brightfield large"
