"""Nuclei metrics (DSB 2018 score, F1, foreground pixel IoU/Dice, COCO AP with many
detections per image, by faster-coco-eval or pycocotools) and the Detectron2 evaluator that
reports them."""

from .evaluator import NucleiEvaluator
from .metrics import (
    DSB_IOU_THRESHOLDS,
    ImageResult,
    coco_ap,
    detection_scores,
    dsb_score,
    dsb_score_per_threshold,
    evaluate_image,
    foreground_scores,
    resolve_coco_backend,
)

__all__ = [
    "NucleiEvaluator",
    "DSB_IOU_THRESHOLDS",
    "ImageResult",
    "coco_ap",
    "detection_scores",
    "dsb_score",
    "dsb_score_per_threshold",
    "evaluate_image",
    "foreground_scores",
    "resolve_coco_backend",
]
