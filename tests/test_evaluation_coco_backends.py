"""faster-coco-eval and pycocotools give the same COCO AP on crowded nuclei images, and the
evaluation falls back to pycocotools when faster-coco-eval is absent."""

import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest

from sharp_fpn.evaluation.metrics import (
    COCO_BACKENDS,
    coco_ap,
    encode_masks,
    faster_coco_eval,
    resolve_coco_backend,
    run_coco_eval,
    summarize_ap,
)

needs_faster = pytest.mark.skipif(
    faster_coco_eval is None, reason="faster-coco-eval is not installed"
)

# Per image: (height, width, nuclei). Dsb2018 holds up to 375 nuclei per image.
IMAGES = ((256, 256, 200), (256, 320, 300), (320, 320, 400))


def ellipse(shape, cy, cx, ry, rx, angle):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * cos + (yy - cy) * sin) / rx
    v = ((yy - cy) * cos - (xx - cx) * sin) / ry
    mask = u**2 + v**2 <= 1
    if not mask.any():  # a nucleus of at least one pixel
        mask[int(np.clip(cy, 0, shape[0] - 1)), int(np.clip(cx, 0, shape[1] - 1))] = True
    return mask


def crowded_images(seed=0):
    """COCO images, ground truth and detections as a trained Mask R-CNN gives them.

    Nuclei are rotated ellipses, mostly small (radii 2-9 px) with a few medium and large ones so
    that every COCO size range is scored, and two crowd regions. Most nuclei are found once,
    shifted and resized a little (IoUs spread over 0.5-0.95), some twice, some missed; false
    positives lie anywhere. Scores have two decimals, so many tie, as sorting must handle.
    """
    rng = np.random.default_rng(seed)
    images, gt, detections = [], [], []
    for image_id, (height, width, count) in enumerate(IMAGES, start=1):
        shape = (height, width)
        images.append({"id": image_id, "height": height, "width": width})
        radii = rng.uniform(2, 9, (count, 2))
        radii[:8] = rng.uniform(20, 30, (8, 2))  # medium: area 32^2 .. 96^2
        radii[8] = (60, 70)  # large
        centres = rng.uniform(0, 1, (count, 2)) * shape
        angles = rng.uniform(0, np.pi, count)
        for k in range(count):
            rle = encode_masks([ellipse(shape, *centres[k], *radii[k], angles[k])])[0]
            gt.append(
                {
                    "id": len(gt) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": int(k in (9, 10)),
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": mask_util.toBbox(rle).tolist(),
                }
            )
            for _ in range(rng.choice(3, p=(0.15, 0.75, 0.10))):  # missed, found, found twice
                found = ellipse(
                    shape,
                    *(centres[k] + rng.normal(0, 1.0, 2)),
                    *(radii[k] * rng.uniform(0.8, 1.25, 2)),
                    angles[k] + rng.normal(0, 0.2),
                )
                detections.append((image_id, found, rng.uniform(0.3, 1.0)))
        for _ in range(count // 5):
            junk = ellipse(shape, *(rng.uniform(0, 1, 2) * shape), *rng.uniform(2, 9, 2), 0)
            detections.append((image_id, junk, rng.uniform(0.0, 0.7)))
    results = []
    for image_id, mask, score in detections:
        rle = encode_masks([mask])[0]
        # The box head and the mask head disagree a little.
        bbox = mask_util.toBbox(rle) + rng.normal(0, 0.5, 4)
        results.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "score": round(score, 2),
                "segmentation": rle,
                "bbox": bbox.tolist(),
            }
        )
    return images, gt, results


@pytest.fixture(scope="module")
def crowded():
    return crowded_images()


