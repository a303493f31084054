"""Detections -> non-overlapping label image, and the per-object table."""
import numpy as np
import pytest
import torch
from detectron2.layers.mask_ops import paste_masks_in_image

from sharp_fpn.predict import Detections, object_table, paint_labels
from sharp_fpn.predict.labels import label_dtype, largest_component, paste_mask


def solid(boxes, scores):
    """Detections whose masks fill their boxes."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return Detections(boxes, np.asarray(scores, np.float32), np.ones((len(boxes), 28, 28), np.float32))


def test_paste_matches_detectron2_pasting():
    rng = np.random.default_rng(0)
    masks = rng.random((20, 28, 28)).astype(np.float32)
    xy = rng.uniform(-5, 50, (20, 2))
    boxes = np.hstack([xy, xy + rng.uniform(0.5, 30, (20, 2))])
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, 60)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, 50)
    expected = paste_masks_in_image(torch.from_numpy(masks), torch.from_numpy(boxes).float(), (50, 60)).numpy()
    for mask, box, want in zip(masks, boxes, expected):
        local, (top, left) = paste_mask(mask, box, 50, 60)
        full = np.zeros((50, 60), bool)
        full[top : top + local.shape[0], left : left + local.shape[1]] = local
        assert np.array_equal(full, want)


def test_higher_score_wins_shared_pixels_and_labels_follow_scores():
    labels, scores = paint_labels(solid([[0, 0, 10, 10], [5, 5, 15, 15]], [0.6, 0.9]), 20, 20)
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    assert (labels[5:15, 5:15] == 1).all()  # the 0.9 box is whole
    assert (labels == 2).sum() == 100 - 25 and labels[7, 7] == 1


def test_equal_scores_the_earlier_detection_wins():
    labels, _ = paint_labels(solid([[0, 0, 10, 10], [5, 5, 15, 15]], [0.7, 0.7]), 20, 20)
    assert (labels[0:10, 0:10] == 1).all()


def test_hidden_objects_are_dropped_and_labels_stay_consecutive():
    detections = solid([[0, 0, 20, 20], [2, 2, 8, 8], [30, 30, 35, 35]], [0.9, 0.8, 0.5])
    labels, scores = paint_labels(detections, 40, 40)
    assert np.unique(labels).tolist() == [0, 1, 2] and scores.tolist() == pytest.approx([0.9, 0.5])


def test_a_split_object_keeps_its_largest_part():
    # A wide low-score box cut in two by a tall high-score one: keeps its bigger (right) side.
    labels, _ = paint_labels(solid([[4, 0, 8, 20], [0, 8, 20, 12]], [0.9, 0.5]), 20, 20)
    assert (labels[8:12, 8:20] == 2).all() and not (labels[8:12, 0:4] == 2).any()


def test_largest_component_uses_8_connectivity():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one object
    mask[4:6, 4:6] = True
    assert largest_component(mask).sum() == 4 and largest_component(mask)[4:, 4:].all()
    pair = np.zeros((4, 4), bool)
    pair[0, 0] = pair[1, 1] = True
    assert np.array_equal(largest_component(pair), pair)


def test_boxes_outside_the_image_are_clipped_or_dropped():
    labels, scores = paint_labels(solid([[-5, -5, 4, 4], [30, 30, 40, 40]], [0.9, 0.8]), 20, 20)
    assert len(scores) == 1 and (labels[:4, :4] == 1).all() and labels.sum() == 16


def test_label_dtype_widens_beyond_uint16():
    assert label_dtype(0) == np.uint16 and label_dtype(65535) == np.uint16 and label_dtype(65536) == np.uint32


def test_no_detections_give_an_empty_uint16_image():
    labels, scores = paint_labels(Detections.empty(), 7, 9)
    assert labels.shape == (7, 9) and labels.dtype == np.uint16 and not labels.any() and len(scores) == 0
    assert object_table(labels, scores, np.zeros((7, 9))) == []


def test_object_table_rows():
    labels = np.zeros((10, 12), np.uint16)
    labels[1:3, 2:6] = 1
    labels[5:10, 0:2] = 2
    intensity = np.arange(120, dtype=np.uint16).reshape(10, 12) * 100
    rows = object_table(labels, np.array([0.9, 0.4], np.float32), intensity)
    assert [r["label"] for r in rows] == [1, 2] and rows[1]["score"] == pytest.approx(0.4)
    assert rows[0]["area"] == 8 and rows[0]["centroid_y"] == 1.5 and rows[0]["centroid_x"] == 3.5
    assert (rows[0]["bbox_min_row"], rows[0]["bbox_min_col"], rows[0]["bbox_max_row"], rows[0]["bbox_max_col"]) == (1, 2, 3, 6)
    assert rows[0]["mean_intensity"] == pytest.approx(intensity[1:3, 2:6].mean())
