"""Nuclei instance-segmentation metrics on COCO run-length encodings (RLEs).

Everything works on pycocotools RLEs: pairwise IoUs then cost a bounding-box test per pair
and a run merge for the few pairs that touch, instead of a full pixel pass per pair, which
matters with up to 500 nuclei per image.

Conventions (see also README):
- DSB 2018 score: per image, predicted masks are first made non-overlapping (the higher
  score wins each pixel; equal scores: the earlier prediction wins) and predictions left
  empty are dropped, as they would vanish from a submitted label image. For t in
  0.50, 0.55, ..., 0.95 a prediction and a ground-truth nucleus match when IoU > t (strict),
  one to one; the image scores mean_t TP/(TP+FP+FN), and the dataset the mean over images.
- An image with no ground truth and no prediction scores 1 (nothing to find, nothing
  wrongly found); the same convention gives F1, IoU and Dice of 1 when everything is empty.
- Foreground pixel IoU/Dice compare the union of ground-truth masks with the union of
  predicted masks: binary, per image (then averaged) and pooled over all pixels.
- Precision is NaN when nothing was predicted, recall when there was nothing to find.
- COCO AP is reported in percent, like Detectron2; areas with no ground truth give NaN. It is
  computed by faster-coco-eval when installed, else by pycocotools: the same numbers.
"""

import contextlib
import importlib.metadata
import io
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

try:  # the default COCO AP backend when installed; see resolve_coco_backend()
    import faster_coco_eval
except ImportError:
    faster_coco_eval = None

# COCO AP libraries, in order of preference (their PyPI names).
COCO_BACKENDS: Tuple[str, ...] = ("faster-coco-eval", "pycocotools")

# IoU thresholds of the Kaggle Data Science Bowl 2018 score: 0.50, 0.55, ..., 0.95.
DSB_IOU_THRESHOLDS: Tuple[float, ...] = tuple(np.round(0.5 + 0.05 * np.arange(10), 2).tolist())


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """One object's COCO segmentation (compressed or uncompressed RLE, or polygons) as one RLE."""
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            rle = {"size": list(segmentation["size"]), "counts": counts}
            if isinstance(counts, str):
                rle["counts"] = counts.encode("ascii")
    elif isinstance(segmentation, list) and segmentation:
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    else:
        raise ValueError(
            f"unsupported segmentation: {type(segmentation).__name__} {segmentation!r:.60}"
        )
    if list(rle["size"]) != [height, width]:
        raise ValueError(
            f"segmentation of size {rle['size']} in an image of size {[height, width]}"
        )
    return rle


def encode_masks(masks: Iterable[np.ndarray]) -> List[dict]:
    """RLEs of binary (H, W) masks (nonzero = inside), in order; one mask-sized copy at a time."""
    rles = []
    for mask in masks:
        binary = mask if mask.dtype == bool else mask != 0
        rles.append(mask_util.encode(np.asfortranarray(binary, dtype=np.uint8)[:, :, None])[0])
    return rles


def pairwise_iou(rles_a: Sequence[dict], rles_b: Sequence[dict]) -> np.ndarray:
    """(len(a), len(b)) IoU matrix; an empty side gives an empty matrix of the right shape."""
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)))
    return np.asarray(mask_util.iou(list(rles_a), list(rles_b), [0] * len(rles_b)))


def remove_overlaps(rles: Sequence[dict], scores: Sequence[float]) -> List[dict]:
    """Make masks disjoint: each pixel goes to the highest-scoring mask that covers it.

    Returned in input order. Equal scores: the earlier mask wins. Only masks that overlap a
    higher-ranked one are decoded and re-encoded; the others are returned as they are.
    """
    n = len(rles)
    if n < 2:
        return list(rles)
    rank_order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    touches = pairwise_iou(rles, rles) > 0
    resolved = list(rles)
    for rank, index in enumerate(rank_order):
        higher = rank_order[:rank]
        winners = higher[touches[index, higher]]
        if winners.size == 0:
            continue
        taken = mask_util.decode(mask_util.merge([rles[w] for w in winners]))
        own = mask_util.decode(rles[index]) & (1 - taken)
        resolved[index] = mask_util.encode(np.asfortranarray(own, dtype=np.uint8))
    return resolved


