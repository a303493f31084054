"""From detections to an instance label image, and the per-object table.

The label image is the one description of the objects every output format is derived from:
label k > 0 is object k, 0 is background. Objects are painted by decreasing score, each only on
pixels no higher-scoring object has taken (equal scores: the earlier detection wins, as in
:func:`sharp_fpn.evaluation.metrics.remove_overlaps`), and each keeps only the largest
8-connected part of what is left, so that an object is one region with one outline. An object
left with no pixel is dropped; labels are numbered 1..n without gaps, in decreasing score.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
import torch
from detectron2.layers.mask_ops import _do_paste_mask
from skimage.measure import regionprops_table

from .tiling import Detections

UINT16_MAX_OBJECTS = np.iinfo(np.uint16).max

# Per-object table columns, in order. Coordinates are pixel indices (row, column): the centroid
# of the single pixel (0, 0) is (0, 0); bbox max_row/max_col are exclusive, as in scikit-image.
TABLE_COLUMNS = (
    "label", "score", "area", "centroid_y", "centroid_x",
    "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col", "mean_intensity",
)


def label_dtype(num_objects: int) -> np.dtype:
    """uint16 up to 65,535 objects, uint32 beyond."""
    return np.dtype(np.uint16 if num_objects <= UINT16_MAX_OBJECTS else np.uint32)


def paste_mask(mask: np.ndarray, box: np.ndarray, height: int, width: int, threshold: float = 0.5):
    """Paste one MxM mask-probability map into its box of an HxW image, as Detectron2's
    ``paste_masks_in_image`` does (bilinear, pixel centres, ``>= threshold``), but only over
    the box: returns (bool array, (top, left)) of the box's region."""
    pasted, (rows, cols) = _do_paste_mask(
        torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None],
        torch.from_numpy(np.asarray(box, dtype=np.float32))[None],
        height, width, skip_empty=True,
    )
    return (pasted[0] >= threshold).numpy(), (int(rows.start), int(cols.start))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a boolean mask (the first one on equal areas)."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return components == biggest


def clip_boxes(detections: Detections, height: int, width: int) -> Detections:
    """Clip boxes to the image and drop the empty ones, as Detectron2's postprocessing does."""
    boxes = detections.boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    clipped = Detections(boxes, detections.scores, detections.masks)
    return clipped.take((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))


def paint_labels(detections: Detections, height: int, width: int, mask_threshold: float = 0.5):
    """Non-overlapping instance labels from detections in image coordinates (module doc).

    Returns (labels HxW uint16, or uint32 beyond 65,535 objects; scores (n,) float32 where
    ``scores[k - 1]`` belongs to label k).
    """
    detections = clip_boxes(detections, height, width)
    labels = np.zeros((height, width), dtype=label_dtype(len(detections)))
    scores = []
    for index in np.argsort(-detections.scores, kind="stable"):
        mask, (top, left) = paste_mask(detections.masks[index], detections.boxes[index], height, width, mask_threshold)
        region = labels[top : top + mask.shape[0], left : left + mask.shape[1]]
        visible = mask & (region == 0)
        if not visible.any():
            continue
        scores.append(detections.scores[index])
        region[largest_component(visible)] = len(scores)
    if labels.dtype != label_dtype(len(scores)):
        labels = labels.astype(label_dtype(len(scores)))
    return labels, np.asarray(scores, dtype=np.float32)


def object_table(labels: np.ndarray, scores: np.ndarray, intensity: Optional[np.ndarray] = None) -> list[dict]:
    """One row per object, in label order, with the :data:`TABLE_COLUMNS` (scikit-image's
    ``regionprops_table``); ``mean_intensity`` is over ``intensity`` (HxW), None without it."""
    properties = ["label", "area", "centroid", "bbox"] + (["intensity_mean"] if intensity is not None else [])
    props = regionprops_table(labels, intensity_image=intensity, properties=properties)
    if len(props["label"]) != len(scores):
        raise ValueError(f"{len(props['label'])} labelled objects but {len(scores)} scores")
    rows = []
    for i, label in enumerate(props["label"]):
        rows.append({
            "label": int(label),
            "score": float(scores[label - 1]),
            "area": int(props["area"][i]),
            "centroid_y": float(props["centroid-0"][i]),
            "centroid_x": float(props["centroid-1"][i]),
            "bbox_min_row": int(props["bbox-0"][i]),
            "bbox_min_col": int(props["bbox-1"][i]),
            "bbox_max_row": int(props["bbox-2"][i]),
            "bbox_max_col": int(props["bbox-3"][i]),
            "mean_intensity": float(props["intensity_mean"][i]) if intensity is not None else None,
        })
    return rows
