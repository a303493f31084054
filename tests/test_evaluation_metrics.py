"""Nuclei metrics on hand-computed cases: every expected number is worked out in a comment."""

import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import COCO_BACKENDS as BACKENDS  # every COCO AP test runs on both libraries

from sharp_fpn.evaluation.metrics import (
    DSB_IOU_THRESHOLDS,
    coco_ap,
    detection_scores,
    dsb_score,
    dsb_score_per_threshold,
    encode_masks,
    evaluate_image,
    foreground_scores,
    match_instances,
    remove_overlaps,
    segmentation_to_rle,
)

# pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHAPE = (12, 12)


def box_mask(y0, x0, h, w, shape=SHAPE):
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def rles(*masks):
    return encode_masks(np.stack(masks)) if masks else []


# Two 4x4 ground-truth squares, far apart.
GT_A = box_mask(0, 0, 4, 4)
GT_B = box_mask(6, 6, 4, 4)


def test_thresholds_are_the_kaggle_ones():
    assert DSB_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_prediction_scores_one_everywhere():
    result = evaluate_image(rles(GT_A, GT_B), rles(GT_A, GT_B), [0.9, 0.8])
    assert result.dsb_score() == 1.0
    assert detection_scores([result]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert foreground_scores([result]) == {
        "fg_iou": 1.0,
        "fg_dice": 1.0,
        "fg_iou_pooled": 1.0,
        "fg_dice_pooled": 1.0,
    }


def test_dsb_score_with_a_shifted_prediction():
    # A is exact (IoU 1). B shifted one column: intersection 12, union 20, IoU 0.6.
    # t = 0.50, 0.55: both match -> 2/2 = 1. t = 0.60 .. 0.95 (8 thresholds; IoU > t is
    # strict, so 0.6 fails at t = 0.6): TP 1, FP 1, FN 1 -> 1/3.  Mean: (2 + 8/3) / 10 = 7/15.
    result = evaluate_image(rles(GT_A, GT_B), rles(GT_A, box_mask(6, 7, 4, 4)), [0.9, 0.8])
    assert result.num_gt == 2 and result.num_pred == 2
    np.testing.assert_allclose(result.matched_ious, [1.0, 0.6])
    assert result.dsb_score() == pytest.approx(7 / 15, abs=1e-12)
    per_threshold = dsb_score_per_threshold([result])
    assert per_threshold[0.55] == 1.0 and per_threshold[0.6] == pytest.approx(1 / 3)
    # Foreground: GT 32 px, prediction 32 px, overlap 16 + 12 = 28.
    # IoU 28 / (32 + 32 - 28) = 7/9; Dice 2 * 28 / 64 = 7/8.
    fg = foreground_scores([result])
    assert fg["fg_iou"] == pytest.approx(7 / 9) and fg["fg_dice"] == pytest.approx(7 / 8)


def test_missing_object_f1():
    # Only A is found: TP 1, FP 0, FN 1 -> precision 1, recall 1/2, F1 2/(2+0+1) = 2/3;
    # DSB 1/2 at every threshold.
    result = evaluate_image(rles(GT_A, GT_B), rles(GT_A), [0.9])
    scores = detection_scores([result])
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5
    assert result.dsb_score() == 0.5


def test_f1_pools_counts_over_images():
    # Image 1: TP 2. Image 2: TP 0, FP 1, FN 1. Pooled: 2*2 / (2*2 + 1 + 1) = 2/3, whereas the
    # mean of the per-image F1s would be (1 + 0) / 2.
    perfect = evaluate_image(rles(GT_A, GT_B), rles(GT_A, GT_B), [0.9, 0.9])
    wrong = evaluate_image(rles(GT_A), rles(GT_B), [0.9])
    assert detection_scores([perfect, wrong])["f1"] == pytest.approx(2 / 3)
    assert dsb_score([perfect, wrong]) == 0.5


def test_overlaps_are_resolved_by_score():
    # P1 = A; P2 covers columns 2-5 of the same rows, so both claim columns 2-3.
    p1, p2 = GT_A, box_mask(0, 2, 4, 4)
    first_wins = [mask_util.decode(r) for r in remove_overlaps(rles(p1, p2), [0.9, 0.8])]
    np.testing.assert_array_equal(first_wins[0], p1)
    np.testing.assert_array_equal(first_wins[1], box_mask(0, 4, 4, 2))
    second_wins = [mask_util.decode(r) for r in remove_overlaps(rles(p1, p2), [0.8, 0.9])]
    np.testing.assert_array_equal(second_wins[0], box_mask(0, 0, 4, 2))
    np.testing.assert_array_equal(second_wins[1], p2)
    # Equal scores: the earlier prediction keeps the pixels.
    tie = [mask_util.decode(r) for r in remove_overlaps(rles(p1, p2), [0.5, 0.5])]
    np.testing.assert_array_equal(tie[0], p1)

    # Against GT A. P1 winning: P1 matches (IoU 1), P2's remaining 8 px are a FP -> 1/2.
    assert evaluate_image(rles(GT_A), rles(p1, p2), [0.9, 0.8]).dsb_score() == 0.5
    # P2 winning: P1 keeps 8 px, IoU 8/16 = 0.5, not > 0.5; P2 has IoU 8/24 -> TP 0 -> 0.
    assert evaluate_image(rles(GT_A), rles(p1, p2), [0.8, 0.9]).dsb_score() == 0.0


def test_prediction_swallowed_by_a_better_one_is_dropped():
    inner = box_mask(1, 1, 2, 2)
    result = evaluate_image(rles(GT_A), rles(GT_A, inner), [0.9, 0.3])
    assert result.num_pred == 1 and result.dsb_score() == 1.0


def test_empty_images():
    both_empty = evaluate_image([], [], [])
    assert both_empty.dsb_score() == 1.0 and both_empty.fg_iou == 1.0 and both_empty.fg_dice == 1.0
    nothing_found = evaluate_image(rles(GT_A), [], [])
    assert (
        nothing_found.dsb_score() == 0.0
        and nothing_found.fg_iou == 0.0
        and nothing_found.fg_dice == 0.0
    )
    nothing_there = evaluate_image([], rles(GT_A), [0.9])
    assert nothing_there.dsb_score() == 0.0 and nothing_there.counts(0.5) == (0, 1, 0)
    assert math.isnan(dsb_score([]))


def test_precision_and_recall_are_undefined_without_predictions_or_nuclei():
    # Nothing predicted: TP 0, FP 0, FN 1 -> precision 0/0 undefined, recall 0, F1 0.
    nothing_found = detection_scores([evaluate_image(rles(GT_A), [], [])])
    assert math.isnan(nothing_found["precision"])
    assert nothing_found["recall"] == 0.0 and nothing_found["f1"] == 0.0
    # Nothing to find: TP 0, FP 1, FN 0 -> precision 0, recall 0/0 undefined, F1 0.
    nothing_there = detection_scores([evaluate_image([], rles(GT_A), [0.9])])
    assert nothing_there["precision"] == 0.0 and nothing_there["f1"] == 0.0
    assert math.isnan(nothing_there["recall"])
    # Both empty: F1 keeps the DSB convention (1); precision and recall stay undefined.
    both_empty = detection_scores([evaluate_image([], [], [])])
    assert both_empty["f1"] == 1.0
    assert math.isnan(both_empty["precision"]) and math.isnan(both_empty["recall"])
    # Pooled over images, one image with predictions makes precision defined again.
    pooled = detection_scores(
        [evaluate_image(rles(GT_A), [], []), evaluate_image(rles(GT_A), rles(GT_A), [0.9])]
    )
    assert pooled == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)}


