"""Kaggle run-length codec: hand-computed cases and round trips."""
import numpy as np
import pytest

from sharp_fpn.data.kaggle_rle import kaggle_rle_decode, kaggle_rle_encode

# Pixels are numbered 1..H*W down the columns:  1 4 7
#                                                2 5 8
#                                                3 6 9
HAND_COMPUTED = [
    ([[0, 1, 0], [0, 1, 0], [1, 0, 0]], "3 3"),  # pixels 3, 4, 5: one run across a column break
    ([[1, 0, 0], [0, 0, 0], [0, 0, 1]], "1 1 9 1"),  # first and last pixel
    ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], ""),
    ([[1, 1, 1], [1, 1, 1], [1, 1, 1]], "1 9"),
    ([[1, 1], [0, 0], [0, 1]], "1 1 4 1 6 1"),  # 3x2: pixels 1, 4, 6
    ([[0, 1, 1, 0]], "2 2"),  # 1x4: each column is one pixel
]


@pytest.mark.parametrize("rows, encoded", HAND_COMPUTED)
def test_hand_computed(rows, encoded):
    mask = np.array(rows, dtype=np.uint8)
    assert kaggle_rle_encode(mask) == encoded
    np.testing.assert_array_equal(kaggle_rle_decode(encoded, *mask.shape), mask)


def test_encode_accepts_any_nonzero_as_foreground():
    assert kaggle_rle_encode(np.array([[0, 255], [7, 0]])) == "2 2"


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random_masks(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 40, size=2)
    mask = (rng.random((height, width)) < rng.random()).astype(np.uint8)
    decoded = kaggle_rle_decode(kaggle_rle_encode(mask), height, width)
    assert decoded.dtype == np.uint8 and decoded.shape == (height, width)
    np.testing.assert_array_equal(decoded, mask)


def test_round_trip_from_text():
    assert kaggle_rle_encode(kaggle_rle_decode("5 3 20 4 40 1", 8, 6)) == "5 3 20 4 40 1"


def test_adjacent_runs_decode_as_one():
    np.testing.assert_array_equal(kaggle_rle_decode("1 2 3 2", 2, 2), np.ones((2, 2), np.uint8))


@pytest.mark.parametrize(
    "encoded, problem",
    [
        ("1 2 3", "odd number"),
        ("a b", "not integers"),
        ("0 2", "outside"),
        ("9 2", "outside"),  # past the 9th, last pixel of a 3x3 image
        ("2 0", "non-positive"),
        ("5 1 1 1", "not sorted"),
        ("1 3 2 1", "overlap"),
    ],
)
def test_invalid_text_is_rejected(encoded, problem):
    with pytest.raises(ValueError, match=problem):
        kaggle_rle_decode(encoded, 3, 3)


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        kaggle_rle_encode(np.zeros((2, 2, 2)))