def match_instances(gt_rles: Sequence[dict], pred_rles: Sequence[dict]) -> np.ndarray:
    """IoUs of one-to-one matched (ground truth, prediction) pairs with IoU > 0.5.

    Pairs are taken greedily by decreasing IoU. For disjoint masks an IoU above 0.5 already
    pairs each object with at most one other; the greedy rule only matters where ground
    truth overlaps itself. Because pairs come in decreasing IoU, the matches at any stricter
    threshold t are exactly the returned pairs with IoU > t.
    """
    ious = pairwise_iou(gt_rles, pred_rles)
    gt_index, pred_index = np.nonzero(ious > 0.5)
    candidate_ious = ious[gt_index, pred_index]
    gt_taken, pred_taken, matched = set(), set(), []
    for k in np.argsort(-candidate_ious, kind="stable"):
        g, p = gt_index[k], pred_index[k]
        if g not in gt_taken and p not in pred_taken:
            gt_taken.add(g)
            pred_taken.add(p)
            matched.append(candidate_ious[k])
    return np.asarray(matched, dtype=np.float64)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, and 1.0 for 0 / 0: nothing to find and nothing found is perfect."""
    return 1.0 if denominator == 0 else float(numerator) / float(denominator)


@dataclass(frozen=True, eq=False)
class ImageResult:
    """What the nuclei metrics need from one image: object counts, matches and pixel areas."""

    num_gt: int
    num_pred: int
    matched_ious: np.ndarray = field(repr=False)  # one-to-one matches with IoU > 0.5
    fg_intersection: int  # pixels in both the ground-truth and the predicted foreground
    fg_gt_area: int
    fg_pred_area: int

    def true_positives(self, iou_threshold: float) -> int:
        return int(np.count_nonzero(self.matched_ious > iou_threshold))

    def counts(self, iou_threshold: float) -> Tuple[int, int, int]:
        """(TP, FP, FN) at one IoU threshold."""
        tp = self.true_positives(iou_threshold)
        return tp, self.num_pred - tp, self.num_gt - tp

    def dsb_score_at(self, iou_threshold: float) -> float:
        tp, fp, fn = self.counts(iou_threshold)
        return ratio(tp, tp + fp + fn)

    def dsb_score(self, thresholds: Sequence[float] = DSB_IOU_THRESHOLDS) -> float:
        return float(np.mean([self.dsb_score_at(t) for t in thresholds]))

    @property
    def fg_iou(self) -> float:
        return ratio(
            self.fg_intersection, self.fg_gt_area + self.fg_pred_area - self.fg_intersection
        )

    @property
    def fg_dice(self) -> float:
        return ratio(2 * self.fg_intersection, self.fg_gt_area + self.fg_pred_area)


def _union_area(rles: Sequence[dict]) -> Tuple[Optional[dict], int]:
    if not rles:
        return None, 0
    union = mask_util.merge(list(rles))
    return union, int(mask_util.area(union))


def evaluate_image(
    gt_rles: Sequence[dict], pred_rles: Sequence[dict], pred_scores: Sequence[float]
) -> ImageResult:
    """Nuclei metrics of one image from its ground-truth RLEs and its kept (thresholded) predictions."""
    sizes = {tuple(r["size"]) for r in list(gt_rles) + list(pred_rles)}
    if len(sizes) > 1:
        raise ValueError(f"masks of different sizes in one image: {sorted(sizes)}")
    disjoint = remove_overlaps(pred_rles, pred_scores)
    disjoint = [r for r in disjoint if mask_util.area(r) > 0]
    gt_union, gt_area = _union_area(gt_rles)
    pred_union, pred_area = _union_area(disjoint)
    intersection = 0
    if gt_union is not None and pred_union is not None:
        intersection = int(mask_util.area(mask_util.merge([gt_union, pred_union], intersect=True)))
    return ImageResult(
        num_gt=len(gt_rles),
        num_pred=len(disjoint),
        matched_ious=match_instances(gt_rles, disjoint),
        fg_intersection=intersection,
        fg_gt_area=gt_area,
        fg_pred_area=pred_area,
    )


def dsb_score(
    results: Sequence[ImageResult], thresholds: Sequence[float] = DSB_IOU_THRESHOLDS
) -> float:
    """The DSB 2018 score: mean over images of each image's mean over IoU thresholds."""
    return float(np.mean([r.dsb_score(thresholds) for r in results])) if results else float("nan")