def test_pooled_and_per_image_foreground_differ():
    # Image 1: GT 16 px, prediction exact -> IoU 1, Dice 1.
    # Image 2: GT 16 px, prediction 8 px inside it -> IoU 8/16 = 1/2, Dice 16/24 = 2/3.
    # Per image: IoU 3/4, Dice 5/6. Pooled: intersection 24, GT 32, prediction 24 ->
    # IoU 24/32 = 3/4, Dice 48/56 = 6/7.
    exact = evaluate_image(rles(GT_A), rles(GT_A), [0.9])
    half = evaluate_image(rles(GT_A), rles(box_mask(0, 0, 4, 2)), [0.9])
    fg = foreground_scores([exact, half])
    assert fg["fg_iou"] == pytest.approx(3 / 4) and fg["fg_dice"] == pytest.approx(5 / 6)
    assert fg["fg_iou_pooled"] == pytest.approx(3 / 4) and fg["fg_dice_pooled"] == pytest.approx(
        6 / 7
    )


def test_matching_is_one_to_one_when_ground_truth_overlaps():
    # g1 (16 px) and g2 (12 px, inside g1's rows, columns 1-3) overlap; p (20 px) has IoU
    # 16/20 = 0.8 with g1 and 12/20 = 0.6 with g2: it may match only one, the better.
    g1, g2, p = box_mask(0, 0, 4, 4), box_mask(0, 1, 4, 3), box_mask(0, 0, 4, 5)
    np.testing.assert_allclose(match_instances(rles(g1, g2), rles(p)), [0.8])


