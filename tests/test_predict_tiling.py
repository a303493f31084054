"""Tiling: the grid, the "most central tile" merge rule, and tiled == untiled.

A CNN's output on a tile depends on what the tile cuts off, so a random-init model's tiled and
untiled outputs differ for reasons that are not the merge logic. To test the logic itself, the
tiles here are "predicted" by cutting the tiny model's real whole-image predictions to each tile
(objects crossing a tile edge come out cut, as a real tile would show them): a model whose
output does not depend on context. With it, tiling must reproduce the single pass exactly.
"""
import numpy as np
import pytest
from test_predict import check_labels, one_torch_thread, synthetic_images, tiny_predictor  # noqa: F401

from sharp_fpn.data.image_io import read_image
from sharp_fpn.predict import Detections, Window, detect_tiled, paint_labels, tile_windows
from sharp_fpn.predict.tiling import core_bounds, tile_grid

AXES = [(100, 100, 20), (101, 100, 20), (4096, 1024, 128), (2048, 1024, 128), (2784, 1400, 128), (130, 64, 32),
        (1000, 256, 0), (999, 256, 7)]


@pytest.mark.parametrize("length,tile_size,overlap", AXES)
def test_tiles_cover_the_axis_with_at_least_the_overlap(length, tile_size, overlap):
    tile, starts = tile_grid(length, tile_size, overlap)
    assert tile <= tile_size and starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # overlap >= asked
    assert all(b > a for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length,tile_size,overlap", AXES)
def test_the_fewest_tiles_and_no_more_overlap_than_they_force(length, tile_size, overlap):
    tile, starts = tile_grid(length, tile_size, overlap)
    fewer = len(starts) - 1
    assert fewer == 0 or fewer * tile_size - (fewer - 1) * overlap < length  # one tile less cannot cover it
    assert len(starts) * tile - (len(starts) - 1) * overlap < length + len(starts)  # the tile is as short as can be


def test_a_side_of_twice_the_tile_takes_three_short_tiles():
    assert tile_grid(2048, 1024, 128) == (768, [0, 640, 1280])


@pytest.mark.parametrize("length,tile,overlap", [(130, 64, 32), (4096, 1024, 128), (300, 100, 10)])
def test_cores_partition_the_axis_and_sit_inside_their_tile(length, tile, overlap):
    tile, starts = tile_grid(length, tile, overlap)
    cores = core_bounds(starts, tile)
    points = np.arange(0, length, 0.25)
    owners = sum(((points >= low) & (points < high)).astype(int) for low, high in cores)
    assert np.all(owners == 1)
    for start, (low, high) in zip(starts, cores):  # at least overlap / 2 from an inner tile edge
        assert low == -np.inf or low >= start + overlap / 2
        assert high == np.inf or high <= start + tile - overlap / 2


def test_one_window_when_the_image_fits():
    assert tile_windows(60, 80, 80, 16) == [(Window(0, 0, 60, 80), (-np.inf, np.inf, -np.inf, np.inf))]


def cut_to_window(detections: Detections, window: Window) -> Detections:
    """What an ideal, context-free model sees in a tile: the objects that reach into it, in tile
    coordinates, those crossing its edge cut (box clipped)."""
    local = detections.shifted(-window.left, -window.top)
    boxes = local.boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, window.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, window.height)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return Detections(boxes, local.scores, local.masks).take(inside)


def test_merge_keeps_each_small_object_once_with_its_own_box():
    rng = np.random.default_rng(0)
    size, tile, overlap, n = 300, 100, 40, 400
    xy = rng.uniform(0, size - 39, (n, 2))
    boxes = np.hstack([xy, xy + rng.uniform(1, 39, (n, 2))])  # every box smaller than the overlap
    truth = Detections(boxes, rng.random(n).astype(np.float32), rng.random((n, 28, 28)).astype(np.float32))
    seen = []
    merged = detect_tiled(np.zeros((size, size, 3), np.uint8), lambda t, w: seen.append(w) or cut_to_window(truth, w), tile, overlap)
    assert len(seen) == 25 and len(merged) == n
    order = np.argsort(merged.scores)
    assert np.array_equal(merged.boxes[order], truth.boxes[np.argsort(truth.scores)])
    assert np.array_equal(merged.masks[order], truth.masks[np.argsort(truth.scores)])


def test_tiled_equals_untiled_on_real_predictions():
    predictor = tiny_predictor()
    image = read_image(synthetic_images()[1], "RGB")  # 96x128, scale 1 for this config
    whole = predictor.detect(image)
    tile, overlap = 64, 40
    sides = np.maximum(whole.boxes[:, 2] - whole.boxes[:, 0], whole.boxes[:, 3] - whole.boxes[:, 1])
    whole = whole.take(sides < overlap)  # the rule's premise: objects smaller than the overlap
    assert len(whole) >= 10
    cut_copies = []

    def ideal_tile_model(tile_image, window):
        assert tile_image.shape[:2] == (window.height, window.width)
        found = cut_to_window(whole, window)
        cut_copies.append(len(found))
        return found

    tiled = detect_tiled(image, ideal_tile_model, tile, overlap)
    assert len(cut_copies) == 12 and sum(cut_copies) > len(whole)  # objects were seen twice or cut
    labels_tiled, scores_tiled = paint_labels(tiled, 96, 128)
    labels_whole, scores_whole = paint_labels(whole, 96, 128)
    assert len(scores_whole) > 5
    assert np.array_equal(labels_tiled, labels_whole) and np.array_equal(scores_tiled, scores_whole)


def test_predictor_tiles_large_inputs_and_keeps_the_invariants():
    # scale 1: the tiles are counted in file pixels, whatever the config's scale rule does
    image = synthetic_images()[0]
    tiled = tiny_predictor(tile_size=64, tile_overlap=32, scale=1.0).predict(image)
    assert tiled.num_tiles == 6 and tiled.num_objects > 0  # 96x128 -> 2 x 3 tiles
    check_labels(tiled)
    assert tiny_predictor(tile_size=128, tile_overlap=32, scale=1.0).predict(image).num_tiles == 1
    untiled = tiny_predictor(tile_size=None, scale=1.0).predict(image)
    assert np.array_equal(tiny_predictor(tile_size=128, tile_overlap=32, scale=1.0).predict(image).labels, untiled.labels)
