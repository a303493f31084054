"""Image kinds are read off the pixels: stain by colour and background, size by area."""
import math

import numpy as np
import pytest

from sharp_fpn.data.kinds import (BRIGHT_NUCLEI_MODES, bright_nuclei, image_kind, kind_repeat_factors,
                                 needs_inversion, stain)


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


def test_which_images_bright_nuclei_inverts():
    dark = np.full((64, 64, 3), 10, np.uint8)
    dark[20:30, 20:30] = 200  # fluorescence: bright nucleus on a dark background
    bright = 255 - dark  # brightfield: dark nucleus on a bright background
    tissue = np.dstack([np.full((64, 64), v, np.uint8) for v in (235, 200, 225)])  # pink, bright
    tissue[20:30, 20:30] = (120, 60, 160)  # a purple nucleus
    dark_tissue = np.dstack([np.full((64, 64), v, np.uint8) for v in (40, 10, 60)])
    cases = {  # image: (inverted with "", "grey", "all")
        "bright grey": (bright, (False, True, True)),
        "bright grey HxW": (bright[..., 0], (False, True, True)),
        "dark grey": (dark, (False, False, False)),
        "bright colour": (tissue, (False, False, True)),
        "dark colour": (dark_tissue, (False, False, False)),
    }
    for name, (image, expected) in cases.items():
        assert tuple(needs_inversion(image, mode) for mode in BRIGHT_NUCLEI_MODES) == expected, name
        assert (needs_inversion(image, "grey") == (stain(image) == "brightfield")), name
    assert np.array_equal(bright_nuclei(bright, "grey"), dark)
    assert bright_nuclei(dark, "all") is dark
    # The rule is the median: a bright background wins over a large dark part, and 128 is bright.
    split = np.full((10, 10), 127, np.uint8)  # 60 of 100 pixels at 128
    split[:, 4:] = 128
    assert needs_inversion(split, "grey") and not needs_inversion(split[:, :4], "grey")
    with pytest.raises(ValueError, match="BRIGHT_NUCLEI = 'yes' is not valid"):
        needs_inversion(bright, "yes")