def test_segmentation_formats_decode_to_the_same_mask():
    mask = box_mask(2, 3, 4, 5)
    compressed = encode_masks(mask[None])[0]
    as_text = {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")}
    polygon = [[3, 2, 8, 2, 8, 6, 3, 6]]  # x, y corners of the pixel edges of the box
    column_major = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.r_[0, column_major.astype(int), 0]))
    uncompressed = {"size": list(SHAPE), "counts": np.diff(np.r_[0, changes]).tolist()}
    for segmentation in (compressed, as_text, polygon, uncompressed):
        decoded = mask_util.decode(segmentation_to_rle(segmentation, *SHAPE))
        np.testing.assert_array_equal(decoded, mask, err_msg=str(segmentation))
    with pytest.raises(ValueError, match="size"):
        segmentation_to_rle(compressed, 10, 12)


def test_evaluate_image_rejects_masks_of_different_sizes():
    with pytest.raises(ValueError, match="different sizes"):
        evaluate_image(rles(GT_A), rles(box_mask(0, 0, 4, 4, shape=(10, 10))), [0.9])


def _grid_of_squares(rows, cols, side=3, gap=1):
    shape = (rows * (side + gap), cols * (side + gap))
    return [
        box_mask(r * (side + gap), c * (side + gap), side, side, shape)
        for r in range(rows)
        for c in range(cols)
    ]


