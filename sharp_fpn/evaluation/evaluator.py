"""A Detectron2 DatasetEvaluator for nuclei: COCO AP with enough detections, the DSB 2018 score,
F1 and foreground pixel IoU/Dice, all from one pass over the model's outputs."""

import itertools
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from ..data.coco_export import write_json_files_atomic
from .metrics import (
    ImageResult,
    coco_ap,
    coco_backend_version,
    detection_scores,
    dsb_score,
    dsb_score_per_threshold,
    encode_masks,
    evaluate_image,
    foreground_scores,
    resolve_coco_backend,
    segmentation_to_rle,
)

logger = logging.getLogger(__name__)

# Keys of a per-image row of metrics.json holding its (TP, FP, FN) at IoU 0.5.
PER_IMAGE_COUNTS = ("tp@0.5", "fp@0.5", "fn@0.5")


@dataclass
class _ImageRecord:
    """What process() keeps per image: compact COCO detections and the nuclei counts."""

    image_id: object
    detections: List[dict]  # category_id, score, bbox (XYWH), segmentation (RLE)
    result: ImageResult


class NucleiEvaluator(DatasetEvaluator):
    """COCO bbox/segm AP (maxDets = ``max_dets``), the DSB 2018 score, F1@0.5 and foreground
    pixel IoU/Dice for an instance segmentation model on a registered dataset.

    COCO AP ranks all of an image's ``max_dets`` best detections. The other metrics need a hard
    decision, so they keep only detections with score >= ``score_thresh``. Nuclei metrics are
    class-agnostic and skip crowd annotations. Ground truth comes from the dataset's dicts
    (COCO RLE or polygon segmentations), so no COCO JSON file is needed or cached.
    ``coco_backend`` names the COCO AP library (default: faster-coco-eval when installed, else
    pycocotools; the same numbers, see :func:`~.metrics.resolve_coco_backend`).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        max_dets: int = 500,
        distributed: bool = True,
        score_thresh: float = 0.5,
        coco_backend: Optional[str] = None,
    ):
        if max_dets < 1:
            raise ValueError(f"max_dets must be >= 1, got {max_dets}")
        self._coco_backend = resolve_coco_backend(coco_backend)
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._max_dets = max_dets
        self._distributed = distributed
        self._score_thresh = score_thresh
        self._dataset = {d["image_id"]: d for d in DatasetCatalog.get(dataset_name)}
        thing_classes = MetadataCatalog.get(dataset_name).get("thing_classes")
        self._category_ids = list(range(len(thing_classes))) if thing_classes else None
        self._records: List[_ImageRecord] = []

    def reset(self):
        self._records = []

    def process(self, inputs, outputs):
        for model_input, output in zip(inputs, outputs):
            image_id = model_input["image_id"]
            if image_id not in self._dataset:
                raise KeyError(f"image_id {image_id!r} is not in dataset '{self._dataset_name}'")
            try:
                record = self._evaluate_one(self._dataset[image_id], output["instances"].to("cpu"))
            except ValueError as error:
                raise ValueError(
                    f"dataset '{self._dataset_name}', image {image_id!r}: {error}"
                ) from error
            self._records.append(record)

    def _ground_truth_rles(self, record: dict) -> List[dict]:
        """Non-crowd ground-truth masks of one image, as RLEs."""
        rles = []
        for annotation in record.get("annotations", []):
            if annotation.get("iscrowd", 0):
                continue
            if "segmentation" not in annotation:
                raise ValueError("an annotation has no 'segmentation'; nuclei metrics need masks")
            rles.append(
                segmentation_to_rle(annotation["segmentation"], record["height"], record["width"])
            )
        return rles

    def _evaluate_one(self, record: dict, instances) -> _ImageRecord:
        if not instances.has("pred_masks"):
            raise ValueError(
                "outputs have no pred_masks: NucleiEvaluator needs an instance segmentation model"
            )
        masks = instances.pred_masks
        if tuple(masks.shape[1:]) != (record["height"], record["width"]):
            raise ValueError(
                f"predicted masks are {tuple(masks.shape[1:])}, the image is {(record['height'], record['width'])}"
            )
        masks = (masks if masks.dtype == torch.bool else masks >= 0.5).numpy()
        scores = instances.scores.numpy().astype(np.float64)
        best = np.argsort(-scores, kind="stable")[: self._max_dets]
        rles = encode_masks(masks[k] for k in best)
        scores = scores[best]
        boxes = BoxMode.convert(
            instances.pred_boxes.tensor.numpy()[best], BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
        )
        classes = (
            instances.pred_classes.numpy()[best]
            if instances.has("pred_classes")
            else np.zeros(len(best), int)
        )
        detections = [
            {"category_id": int(c), "score": float(s), "bbox": b.tolist(), "segmentation": rle}
            for c, s, b, rle in zip(classes, scores, boxes, rles)
        ]
        kept = np.flatnonzero(scores >= self._score_thresh)
        result = evaluate_image(
            self._ground_truth_rles(record), [rles[k] for k in kept], scores[kept]
        )
        return _ImageRecord(record["image_id"], detections, result)

    def _gathered_records(self) -> Optional[List[_ImageRecord]]:
        """All processes' records on the main process (None elsewhere), one per image."""
        records = self._records
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(records, dst=0)))
            if not comm.is_main_process():
                return None
        unique = {}
        for record in records:
            unique.setdefault(record.image_id, record)
        if len(unique) < len(records):
            logger.warning(
                "%d images were processed more than once; each counts once",
                len(records) - len(unique),
            )
        return list(unique.values())

    def _coco_inputs(self, records: List[_ImageRecord]):
        """COCO images, ground truth and detections, with image ids renumbered 1..n for pycocotools."""
        images, annotations, detections = [], [], []
        for coco_id, record in enumerate(records, start=1):
            image = self._dataset[record.image_id]
            height, width = image["height"], image["width"]
            images.append({"id": coco_id, "height": height, "width": width})
            for annotation in image.get("annotations", []):
                rle = segmentation_to_rle(annotation["segmentation"], height, width)
                if "bbox" in annotation:
                    mode = BoxMode(annotation.get("bbox_mode", BoxMode.XYWH_ABS))
                    bbox = BoxMode.convert(list(annotation["bbox"]), mode, BoxMode.XYWH_ABS)
                else:
                    bbox = mask_util.toBbox(rle).tolist()
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": coco_id,
                        "category_id": annotation.get("category_id", 0),
                        "iscrowd": int(annotation.get("iscrowd", 0)),
                        "segmentation": rle,
                        "area": float(mask_util.area(rle)),
                        "bbox": [float(v) for v in bbox],
                    }
                )
            detections.extend(dict(detection, image_id=coco_id) for detection in record.detections)
        return images, annotations, detections

    def evaluate(self):
        records = self._gathered_records()
        if records is None:
            return {}
        if not records:
            logger.warning("NucleiEvaluator on '%s' received no predictions", self._dataset_name)
            return {}
        if len(records) < len(self._dataset):
            logger.warning(
                "evaluating %d of the %d images of '%s'",
                len(records),
                len(self._dataset),
                self._dataset_name,
            )

        results = OrderedDict()
        images, annotations, detections = self._coco_inputs(records)
        for iou_type in ("bbox", "segm"):
            results[iou_type] = coco_ap(
                images,
                annotations,
                detections,
                iou_type,
                self._max_dets,
                self._category_ids,
                self._coco_backend,
            )
        image_results = [record.result for record in records]
        at_half = detection_scores(image_results, iou_threshold=0.5)
        results["nuclei"] = {
            "dsb_score": dsb_score(image_results),
            "f1@0.5": at_half["f1"],
            "precision@0.5": at_half["precision"],
            "recall@0.5": at_half["recall"],
            **foreground_scores(image_results),
        }
        self._log(results, len(records))
        if self._output_dir:
            self._write_metrics(results, records)
        return results

    def _log(self, results: Dict[str, Dict[str, float]], num_images: int):
        backend = f"{self._coco_backend} {coco_backend_version(self._coco_backend)}"
        if resolve_coco_backend() == "pycocotools":
            backend += " (faster-coco-eval is not installed)"
        for iou_type in ("bbox", "segm"):
            logger.info(
                "%s on '%s' (%d images): COCO %s AP in %%, up to %d detections per image, by %s\n%s",
                type(self).__name__,
                self._dataset_name,
                num_images,
                iou_type,
                self._max_dets,
                backend,
                _table(results[iou_type]),
            )
        logger.info(
            "Nuclei metrics (detections with score >= %g): dsb_score = DSB 2018 score, f1/precision/recall "
            "pooled at IoU 0.5, fg_* = binary foreground pixel IoU/Dice, mean of images and pooled\n%s",
            self._score_thresh,
            _table(results["nuclei"]),
        )

    def _write_metrics(self, results: Dict[str, Dict[str, float]], records: List[_ImageRecord]):
        """metrics.json: the results plus per-threshold and per-image detail, written atomically.

        Each per-image row carries its TP/FP/FN at IoU 0.5, so that F1@0.5 can be pooled over any
        subset of images (by image kind) and compared image by image, as the DSB score is.
        """
        image_results = [record.result for record in records]
        report = {
            "dataset": self._dataset_name,
            "num_images": len(records),
            "max_dets": self._max_dets,
            "score_thresh": self._score_thresh,
            "coco_backend": self._coco_backend,
            "coco_backend_version": coco_backend_version(self._coco_backend),
            **results,
            "dsb_score_per_threshold": {
                f"{t:.2f}": s for t, s in dsb_score_per_threshold(image_results).items()
            },
            "per_image": [
                {
                    "image_id": record.image_id,
                    "num_gt": record.result.num_gt,
                    "num_pred": record.result.num_pred,
                    "dsb_score": record.result.dsb_score(),
                    "fg_iou": record.result.fg_iou,
                    "fg_dice": record.result.fg_dice,
                    **dict(zip(PER_IMAGE_COUNTS, record.result.counts(0.5))),
                }
                for record in records
            ],
        }
        path = Path(self._output_dir) / "metrics.json"
        write_json_files_atomic({path: _json_safe(report)})  # mode 0666 less the umask
        logger.info("Nuclei evaluation written to %s", path)


def _table(metrics: Dict[str, float]) -> str:
    """Detectron2's one-row table, with undefined (NaN) values shown as n/a."""
    return create_small_table(
        {k: "n/a" if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}
    )


def _json_safe(value):
    """NaN (undefined, e.g. AP of an empty size range) as null, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