def summary_stats(coco_eval):
    """COCO's 12 summary numbers at maxDets = [max_dets]: AP, AP50, AP75, APs/m/l, then AR,
    AR50, AR75, ARs/m/l (AR1 and AR10 do not exist with one maxDets); -1 where undefined."""
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]
    iou50, iou75 = (np.flatnonzero(np.isclose(coco_eval.params.iouThrs, t))[0] for t in (0.5, 0.75))

    def mean(values):
        defined = values[values > -1]
        return defined.mean() if defined.size else -1.0

    stats = []
    for array in (precision, recall):
        all_areas = array[..., 0, -1]
        stats += [mean(all_areas), mean(all_areas[iou50]), mean(all_areas[iou75])]
        stats += [mean(array[..., area, -1]) for area in (1, 2, 3)]
    return np.array(stats)


@needs_faster
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_both_backends_give_the_same_ap_with_hundreds_of_detections(crowded, iou_type):
    images, gt, detections = crowded
    per_image = np.bincount([d["image_id"] for d in detections])[1:]
    assert per_image.min() > 200 and per_image.max() <= 500  # all within maxDets = 500

    evals = {
        backend: run_coco_eval(images, gt, detections, iou_type, max_dets=500, backend=backend)
        for backend in COCO_BACKENDS
    }
    fast, reference = (evals[backend] for backend in COCO_BACKENDS)
    # pycocotools divides by tp + fp + 2.2e-16, faster-coco-eval by tp + fp: precisions differ
    # in the last bit where tp + fp is 1; 1e-12 leaves room for that and nothing else.
    for key in ("precision", "recall", "scores"):
        np.testing.assert_allclose(
            fast.eval[key], reference.eval[key], rtol=0, atol=1e-12, err_msg=key
        )
    fast_stats, reference_stats = summary_stats(fast), summary_stats(reference)
    np.testing.assert_allclose(fast_stats, reference_stats, rtol=0, atol=1e-12)
    assert np.all(fast_stats > 0) and np.all(fast_stats < 1)  # every stat defined, none trivial

    # What coco_ap reports, in percent.
    assert summarize_ap(fast) == pytest.approx(summarize_ap(reference), abs=1e-9)
    assert summarize_ap(fast)["AP"] == pytest.approx(100 * fast_stats[0], abs=1e-9)


@needs_faster
def test_faster_backend_keeps_500_detections_per_image(crowded):
    # Image 3 holds 400 nuclei: at COCO's default 100 detections recall stops near 1/4.
    images, gt, detections = crowded
    full = coco_ap(images, gt, detections, "segm", max_dets=500, backend="faster-coco-eval")
    truncated = coco_ap(images, gt, detections, "segm", max_dets=100, backend="faster-coco-eval")
    assert truncated["AP"] < full["AP"] / 2
    assert truncated == pytest.approx(
        coco_ap(images, gt, detections, "segm", max_dets=100, backend="pycocotools"), abs=1e-9
    )


def test_backend_names_are_checked():
    assert resolve_coco_backend() == ("faster-coco-eval" if faster_coco_eval else "pycocotools")
    assert resolve_coco_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="must be one of"):
        resolve_coco_backend("cocoapi")


def test_pycocotools_is_the_fallback_without_faster_coco_eval():
    # A fresh interpreter in which `import faster_coco_eval` fails, as where it is not installed.
    code = (
        "import sys; sys.modules['faster_coco_eval'] = None\n"
        "from sharp_fpn.evaluation import metrics\n"
        "print(metrics.resolve_coco_backend())\n"
        "try:\n"
        "    metrics.resolve_coco_backend('faster-coco-eval')\n"
        "except ValueError as error:\n"
        "    print(error)\n"
        "rle = metrics.encode_masks([metrics.np.ones((8, 8), bool)])[0]\n"
        "gt = [dict(id=1, image_id=1, category_id=1, iscrowd=0, segmentation=rle, area=64.0, bbox=[0, 0, 8, 8])]\n"
        "found = [dict(image_id=1, category_id=1, score=0.9, segmentation=rle, bbox=[0, 0, 8, 8])]\n"
        "print(round(metrics.coco_ap([dict(id=1, height=8, width=8)], gt, found, 'segm')['AP'], 9))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "pycocotools",
        "COCO backend 'faster-coco-eval' is not installed (pip install faster-coco-eval)",
        "100.0",
    ]