def _coco_inputs(gt_masks, pred_masks, pred_scores):
    gt_rles, pred_rles = encode_masks(np.stack(gt_masks)), encode_masks(np.stack(pred_masks))
    height, width = gt_masks[0].shape
    images = [{"id": 1, "height": height, "width": width}]
    gt = [
        {
            "id": k,
            "image_id": 1,
            "category_id": 0,
            "iscrowd": 0,
            "segmentation": rle,
            "area": float(mask_util.area(rle)),
            "bbox": mask_util.toBbox(rle).tolist(),
        }
        for k, rle in enumerate(gt_rles, start=1)
    ]
    detections = [
        {
            "image_id": 1,
            "category_id": 0,
            "score": score,
            "segmentation": rle,
            "bbox": mask_util.toBbox(rle).tolist(),
        }
        for rle, score in zip(pred_rles, pred_scores)
    ]
    return images, gt, detections


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_ap_counts_more_than_100_objects_per_image(backend):
    # 150 nuclei in one image, all found exactly. With COCO's default 100 detections per
    # image recall stops at 100/150, so AP would be far below 100.
    squares = _grid_of_squares(10, 15)
    scores = np.linspace(0.99, 0.5, len(squares))
    images, gt, detections = _coco_inputs(squares, squares, scores)
    for iou_type in ("bbox", "segm"):
        full = coco_ap(images, gt, detections, iou_type, max_dets=500, backend=backend)
        assert full["AP"] == full["AP50"] == full["AP75"] == full["APs"] == 100.0
        assert math.isnan(full["APm"]) and math.isnan(full["APl"])  # no medium/large nuclei
        truncated = coco_ap(images, gt, detections, iou_type, max_dets=100, backend=backend)
        # Precision 1 up to recall 100/150: recall thresholds 0.00 .. 0.66, 67 of 101.
        assert truncated["AP"] == pytest.approx(100 * 67 / 101)


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_ap_half_recall_by_hand(backend):
    # One of two nuclei found: precision 1 at recall thresholds 0.00 .. 0.50 (51 of 101), 0 after.
    images, gt, detections = _coco_inputs([GT_A, GT_B], [GT_A], [0.9])
    assert coco_ap(images, gt, detections, "segm", backend=backend)["AP"] == pytest.approx(
        100 * 51 / 101
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_ap_without_detections_is_zero(backend):
    images, gt, _ = _coco_inputs([GT_A], [GT_A], [0.9])
    assert coco_ap(images, gt, [], "bbox", category_ids=[0], backend=backend)["AP"] == 0.0


def _reference_scores(gt_labels, pred_masks, pred_scores):
    """Kaggle-style brute force: paint predictions (higher score last), pixel IoU per pair."""
    pred_labels = np.zeros(gt_labels.shape, dtype=int)
    for k in np.argsort(pred_scores):
        pred_labels[pred_masks[k]] = k + 1
    gts = [gt_labels == g for g in np.unique(gt_labels) if g]
    preds = [pred_labels == p for p in np.unique(pred_labels) if p]
    iou = np.array([[(g & p).sum() / (g | p).sum() for p in preds] for g in gts]).reshape(
        len(gts), len(preds)
    )
    per_threshold = []
    for t in DSB_IOU_THRESHOLDS:
        matches = iou > t
        tp = np.sum(matches.sum(axis=1) == 1)
        fp = np.sum(matches.sum(axis=0) == 0)
        fn = np.sum(matches.sum(axis=1) == 0)
        per_threshold.append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
    gt_fg, pred_fg = gt_labels > 0, pred_labels > 0
    return np.mean(per_threshold), (gt_fg & pred_fg).sum() / (gt_fg | pred_fg).sum()


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_a_brute_force_reference_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    shape = (40, 40)
    gt_labels = np.zeros(shape, dtype=int)
    for label in range(1, 16):
        y, x = rng.integers(0, 34, 2)
        gt_labels[y : y + rng.integers(3, 7), x : x + rng.integers(3, 7)] = label
    gt_masks = [gt_labels == g for g in np.unique(gt_labels) if g]
    # Predictions: most nuclei found with a random shift, plus a few random boxes.
    pred_masks = [
        np.roll(m, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
        for m in gt_masks
        if rng.random() < 0.8
    ]
    pred_masks += [
        box_mask(*rng.integers(0, 34, 2), *rng.integers(3, 7, 2), shape=shape) for _ in range(4)
    ]
    pred_scores = rng.permutation(len(pred_masks)) / len(pred_masks)  # distinct scores
    result = evaluate_image(rles(*gt_masks), rles(*pred_masks), pred_scores)
    expected_dsb, expected_fg_iou = _reference_scores(gt_labels, pred_masks, pred_scores)
    assert result.dsb_score() == pytest.approx(expected_dsb, abs=1e-12)
    assert result.fg_iou == pytest.approx(expected_fg_iou, abs=1e-12)
