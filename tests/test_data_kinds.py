"""Image kinds are read off the pixels: stain by colour and background, size by area."""
import math

import numpy as np
import pytest

from sharp_fpn.data.kinds import image_kind, kind_repeat_factors, stain


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


def test_kind_repeat_factors_follow_the_lvis_rule():
    kinds = ["fluorescence"] * 8 + ["tissue"] * 2  # shares 0.8 and 0.2
    factors = kind_repeat_factors(kinds, threshold=0.5)
    assert factors[:8] == [1.0] * 8  # common kinds are never thinned out
    assert factors[8:] == [pytest.approx(math.sqrt(0.5 / 0.2))] * 2
    assert kind_repeat_factors(kinds, threshold=0.1) == [1.0] * 10  # no kind is rarer than 0.1
