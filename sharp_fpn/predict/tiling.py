"""Tiled inference for images larger than one pass, and the rule that merges the tiles.

Along each axis the image is cut into the fewest tiles of at most ``tile_size`` pixels that
overlap by at least ``overlap``, all of one length, spread evenly from edge to edge: so the
overlap is no larger than the tile count forces (a 2,048 px side in tiles of at most 1,024 with
128 overlap takes three 768 px tiles, not three of 1,024 overlapping by up to 512).

Merging rule ("most central tile"): along each axis the image is cut in the middle of every
overlap, which splits it into one *core* per tile. A detection is kept only from the tile whose
core holds the centre of its box. An object whose box is smaller than the overlap is therefore
kept exactly once, from a tile that contains all of it; the partial copies that other tiles see
at their borders have their box centre outside those tiles' cores and are dropped. So choose an
overlap larger than the largest nucleus (in model input pixels). Pixels two kept objects share
are resolved later, by score, as for a single pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np


@dataclass
class Detections:
    """Mask R-CNN's raw output for one image or tile, as NumPy arrays.

    boxes: (N, 4) float64 x0, y0, x1, y1 in pixel-corner coordinates (pixel (0, 0) spans
    [0, 1] x [0, 1]). scores: (N,) float32. masks: (N, M, M) float32 mask probabilities over
    each box (M = 28 for Detectron2's default mask head), not yet pasted into the image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls, mask_size: int = 28) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros((0, mask_size, mask_size), np.float32))

    @classmethod
    def concat(cls, parts: Sequence["Detections"]) -> "Detections":
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.masks for p in parts]),
        )

    def take(self, index) -> "Detections":
        return Detections(self.boxes[index], self.scores[index], self.masks[index])

    def shifted(self, dx: float, dy: float) -> "Detections":
        return Detections(self.boxes + np.array([dx, dy, dx, dy], dtype=np.float64), self.scores, self.masks)

    def scaled(self, sx: float, sy: float) -> "Detections":
        return Detections(self.boxes * np.array([sx, sy, sx, sy], dtype=np.float64), self.scores, self.masks)

    def centres(self) -> np.ndarray:
        """(N, 2) box centres, x then y."""
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2


@dataclass(frozen=True)
class Window:
    """A tile: rows top..top+height, columns left..left+width of the image."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def tile_grid(length: int, tile_size: int, overlap: int) -> tuple[int, list[int]]:
    """(tile length, start of each tile) along one axis: the fewest tiles of at most
    ``tile_size`` that overlap by ``overlap`` or more, of equal length, the first at 0 and the
    last ending at ``length``, the others spread evenly between them."""
    if length <= tile_size:
        return length, [0]
    count = math.ceil((length - overlap) / (tile_size - overlap))
    tile = math.ceil((length + (count - 1) * overlap) / count)  # <= tile_size, by the count
    step = (length - tile) / (count - 1)  # <= tile - overlap
    return tile, [round(i * step) for i in range(count)]


def core_bounds(starts: Sequence[int], tile_length: int) -> list[tuple[float, float]]:
    """Half-open [low, high) core of each tile along one axis: cut in the middle of each
    overlap; the first core starts at -inf and the last ends at +inf."""
    cuts = [(start + tile_length + following) / 2 for start, following in zip(starts, starts[1:])]
    lows = [-np.inf] + cuts
    highs = cuts + [np.inf]
    return list(zip(lows, highs))


def tile_windows(height: int, width: int, tile_size: int, overlap: int) -> list[tuple[Window, tuple[float, float, float, float]]]:
    """Each tile as (window, core): core = (x_low, x_high, y_low, y_high), in image pixels.

    Row-major order. One window covering the image if it fits in ``tile_size``.
    """
    check_tiling(tile_size, overlap)
    (tile_h, ys), (tile_w, xs) = tile_grid(height, tile_size, overlap), tile_grid(width, tile_size, overlap)
    y_cores, x_cores = core_bounds(ys, tile_h), core_bounds(xs, tile_w)
    return [
        (Window(y, x, tile_h, tile_w), (*x_core, *y_core))
        for y, y_core in zip(ys, y_cores)
        for x, x_core in zip(xs, x_cores)
    ]


def check_tiling(tile_size: int, overlap: int) -> None:
    if tile_size < 32:
        raise ValueError(f"tile size {tile_size} is too small (at least 32 px)")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"tile overlap {overlap} must be >= 0 and smaller than the tile size {tile_size}")


def in_core(detections: Detections, core: tuple[float, float, float, float]) -> np.ndarray:
    """Boolean index of the detections whose box centre lies in ``core`` (image coordinates)."""
    x_low, x_high, y_low, y_high = core
    centres = detections.centres()
    x, y = centres[:, 0], centres[:, 1]
    return (x >= x_low) & (x < x_high) & (y >= y_low) & (y < y_high)


Detector = Callable[[np.ndarray, Window], Detections]


def detect_tiled(
    image: np.ndarray,
    detect: Detector,
    tile_size: Optional[int],
    overlap: int,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> Detections:
    """Run ``detect(tile, window)`` (detections in tile coordinates) over an HxWxC image and
    return the merged detections in image coordinates.

    ``tile_size`` None or an image no larger than it: one call on the whole image, every
    detection kept. Otherwise tiles are merged by the "most central tile" rule (module doc).
    ``progress`` wraps the tile iterable (e.g. a tqdm), and is used only when there are tiles.
    """
    height, width = image.shape[:2]
    if not tile_size or (height <= tile_size and width <= tile_size):
        return detect(image, Window(0, 0, height, width))
    tiles = tile_windows(height, width, tile_size, overlap)
    kept = []
    for window, core in progress(tiles) if progress else tiles:
        found = detect(image[window.slices], window).shifted(window.left, window.top)
        kept.append(found.take(in_core(found, core)))
    return Detections.concat(kept)
