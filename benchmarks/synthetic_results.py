"""Synthetic instance-segmentation result sets for the evaluator benchmarks: elliptical nuclei as
COCO compressed RLEs, built from their column runs (no mask is ever drawn), so 300,000 masks
take seconds.

Per image: ``n_gt`` ground-truth ellipses; one detection per nucleus, shifted and resized a
little (so IoUs spread over COCO's 0.5..0.95 thresholds); the rest of the ``n_det`` detections
are false positives placed at random; scores are higher for true detections on average.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util


def ellipse_rle(cy: float, cx: float, ry: float, rx: float, height: int, width: int) -> dict:
    """Compressed COCO RLE (counts as str) of the filled ellipse, from its column runs."""
    xs = np.arange(max(0, int(np.ceil(cx - rx))), min(width - 1, int(np.floor(cx + rx))) + 1)
    half = ry * np.sqrt(np.clip(1.0 - ((xs - cx) / rx) ** 2, 0.0, None))
    y0 = np.clip(np.ceil(cy - half), 0, height - 1).astype(np.int64)
    y1 = np.clip(np.floor(cy + half), 0, height - 1).astype(np.int64)
    keep = y1 >= y0
    xs, y0, y1 = xs[keep], y0[keep], y1[keep]
    if len(xs) == 0:  # degenerate: one pixel at the centre
        xs = np.array([int(np.clip(round(cx), 0, width - 1))])
        y0 = y1 = np.array([int(np.clip(round(cy), 0, height - 1))])
    starts = xs * height + y0
    lengths = y1 - y0 + 1
    ends = starts + lengths
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = lengths
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = height * width - ends[-1]
    rle = mask_util.frPyObjects({"counts": counts.tolist(), "size": [height, width]}, height, width)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def nuclei_counts(n_images: int, rng: np.random.Generator, median: int = 27, maximum: int = 375) -> np.ndarray:
    """Nuclei per image, log-normal around Dsb2018's median (27), clipped to 1..maximum."""
    return np.clip(np.round(rng.lognormal(np.log(median), 1.0, n_images)), 1, maximum).astype(int)


def make_result_set(n_images: int, n_det: int, size: int = 512, n_gt: Optional[Sequence[int]] = None,
                    seed: int = 0) -> Dict[str, List[dict]]:
    """{"images", "annotations" (ground truth), "detections"} in COCO's format (segm as RLE)."""
    rng = np.random.default_rng(seed)
    if n_gt is None:
        n_gt = nuclei_counts(n_images, rng, maximum=min(375, n_det))
    images, annotations, detections = [], [], []
    for image_id, count in enumerate(n_gt, start=1):
        images.append({"id": image_id, "height": size, "width": size, "file_name": f"{image_id}.png"})
        cy, cx = rng.uniform(8, size - 8, (2, count))
        ry, rx = rng.uniform(3, 14, (2, count))
        for k in range(count):
            rle = ellipse_rle(cy[k], cx[k], ry[k], rx[k], size, size)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "segmentation": rle, "area": float(mask_util.area(rle)),
                                "bbox": mask_util.toBbox(rle).tolist()})
        n_true = min(count, n_det)
        jitter = rng.normal(0, 1.0, (2, n_true))
        scale = rng.uniform(0.8, 1.2, (2, n_true))
        scores = np.concatenate([rng.uniform(0.3, 1.0, n_true), rng.uniform(0.0, 0.7, n_det - n_true)])
        fy, fx = rng.uniform(8, size - 8, (2, n_det - n_true))
        fry, frx = rng.uniform(3, 14, (2, n_det - n_true))
        shapes = [(cy[k] + jitter[0, k], cx[k] + jitter[1, k], ry[k] * scale[0, k], rx[k] * scale[1, k])
                  for k in range(n_true)]
        shapes += list(zip(fy, fx, fry, frx))
        for (y, x, a, b), score in zip(shapes, scores):
            rle = ellipse_rle(y, x, a, b, size, size)
            detections.append({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(score)})
    return {"images": images, "annotations": annotations, "detections": detections}


def coco_dataset(result_set: Dict[str, List[dict]]) -> dict:
    """The ground truth as a COCO dataset dict."""
    return {"images": result_set["images"], "annotations": result_set["annotations"],
            "categories": [{"id": 1, "name": "nucleus"}]}