def dsb_score_per_threshold(
    results: Sequence[ImageResult], thresholds: Sequence[float] = DSB_IOU_THRESHOLDS
) -> Dict[float, float]:
    """The image-averaged TP/(TP+FP+FN) at each threshold (their mean is the DSB score)."""
    return {t: float(np.mean([r.dsb_score_at(t) for r in results])) for t in thresholds}


def detection_scores(
    results: Sequence[ImageResult], iou_threshold: float = 0.5
) -> Dict[str, float]:
    """Precision, recall and F1 from TP/FP/FN pooled over images at one IoU threshold.

    Precision is NaN (undefined) when nothing was predicted, and recall when there was nothing
    to find. 0 would claim that every prediction was wrong (or every nucleus missed) where there
    was none, so a model that predicts nothing would read like one that predicts only junk, and
    1 would praise it; NaN is logged as n/a and written as null, like COCO's AP of an empty size
    range. F1 stays defined: 0 when nuclei were there and none was found, 1 when both sides are
    empty (the convention of the DSB score).
    """
    tp, fp, fn = (
        np.sum([r.counts(iou_threshold) for r in results], axis=0) if results else (0, 0, 0)
    )
    return {
        "precision": float(tp / (tp + fp)) if tp + fp else float("nan"),
        "recall": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def foreground_scores(results: Sequence[ImageResult]) -> Dict[str, float]:
    """Binary foreground pixel IoU and Dice: mean over images, and pooled over all pixels."""
    if not results:
        return dict.fromkeys(("fg_iou", "fg_dice", "fg_iou_pooled", "fg_dice_pooled"), float("nan"))
    intersection = sum(r.fg_intersection for r in results)
    gt_area = sum(r.fg_gt_area for r in results)
    pred_area = sum(r.fg_pred_area for r in results)
    return {
        "fg_iou": float(np.mean([r.fg_iou for r in results])),
        "fg_dice": float(np.mean([r.fg_dice for r in results])),
        "fg_iou_pooled": ratio(intersection, gt_area + pred_area - intersection),
        "fg_dice_pooled": ratio(2 * intersection, gt_area + pred_area),
    }


def resolve_coco_backend(name: Optional[str] = None) -> str:
    """The library that computes COCO AP: ``name`` if given (checked), else faster-coco-eval when
    it is installed, else pycocotools.

    faster-coco-eval's C++ COCOeval fills the same precision and recall arrays as pycocotools
    (tested with hundreds of detections per image) about 10x faster at 500 detections per image
    (benchmarks/RESULTS.md#how-fast-are-the-converter-and-the-evaluator). pycocotools, which the masks need anyway, is the
    fallback; faster-coco-eval needs Python 3.10+.
    """
    if name is None:
        return COCO_BACKENDS[0] if faster_coco_eval is not None else COCO_BACKENDS[1]
    if name not in COCO_BACKENDS:
        raise ValueError(f"COCO backend must be one of {COCO_BACKENDS}, got {name!r}")
    if name == "faster-coco-eval" and faster_coco_eval is None:
        raise ValueError(
            "COCO backend 'faster-coco-eval' is not installed (pip install faster-coco-eval)"
        )
    return name


def coco_backend_version(name: str) -> str:
    """The installed version of a COCO backend, for the record in metrics.json."""
    return importlib.metadata.version(name)


def _coco_api(images: List[dict], categories: List[dict], annotations: List[dict], backend: str):
    """An in-memory COCO index (no JSON file, so nothing stale can be cached).

    The annotations are copied: both libraries write into them (``ignore``, decoded RLEs), and
    the same ground truth serves the bbox and the segm evaluation.
    """
    dataset = {
        "images": images,
        "categories": categories,
        "annotations": [dict(a) for a in annotations],
    }
    if backend == "faster-coco-eval":
        return faster_coco_eval.COCO(dataset)
    api = COCO()
    api.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    return api


def _detections_for(iou_type: str, detections: Sequence[dict]) -> List[dict]:
    """Detections as COCO annotations for one IoU type, with the area COCO's size ranges use.

    Mask AP must see mask areas and box AP box areas, so each type gets its own copy.
    """
    annotations = []
    for ann_id, det in enumerate(detections, start=1):
        ann = {
            "id": ann_id,
            "image_id": det["image_id"],
            "category_id": det["category_id"],
            "score": float(det["score"]),
            "iscrowd": 0,
        }
        if iou_type == "segm":
            ann["segmentation"] = det["segmentation"]
            ann["area"] = float(mask_util.area(det["segmentation"]))
            ann["bbox"] = mask_util.toBbox(det["segmentation"]).tolist()
        else:
            ann["bbox"] = [float(v) for v in det["bbox"]]
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        annotations.append(ann)
    return annotations


def run_coco_eval(
    images: List[dict],
    gt_annotations: List[dict],
    detections: Sequence[dict],
    iou_type: str,
    max_dets: int = 500,
    category_ids: Optional[Sequence[int]] = None,
    backend: Optional[str] = None,
):
    """COCOeval of ``backend`` (default: :func:`resolve_coco_backend`) after evaluate() and
    accumulate(), with maxDets = [``max_dets``] only.

    Its ``eval["precision"]`` is [IoU threshold, recall threshold, category, area range, 1] and
    ``eval["recall"]`` [IoU threshold, category, area range, 1], -1 where undefined. Arguments
    as for :func:`coco_ap`.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    backend = resolve_coco_backend(backend)
    if category_ids is None:
        category_ids = sorted(
            {a["category_id"] for a in gt_annotations} | {d["category_id"] for d in detections}
        )
    categories = [{"id": c, "name": str(c)} for c in category_ids]
    coco_gt = _coco_api(images, categories, gt_annotations, backend)
    coco_dt = _coco_api(images, categories, _detections_for(iou_type, detections), backend)
    if backend == "faster-coco-eval":
        # As many IoU threads as torch may use: engine.set_cpu_threads and OMP_NUM_THREADS decide.
        coco_eval = faster_coco_eval.COCOeval_faster(
            coco_gt,
            coco_dt,
            iou_type,
            print_function=lambda *args, **kwargs: None,
            rle_iou_max_workers=max(1, torch.get_num_threads()),
        )
    else:
        coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    coco_eval.params.imgIds = [image["id"] for image in images]
    coco_eval.params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _mean_precision(coco_eval, iou_threshold: Optional[float] = None, area: str = "all") -> float:
    """COCO's AP summary at the largest maxDets, in percent; NaN where no ground truth exists."""
    params = coco_eval.params
    # precision: [IoU threshold, recall threshold, category, area range, maxDets], -1 = undefined
    precision = np.asarray(coco_eval.eval["precision"])[:, :, :, params.areaRngLbl.index(area), -1]
    if iou_threshold is not None:
        precision = precision[np.isclose(params.iouThrs, iou_threshold)]
    defined = precision[precision > -1]
    return float(defined.mean() * 100) if defined.size else float("nan")


def coco_ap(
    images: List[dict],
    gt_annotations: List[dict],
    detections: Sequence[dict],
    iou_type: str,
    max_dets: int = 500,
    category_ids: Optional[Sequence[int]] = None,
    backend: Optional[str] = None,
) -> Dict[str, float]:
    """COCO AP, AP50, AP75, APs, APm, APl (percent) with up to ``max_dets`` detections per image.

    ``images``: [{"id", "height", "width"}]; ``gt_annotations``: COCO annotations with
    "bbox" (XYWH), "segmentation" (RLE), "area", "category_id", "iscrowd" and unique
    "id" >= 1; ``detections``: [{"image_id", "category_id", "score", "bbox" (XYWH) or
    "segmentation" (RLE)}]; ``backend``: "faster-coco-eval" or "pycocotools" (default:
    :func:`resolve_coco_backend`). Only the largest maxDets is evaluated, and the summary is
    read from the precision array: pycocotools' own summarize() hard-codes maxDets=100 for AP
    and gives -1 for any other value.
    """
    return summarize_ap(
        run_coco_eval(images, gt_annotations, detections, iou_type, max_dets, category_ids, backend)
    )


def summarize_ap(coco_eval) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (percent) of an evaluated COCOeval of either backend, at its
    largest maxDets; NaN where no ground truth exists."""
    return {
        "AP": _mean_precision(coco_eval),
        "AP50": _mean_precision(coco_eval, iou_threshold=0.5),
        "AP75": _mean_precision(coco_eval, iou_threshold=0.75),
        "APs": _mean_precision(coco_eval, area="small"),
        "APm": _mean_precision(coco_eval, area="medium"),
        "APl": _mean_precision(coco_eval, area="large"),
    }
