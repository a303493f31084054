"""Kaggle DSB 2018 run-length encoding: the format of ``stage1_train_labels.csv``,
``stage1_solution.csv`` and of submissions.

Pairs "start length", 1-indexed, pixels numbered column-major (top to bottom, then left to
right). This is not COCO RLE (alternating zero/one counts, see pycocotools), hence its own codec.
"""
from __future__ import annotations

import numpy as np


def kaggle_rle_encode(mask: np.ndarray) -> str:
    """Encode a binary HxW mask (any nonzero value is foreground) as "start length ..." pairs.

    An empty mask gives the empty string.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    pixels = np.zeros(mask.size + 2, dtype=np.int8)
    pixels[1:-1] = mask.ravel(order="F") != 0
    # Positions (1-indexed) where a run starts and one past where it ends, interleaved.
    edges = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.stack([starts, ends - starts], axis=1).ravel()
    return " ".join(map(str, pairs.tolist()))


def kaggle_rle_decode(encoded: str, height: int, width: int) -> np.ndarray:
    """Decode "start length ..." pairs into an HxW uint8 mask of 0/1.

    Raises ValueError on text that is not a valid encoding for this size (odd number of values,
    non-positive lengths, runs out of the image, unsorted or overlapping runs), so a corrupt
    CSV row is reported rather than silently painted.
    """
    try:
        values = np.array(encoded.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"run-length text is not integers: {encoded[:40]!r}") from None
    if values.size % 2:
        raise ValueError(f"odd number of run-length values ({values.size})")
    starts = values[0::2] - 1
    lengths = values[1::2]
    ends = starts + lengths
    if values.size and (starts.min() < 0 or lengths.min() < 1 or ends.max() > height * width):
        raise ValueError(f"run outside a {height}x{width} image or of non-positive length")
    if np.any(starts[1:] < ends[:-1]):
        raise ValueError("runs are not sorted or overlap")
    # Mark +1 where a run starts and -1 where it ends; the running sum is the mask.
    steps = np.zeros(height * width + 1, dtype=np.int32)
    np.add.at(steps, starts, 1)
    np.add.at(steps, ends, -1)
    flat = np.cumsum(steps[:-1], dtype=np.int32).astype(np.uint8)
    return flat.reshape(width, height).T  # Fortran-ordered, as pycocotools.mask.encode wants
